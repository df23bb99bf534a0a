"""The LMDB list codec: one writer and one reader of recofast's list store.

Layout (format version 1)
-------------------------
One LMDB environment (a directory) with six named databases. Keys are UTF-8 text. All
numbers are little-endian.

``user_lists``  key: user id. Value: a *list record*.
``segments``    key: ``"<kind>:<segment>"``, kind ``popular`` or ``trending`` and a segment
                such as ``country=GB|device=mobile|hour=evening`` (``all`` for the whole
                shop). Value: a *list record*.
``items``       key: item id. Value: an *item record*.
``meta``        key ``b"state"``. Value: a *meta record*.
``context``     what the sidecar needs to apply context without the model, written by the
                engine's periodic refresh:
                key ``"aff:<context key>"`` (``aff:device=mobile``, ``aff:hour=19``,
                ``aff:intent=lamp``; keys as the core normalises them, see
                :mod:`recofast_sidecar.context`). Value: an *affinity list*, a list record
                whose scores are the items' affinities to that context (the model's log-lift,
                positive, best first). A key the model no longer exports is written empty.
                Key ``"fresh"``. Value: a list record of the new items (introduced by their
                catalog text, few events yet), newest first, scores 0: the exploration pool.
                A store written before this database existed reads as if it were empty.
``similar``     key: item id. Value: a list record of the item's neighbours, best first, as
                the engine exports them (what ``/v1/items/{id}/similar`` serves). Optional
                like ``context``: a store without it reads as if it were empty.

List record::

    u8  format (1) | u8 flags (0) | u16 n | u64 model_version | f64 time (epoch s)
    n × f32 score
    n × (u16 byte length, UTF-8 item id)

Item record::

    u8 format (1) | u8 in_stock (0 no, 1 yes, 255 unknown) | f64 price (NaN unknown)
    | f64 updated (epoch s) | then three strings, each u32 byte length + UTF-8:
    category, title, text

Meta record::

    u8 format (1) | u8 flags | u16 reserved | u32 reserved | u64 model_version
    | u64 last_seq (last JetStream sequence whose effects are in this file) | f64 time

A record whose format byte is not one this module knows raises :class:`CodecError`; a
reader never guesses. Every :meth:`ListWriter.commit` is one LMDB write transaction, so a
reader sees all of a commit or none of it, never a half-written list.

The store
---------
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
pointer into an unmapped map.

>>> rec = ListRecord(items=["mug", "tea"], scores=[0.5, 0.25], model_version=3, time=1.5)
>>> decode_list(encode_list(rec)) == rec
True
"""

from __future__ import annotations

import fcntl
import logging
import math
import os
import struct
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import lmdb
import numpy as np

from recofast_sidecar.constants import (
    DB_CONTEXT,
    DB_ITEMS,
    DB_META,
    DB_SEGMENTS,
    DB_SIMILAR,
    DB_USER_LISTS,
    LMDB_DBS,
    OPTIONAL_DBS,
)

log = logging.getLogger("recofast.codec")

FORMAT_VERSION = 1
MAX_LIST_LEN = 65535
_LIST_HEAD = struct.Struct("<BBHQd")
_ITEM_HEAD = struct.Struct("<BBdd")
_META = struct.Struct("<BBHIQQd")
_U16 = struct.Struct("<H")
_F32 = struct.Struct("<f")
_U32 = struct.Struct("<I")
_META_KEY = b"state"
AFFINITY_PREFIX = "aff:"
FRESH_KEY = "fresh"
LOCK_FILE = "writer.lock"
"""The file in the store's folder a writer holds an exclusive ``flock`` on."""
DEFAULT_MAX_MAP_SIZE = 1 << 36
"""64 GiB: how far a writer grows the map unless told otherwise (address space, not disk: the
file grows with the pages in use)."""


class CodecError(ValueError):
    """A record is truncated or of an unknown format version; the base of this module's errors."""


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


@dataclass(frozen=True)
class ListRecord:
    """A ranked list: item ids best first, their scores, the model version and the time
    (epoch seconds) it was computed."""

    items: list[str]
    scores: list[float]
    model_version: int = 0
    time: float = 0.0


@dataclass(frozen=True)
class ItemRecord:
    """Catalog metadata of one item. ``in_stock`` and ``price`` may be unknown (None)."""

    category: str = ""
    title: str = ""
    text: str = ""
    price: float | None = None
    in_stock: bool | None = None
    updated: float = 0.0


@dataclass(frozen=True)
class MetaRecord:
    """What the file reflects: the model version and the last applied stream sequence."""

    model_version: int = 0
    last_seq: int = 0
    time: float = 0.0


