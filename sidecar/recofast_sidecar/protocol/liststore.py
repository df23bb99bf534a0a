"""The list store: one writer and many readers of the LMDB file the engine writes and the
sidecar serves (records in :mod:`recofast_sidecar.protocol.codec`).

One writer (:class:`ListWriter`) at a time: it holds an exclusive ``flock`` on
``writer.lock`` in the folder (a second one raises :class:`StoreLockedError`). The writer
grows the LMDB map as the store fills: before a commit when the commit may not fit, after
it when more than 3/4 of the map is used, and on ``MDB_MAP_FULL`` (the transaction is
aborted, the map doubled, the commit redone), by doubling up to ``max_map_size``. A commit
that does not fit even then raises :class:`StoreFullError` with nothing of it written.
Readers (:class:`ListReader`, in this or other processes) follow the growth: a read that
finds the map grown by another process (``MDB_MAP_RESIZED``) adopts the new size and is
retried. Within one process, a map is only remapped while no read transaction of that
environment is open (readers and the writer share a guard), so no reader ever holds a
"""

from __future__ import annotations

import fcntl
import functools
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import lmdb

from recofast_sidecar.protocol.codec import (
    AFFINITY_PREFIX,
    FRESH_KEY,
    CodecError,
    Commit,
    ItemRecord,
    ListRecord,
    ListView,
    MetaRecord,
    affinity_key,
    decode_item,
    decode_list,
    decode_meta,
    encode_item,
    encode_list,
    encode_meta,
    segment_key,
)
from recofast_sidecar.protocol.names import (
    DB_CONTEXT,
    DB_ITEMS,
    DB_META,
    DB_SEGMENTS,
    DB_SIMILAR,
    DB_USER_LISTS,
    LMDB_DBS,
    META_RECORD_KEY,
    OPTIONAL_DBS,
)

log = logging.getLogger("recofast.store")


LOCK_FILE = "writer.lock"
"""The file in the store's folder a writer holds an exclusive ``flock`` on."""
DEFAULT_MAX_MAP_SIZE = 1 << 36
"""64 GiB: how far a writer grows the map unless told otherwise (address space, not disk: the
file grows with the pages in use)."""



class StoreError(CodecError):
    """The list store cannot be written as asked (see the subclasses)."""


class StoreFullError(StoreError):
    """A commit does not fit in the store even at ``max_map_size``. Nothing of it was written:
    the writer can stop taking work, keep it, and commit it again once there is room (a
    larger ``max_map_size``, or records deleted)."""

    def __init__(self, path: str, needed: int, map_size: int, max_map_size: int) -> None:
        super().__init__(
            f"the list store {path} is full: a commit of about {needed:,} bytes does not fit in "
            f"{map_size:,} bytes (max_map_size {max_map_size:,}); nothing of it was written"
        )
        self.path, self.needed, self.map_size, self.max_map_size = path, needed, map_size, max_map_size


class StoreLockedError(StoreError):
    """Another :class:`ListWriter` (in this or another process) holds the store's lock file."""

    def __init__(self, path: str, holder: str) -> None:
        super().__init__(f"another writer holds the list store {path} ({LOCK_FILE}{holder}); one writer per store")
        self.path = path


# -- the store --------------------------------------------------------------------------------


def _open_env(path: str | os.PathLike[str], readonly: bool, map_size: int, **flags: bool) -> lmdb.Environment:
    return lmdb.open(
        os.fspath(path),
        map_size=map_size,
        max_dbs=len(LMDB_DBS) + 2,
        subdir=True,
        readonly=readonly,
        create=not readonly,
        lock=True,
        **flags,
    )