@dataclass
class Commit:
    """Everything one write transaction changes. Build it, then :meth:`ListWriter.commit`."""

    user_lists: dict[str, ListRecord] = field(default_factory=dict)
    items: dict[str, ItemRecord] = field(default_factory=dict)
    segments: dict[str, ListRecord] = field(default_factory=dict)
    meta: MetaRecord | None = None
    affinities: dict[str, ListRecord] = field(default_factory=dict)
    """Affinity lists by context key (``device=mobile``), stored as ``aff:<key>``."""
    fresh: ListRecord | None = None
    """The fresh items (the exploration pool), stored as ``fresh``."""
    similar: dict[str, ListRecord] = field(default_factory=dict)
    """Each item's neighbours, best first (the ``similar`` database), by item id."""
    delete_users: list[str] = field(default_factory=list)
    """Users whose list records are deleted (erasure), in the same transaction. Applied after
    ``user_lists``: a commit never rewrites a user it erases. :meth:`merge` keeps the order of
    commits, so a list put after an erasure is kept, and an erasure after a put deletes it."""

    def merge(self, other: Commit) -> None:
        """Adds ``other``'s records, as if ``other`` were committed after this one: where both
        hold a key, ``other``'s wins; a user ``other`` deletes loses this commit's list, and a
        user ``other`` puts a list for is no longer deleted.

        >>> c = Commit(user_lists={"u1": ListRecord(["a"], [1.0])}, delete_users=["u2"])
        >>> c.merge(Commit(user_lists={"u2": ListRecord(["b"], [1.0])}, delete_users=["u1"]))
        >>> sorted(c.user_lists), c.delete_users
        (['u2'], ['u1'])
        """
        gone = dict.fromkeys(other.delete_users)
        if gone:
            for user in gone:
                self.user_lists.pop(user, None)
        if self.delete_users and (gone or other.user_lists):
            self.delete_users = [u for u in self.delete_users if u not in gone and u not in other.user_lists]
        self.delete_users.extend(gone)
        self.user_lists.update(other.user_lists if not gone else {u: r for u, r in other.user_lists.items() if u not in gone})
        self.items.update(other.items)
        self.segments.update(other.segments)
        self.affinities.update(other.affinities)
        self.similar.update(other.similar)
        self.meta = other.meta or self.meta
        self.fresh = other.fresh or self.fresh


# -- records ----------------------------------------------------------------------------------


def encode_list(rec: ListRecord) -> bytes:
    n = len(rec.items)
    if n != len(rec.scores):
        raise CodecError(f"{n} items but {len(rec.scores)} scores")
    if n > MAX_LIST_LEN:
        raise CodecError(f"a list holds at most {MAX_LIST_LEN} items, got {n}")
    parts = [
        _LIST_HEAD.pack(FORMAT_VERSION, 0, n, rec.model_version, rec.time),
        np.asarray(rec.scores, dtype="<f4").tobytes(),
    ]
    for item in rec.items:
        b = item.encode()
        if len(b) > 0xFFFF:
            raise CodecError("an item id is longer than 65535 bytes")
        parts.append(_U16.pack(len(b)))
        parts.append(b)
    return b"".join(parts)


def _read_str(buf: bytes, off: int, length: struct.Struct, record: str) -> tuple[str, int]:
    """A length-prefixed UTF-8 string at ``off``; returns it and the offset after it."""
    if off + length.size > len(buf):
        raise CodecError(f"{record} record truncated")
    (ln,) = length.unpack_from(buf, off)
    off += length.size
    if off + ln > len(buf):
        raise CodecError(f"{record} record truncated")
    return buf[off : off + ln].decode(), off + ln


def decode_list(buf: bytes | memoryview) -> ListRecord:
    buf = bytes(buf)
    if len(buf) < _LIST_HEAD.size:
        raise CodecError("list record truncated")
    fmt, _flags, n, version, t = _LIST_HEAD.unpack_from(buf, 0)
    if fmt != FORMAT_VERSION:
        raise CodecError(f"unknown list format {fmt}")
    off = _LIST_HEAD.size
    end = off + 4 * n
    if len(buf) < end:
        raise CodecError("list record truncated")
    scores = np.frombuffer(buf, dtype="<f4", count=n, offset=off).tolist()
    off = end
    items = []
    for _ in range(n):
        item, off = _read_str(buf, off, _U16, "list")
        items.append(item)
    if off != len(buf):
        raise CodecError("trailing bytes after list record")
    return ListRecord(items=items, scores=scores, model_version=version, time=t)