class _MapGuard:
    """Shared by the writer and the readers of one environment in one process: read
    transactions are *entered* (any number, from any thread, nested in one thread), and the
    map is remapped (``set_mapsize``) only *exclusively*, once no transaction is open. A
    remap while a reader holds a buffer into the map would leave it pointing at nothing."""

    __slots__ = ("_cond", "_active", "_remapping", "_local")

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._active = 0
        self._remapping = False
        self._local = threading.local()

    def depth(self) -> int:
        return getattr(self._local, "depth", 0)

    def enter(self) -> None:
        d = getattr(self._local, "depth", 0)
        if d == 0:
            with self._cond:
                while self._remapping:
                    self._cond.wait()
                self._active += 1
        self._local.depth = d + 1

    def exit(self) -> None:
        d = self._local.depth - 1
        self._local.depth = d
        if d == 0:
            with self._cond:
                self._active -= 1
                if self._active == 0 and self._remapping:
                    self._cond.notify_all()

    def remap(self, fn: Callable[[], None]) -> None:
        """Runs ``fn`` once no read transaction is open (new ones wait until it is done)."""
        if self.depth():
            raise RuntimeError("cannot remap the LMDB map while this thread holds a read transaction")
        with self._cond:
            while self._remapping:
                self._cond.wait()
            self._remapping = True
            try:
                while self._active:
                    self._cond.wait()
                fn()
            finally:
                self._remapping = False
                self._cond.notify_all()


def _lock_store(path: str) -> int:
    """Takes the exclusive, non-blocking writer lock of a store folder; returns its fd."""
    lock_path = os.path.join(path, LOCK_FILE)
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        try:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip()
        except OSError:
            holder = ""
        os.close(fd)
        raise StoreLockedError(path, f", held by pid {holder}" if holder.isdigit() else "") from None
    except BaseException:
        os.close(fd)
        raise
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


Op = tuple[bytes, bytes, "bytes | None"]
"""A raw write: ``(database name, key, value)``; value None deletes the key."""


class ListWriter:
    """The one writer of a list store (the engine, or a ``--sync`` mirror). Each
    :meth:`commit` is one transaction. Holds the folder's ``writer.lock`` until closed
    (:class:`StoreLockedError` when another writer has it).

    ``map_size`` is the initial LMDB map (an existing store keeps a larger one); the map is
    doubled as the store fills, up to ``max_map_size`` (default 64 GiB, never below
    ``map_size``); past it a commit raises :class:`StoreFullError` and writes nothing.
    ``sync=True, metasync=False`` (the default) keeps every commit atomic and consistent;
    a machine crash may undo the last commit, which the engine redoes from the stream.

    >>> import tempfile
    >>> with ListWriter(tempfile.mkdtemp(), map_size=1 << 20, max_map_size=1 << 22) as w:
    ...     w.commit(Commit(user_lists={f"u{i}": ListRecord(["a" * 200] * 20, [0.0] * 20) for i in range(500)}))
    ...     w.map_size > 1 << 20, w.reader().user_list("u7").items[0][:3]
    (True, 'aaa')
    """

    GROW_AT = 0.75
    """After a commit, the map is doubled when more than this share of it is in use."""
    HEADROOM = 2.0
    """Before a commit, the map is grown when the bytes in use plus this many times the
    commit's payload (LMDB copies the pages it changes) would not fit."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        map_size: int = 1 << 30,
        sync: bool = True,
        metasync: bool = False,
        max_map_size: int | None = None,
    ) -> None:
        self.path = os.fspath(path)
        os.makedirs(self.path, exist_ok=True)
        self._lock_fd: int | None = _lock_store(self.path)
        try:
            self.env = _open_env(self.path, False, map_size, sync=sync, metasync=metasync)
            self._dbs = {name: self.env.open_db(name) for name in LMDB_DBS}
        except BaseException:
            self._unlock()
            raise
        self.max_map_size = max(DEFAULT_MAX_MAP_SIZE if max_map_size is None else max_map_size, map_size)
        self._psize = self.env.stat()["psize"]
        self._guard = _MapGuard()
        self._write = threading.Lock()
        self.growths = 0
        """How many times this writer has grown the map."""

    # -- sizes

    @property
    def map_size(self) -> int:
        """The current LMDB map size in bytes."""
        return int(self.env.info()["map_size"])

    def used_size(self) -> int:
        """Bytes of the map in use (up to the last page ever allocated, free pages included)."""
        return (int(self.env.info()["last_pgno"]) + 1) * self._psize

    def _grow(self, target: int) -> bool:
        """Doubles the map until it holds ``target`` bytes (at most ``max_map_size``)."""
        cur = self.map_size
        new = cur
        while new < target and new < self.max_map_size:
            new *= 2
        new = min(new, self.max_map_size)
        if new <= cur:
            return False
        self._guard.remap(lambda: self.env.set_mapsize(new))
        self.growths += 1
        log.info("list store %s: map grown from %d to %d MiB", self.path, cur >> 20, new >> 20)
        return True

    # -- writing

    def commit(self, c: Commit) -> None:
        """Writes a commit in one transaction (growing the map as needed); raises
        :class:`StoreFullError`, with nothing written, when it does not fit."""
        self.apply(self._ops(c))

    def _ops(self, c: Commit) -> list[Op]:
        ops: list[Op] = []
        add = ops.append
        for user, rec in c.user_lists.items():
            add((DB_USER_LISTS, user.encode(), encode_list(rec)))
        for user in c.delete_users:
            add((DB_USER_LISTS, user.encode(), None))
        for item, irec in c.items.items():
            add((DB_ITEMS, item.encode(), encode_item(irec)))
        for key, rec in c.segments.items():
            add((DB_SEGMENTS, key.encode(), encode_list(rec)))
        for key, rec in c.affinities.items():
            add((DB_CONTEXT, affinity_key(key).encode(), encode_list(rec)))
        if c.fresh is not None:
            add((DB_CONTEXT, FRESH_KEY.encode(), encode_list(c.fresh)))
        for item, rec in c.similar.items():
            add((DB_SIMILAR, item.encode(), encode_list(rec)))
        if c.meta is not None:
            add((DB_META, META_RECORD_KEY, encode_meta(c.meta)))
        return ops

    def apply(self, ops: Sequence[Op]) -> tuple[int, int]:
        """Writes raw records in one transaction, with the growth and the all-or-nothing of
        :meth:`commit`: each op is ``(database name, key, value)``, value None deleting the
        key. Returns ``(records put, keys deleted)`` (a missing key counts as deleted)."""
        payload = sum(len(k) + (len(v) if v is not None else 0) + 16 for _, k, v in ops)
        dbs = self._dbs
        for name, _, _ in ops:
            if name not in dbs:
                raise CodecError(f"unknown database {name!r}")
        with self._write:
            # LMDB copies every page it changes: room for about twice the payload, and a
            # few pages of tree, before the transaction starts.
            need = self.used_size() + int(self.HEADROOM * payload) + 64 * self._psize
            if self.HEADROOM and need > self.map_size:
                self._grow(need)
            while True:
                try:
                    puts = dels = 0
                    with self.env.begin(write=True) as txn:
                        for name, k, v in ops:
                            if v is None:
                                txn.delete(k, db=dbs[name])
                                dels += 1
                            else:
                                txn.put(k, v, db=dbs[name])
                                puts += 1
                    break
                except lmdb.MapFullError:
                    # The transaction is aborted: nothing of it is in the store.
                    if not self._grow(self.map_size * 2):
                        raise StoreFullError(self.path, payload, self.map_size, self.max_map_size) from None
            if self.used_size() > self.GROW_AT * self.map_size:
                self._grow(self.map_size * 2)
        return puts, dels

    def sync(self) -> None:
        self.env.sync(True)

    def reader(self) -> ListReader:
        """A reader on this writer's environment (one process must not open it twice); it
        shares the writer's map guard, so the map is never remapped under it."""
        return ListReader(env=self.env, guard=self._guard)

    def _unlock(self) -> None:
        fd, self._lock_fd = self._lock_fd, None
        if fd is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_UN)
            finally:
                os.close(fd)

    def close(self) -> None:
        """Closes the environment and releases the writer lock (idempotent)."""
        if self._lock_fd is None:
            return
        try:
            self.env.close()
        finally:
            self._unlock()

    def __enter__(self) -> ListWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class ReadTxn:
    """One read transaction of a :class:`ListReader` (``with reader.read() as t``): every
    read in it sees the same commit. Buffers from :meth:`get` are valid inside the ``with``
    only; the decoded records and views are copies."""

    __slots__ = ("_reader", "txn")

    def __init__(self, reader: ListReader) -> None:
        self._reader = reader
        self.txn: Any = None

    def __enter__(self) -> ReadTxn:
        self.txn = self._reader._begin()
        return self

    def __exit__(self, *exc: object) -> None:
        txn, self.txn = self.txn, None
        try:
            txn.abort()
        except lmdb.Error:  # invalidated (the environment was closed)
            pass
        finally:
            self._reader._guard.exit()

    def get(self, db: bytes, key: bytes) -> Any:
        """The raw value (a buffer into the map), None when absent or the database is missing."""
        h = self._reader._dbs[db]
        if h is None:
            return None
        return self.txn.get(key, db=h)

    def getter(self, db: bytes) -> Callable[[bytes], Any] | None:
        """A lookup of raw values (buffers, valid inside the ``with``) in one database of this
        transaction, ``get(key)``, for a reader that looks up many keys; None when the
        database is missing (a store of an older engine)."""
        h = self._reader._dbs[db]
        if h is None:
            return None
        return functools.partial(self.txn.get, db=h)

    def _view(self, db: bytes, key: str) -> ListView | None:
        v = self.get(db, key.encode())
        return None if v is None else ListView(v)

    def _list(self, db: bytes, key: str) -> ListRecord | None:
        v = self.get(db, key.encode())
        return None if v is None else decode_list(v)

    def user_list_view(self, user: str) -> ListView | None:
        return self._view(DB_USER_LISTS, user)

    def user_list(self, user: str) -> ListRecord | None:
        return self._list(DB_USER_LISTS, user)

    def segment_view(self, kind: str, segment: str) -> ListView | None:
        return self._view(DB_SEGMENTS, segment_key(kind, segment))

    def segment(self, kind: str, segment: str) -> ListRecord | None:
        return self._list(DB_SEGMENTS, segment_key(kind, segment))

    def similar_view(self, item: str) -> ListView | None:
        return self._view(DB_SIMILAR, item)

    def similar(self, item: str) -> ListRecord | None:
        return self._list(DB_SIMILAR, item)

    def item(self, item: str) -> ItemRecord | None:
        v = self.get(DB_ITEMS, item.encode())
        return None if v is None else decode_item(v)

    def affinity(self, context_key: str) -> ListRecord | None:
        return self._list(DB_CONTEXT, affinity_key(context_key))

    def fresh(self) -> ListRecord | None:
        return self._list(DB_CONTEXT, FRESH_KEY)

    def meta(self) -> MetaRecord | None:
        v = self.get(DB_META, META_RECORD_KEY)
        return None if v is None else decode_meta(v)

    def keys(self, db: bytes) -> list[str]:
        h = self._reader._dbs[db]
        if h is None:
            return []
        return [bytes(k).decode() for k in self.txn.cursor(db=h).iternext(keys=True, values=False)]

    def items_of(self, db: bytes) -> Iterator[tuple[bytes, Any]]:
        h = self._reader._dbs[db]
        if h is None:
            return iter(())
        return iter(self.txn.cursor(db=h))