class ListView:
    """A list record read lazily: the header at once, each ``(item, score)`` as it is
    iterated, so a reader that needs the first ten of a long list decodes ten. Iteration
    raises :class:`CodecError` where the record turns out truncated.

    >>> v = ListView(encode_list(ListRecord(items=["mug", "tea"], scores=[0.5, 0.25], model_version=3)))
    >>> len(v), v.model_version, list(v)
    (2, 3, [('mug', 0.5), ('tea', 0.25)])
    """

    __slots__ = ("_buf", "n", "model_version", "time")

    def __init__(self, buf: bytes | memoryview) -> None:
        buf = bytes(buf)
        if len(buf) < _LIST_HEAD.size:
            raise CodecError("list record truncated")
        fmt, _flags, n, version, t = _LIST_HEAD.unpack_from(buf, 0)
        if fmt != FORMAT_VERSION:
            raise CodecError(f"unknown list format {fmt}")
        if len(buf) < _LIST_HEAD.size + 4 * n + 2 * n:
            raise CodecError("list record truncated")
        self._buf, self.n, self.model_version, self.time = buf, n, version, t

    def __len__(self) -> int:
        return self.n

    def __iter__(self) -> Iterator[tuple[str, float]]:
        buf, n = self._buf, self.n
        s_off = _LIST_HEAD.size
        off = s_off + 4 * n
        end = len(buf)
        f32, u16 = _F32.unpack_from, _U16.unpack_from
        for i in range(n):
            if off + 2 > end:
                raise CodecError("list record truncated")
            (ln,) = u16(buf, off)
            off += 2
            if off + ln > end:
                raise CodecError("list record truncated")
            yield buf[off : off + ln].decode(), f32(buf, s_off + 4 * i)[0]
            off += ln


def encode_item(rec: ItemRecord) -> bytes:
    stock = 255 if rec.in_stock is None else int(bool(rec.in_stock))
    price = math.nan if rec.price is None else float(rec.price)
    parts = [_ITEM_HEAD.pack(FORMAT_VERSION, stock, price, rec.updated)]
    for s in (rec.category, rec.title, rec.text):
        b = s.encode()
        parts.append(_U32.pack(len(b)))
        parts.append(b)
    return b"".join(parts)


def decode_item(buf: bytes | memoryview) -> ItemRecord:
    buf = bytes(buf)
    if len(buf) < _ITEM_HEAD.size:
        raise CodecError("item record truncated")
    fmt, stock, price, updated = _ITEM_HEAD.unpack_from(buf, 0)
    if fmt != FORMAT_VERSION:
        raise CodecError(f"unknown item format {fmt}")
    off = _ITEM_HEAD.size
    strings = []
    for _ in range(3):
        text, off = _read_str(buf, off, _U32, "item")
        strings.append(text)
    if off != len(buf):
        raise CodecError("trailing bytes after item record")
    return ItemRecord(
        category=strings[0],
        title=strings[1],
        text=strings[2],
        price=None if math.isnan(price) else price,
        in_stock=None if stock == 255 else bool(stock),
        updated=updated,
    )


def encode_meta(rec: MetaRecord) -> bytes:
    return _META.pack(FORMAT_VERSION, 0, 0, 0, rec.model_version, rec.last_seq, rec.time)


def decode_meta(buf: bytes | memoryview) -> MetaRecord:
    buf = bytes(buf)
    if len(buf) != _META.size:
        raise CodecError("meta record has the wrong size")
    fmt, _f, _r1, _r2, version, seq, t = _META.unpack(buf)
    if fmt != FORMAT_VERSION:
        raise CodecError(f"unknown meta format {fmt}")
    return MetaRecord(model_version=version, last_seq=seq, time=t)


def decode_affinities(buf: bytes | memoryview) -> dict[str, float]:
    """An affinity list as ``{item: affinity}`` (what a re-rank looks items up in).

    >>> decode_affinities(encode_list(ListRecord(items=["lamp", "bulb"], scores=[2.0, 0.5])))
    {'lamp': 2.0, 'bulb': 0.5}
    """
    rec = decode_list(buf)
    return dict(zip(rec.items, rec.scores))


def affinity_key(context_key: str) -> str:
    """The ``context`` database key of a context key's affinity list.

    >>> affinity_key("device=mobile")
    'aff:device=mobile'
    """
    return AFFINITY_PREFIX + context_key


def segment_key(kind: str, segment: str) -> str:
    """``segment_key("popular", "all") == "popular:all"``."""
    if kind not in ("popular", "trending"):
        raise ValueError(f"unknown segment list kind {kind!r}")
    return f"{kind}:{segment}"


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
            add((DB_META, _META_KEY, encode_meta(c.meta)))
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
        v = self.get(DB_META, _META_KEY)
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


def list_record(pairs: Iterable[tuple[str, float]], model_version: int, time: float) -> ListRecord:
    """A :class:`ListRecord` from ``(item, score)`` pairs as ``Recommender.recommend`` returns."""
    items: list[str] = []
    scores: list[float] = []
    for item, score in pairs:
        items.append(item)
        scores.append(score)
    return ListRecord(items=items, scores=scores, model_version=model_version, time=time)


__all__ = [
    "AFFINITY_PREFIX",
    "DEFAULT_MAX_MAP_SIZE",
    "FORMAT_VERSION",
    "FRESH_KEY",
    "LOCK_FILE",
    "CodecError",
    "Commit",
    "ItemRecord",
    "ListReader",
    "ListRecord",
    "ListView",
    "ListWriter",
    "MetaRecord",
    "Op",
    "ReadTxn",
    "StoreError",
    "StoreFullError",
    "StoreLockedError",
    "affinity_key",
    "decode_affinities",
    "decode_item",
    "decode_list",
    "decode_meta",
    "encode_item",
    "encode_list",
    "encode_meta",
    "list_record",
    "segment_key",
]