class ListReader:
    """Reads a list store. Each call is one read transaction, so it sees whole commits only;
    :meth:`read` makes one transaction for several reads. A store grown by its writer in
    another process is followed (the new map size is adopted and the read retried).

    ``map_size`` 0 (the default) maps the store at the size its writer gave it. A store
    whose optional databases (``context``, ``similar``) do not exist yet reads them as empty,
    and looks for them again every few seconds."""

    RETRY_MISSING_SECONDS = 2.0

    def __init__(
        self,
        path: str | os.PathLike[str] | None = None,
        env: lmdb.Environment | None = None,
        map_size: int = 0,
        guard: _MapGuard | None = None,
    ) -> None:
        if env is None:
            if path is None:
                raise ValueError("give a path or an open environment")
            env = _open_env(path, True, map_size)
            self._owned = True
        else:
            self._owned = False
        self.env = env
        self._guard = guard or _MapGuard()
        self.remaps = 0
        """How many times this reader adopted a map grown by another process."""
        # A store the engine has not created yet raises lmdb.NotFoundError here; a store of
        # an older engine may lack the optional databases (None: read as empty).
        self._dbs: dict[bytes, Any] = {}
        self._missing = False
        self._missing_retry = 0.0
        try:
            for name in LMDB_DBS:
                try:
                    self._dbs[name] = self._open_db(name)
                except lmdb.NotFoundError:
                    if name not in OPTIONAL_DBS:
                        raise
                    self._dbs[name] = None
        except BaseException:
            if self._owned:
                env.close()
            raise
        self._missing = any(self._dbs[n] is None for n in OPTIONAL_DBS)
        self._missing_retry = time.monotonic() + self.RETRY_MISSING_SECONDS

    @property
    def map_size(self) -> int:
        """The LMDB map size of this reader's environment, in bytes."""
        return int(self.env.info()["map_size"])

    def _open_db(self, name: bytes) -> Any:
        for attempt in range(3):
            try:
                return self.env.open_db(name, create=False)
            except lmdb.MapResizedError:
                if attempt == 2:
                    raise
                self._adopt()
        raise AssertionError("unreachable")

    def _adopt(self) -> None:
        """Adopts the map size another process has grown the store to."""
        self._guard.remap(lambda: self.env.set_mapsize(0))
        self.remaps += 1

    def _look_for_missing(self) -> None:
        now = time.monotonic()
        if now < self._missing_retry:
            return
        self._missing_retry = now + self.RETRY_MISSING_SECONDS
        for name in OPTIONAL_DBS:
            if self._dbs.get(name) is None:
                try:
                    self._dbs[name] = self._open_db(name)
                except lmdb.Error:
                    pass
        self._missing = any(self._dbs[n] is None for n in OPTIONAL_DBS)

    def _begin(self) -> Any:
        """A read transaction, the guard entered (the caller exits it)."""
        g = self._guard
        if self._missing and not g.depth():
            self._look_for_missing()
        for attempt in range(3):
            g.enter()
            try:
                return self.env.begin(buffers=True)
            except lmdb.MapResizedError:
                g.exit()
                if attempt == 2 or g.depth():
                    raise
                self._adopt()
            except BaseException:
                g.exit()
                raise
        raise AssertionError("unreachable")

    def read(self) -> ReadTxn:
        """One read transaction for several reads: ``with reader.read() as t: t.user_list(u)``."""
        return ReadTxn(self)

    def affinity(self, context_key: str) -> ListRecord | None:
        """The affinity list of a context key (``device=mobile``), None when there is none."""
        with self.read() as t:
            return t.affinity(context_key)

    def affinity_keys(self) -> list[str]:
        """The context keys that have an affinity list (empty ones included)."""
        n = len(AFFINITY_PREFIX)
        return [k[n:] for k in self.keys(DB_CONTEXT) if k.startswith(AFFINITY_PREFIX)]

    def fresh(self) -> ListRecord | None:
        """The list of fresh items (the exploration pool), None when there is none."""
        with self.read() as t:
            return t.fresh()

    def user_list(self, user: str) -> ListRecord | None:
        with self.read() as t:
            return t.user_list(user)

    def item(self, item: str) -> ItemRecord | None:
        with self.read() as t:
            return t.item(item)

    def user_list_view(self, user: str) -> ListView | None:
        """Like :meth:`user_list`, decoded lazily (:class:`ListView`)."""
        with self.read() as t:
            return t.user_list_view(user)

    def segment_view(self, kind: str, segment: str) -> ListView | None:
        """Like :meth:`segment`, decoded lazily (:class:`ListView`)."""
        with self.read() as t:
            return t.segment_view(kind, segment)

    def segment(self, kind: str, segment: str) -> ListRecord | None:
        with self.read() as t:
            return t.segment(kind, segment)

    def similar_view(self, item: str) -> ListView | None:
        """An item's exported neighbours, decoded lazily; None when the engine exported none."""
        with self.read() as t:
            return t.similar_view(item)

    def similar(self, item: str) -> ListRecord | None:
        """An item's exported neighbours (the ``similar`` database), None when there are none."""
        with self.read() as t:
            return t.similar(item)

    def meta(self) -> MetaRecord | None:
        with self.read() as t:
            return t.meta()

    def snapshot(self) -> tuple[MetaRecord | None, dict[str, ListRecord]]:
        """The meta record and every user list, read in one transaction."""
        with self.read() as t:
            meta = t.meta()
            out = {bytes(k).decode(): decode_list(v) for k, v in t.items_of(DB_USER_LISTS)}
        return meta, out

    def keys(self, db: bytes) -> list[str]:
        with self.read() as t:
            return t.keys(db)

    def close(self) -> None:
        if self._owned:
            self.env.close()

    def __enter__(self) -> ListReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


__all__ = [
    "DEFAULT_MAX_MAP_SIZE",
    "LOCK_FILE",
    "ListReader",
    "ListWriter",
    "Op",
    "ReadTxn",
    "StoreError",
    "StoreFullError",
    "StoreLockedError",
]
