"""The read side of the list store: :class:`Store` over
:class:`~recofast_sidecar.protocol.liststore.ListReader`, opened lazily, reopened when it goes
missing, and never raising for want of data (a read that fails returns None).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterable
from typing import Any

import lmdb

from recofast_sidecar.protocol.codec import (
    AFFINITY_PREFIX,
    FRESH_KEY,
    CodecError,
    ItemRecord,
    ListView,
    decode_affinities,
    decode_item,
    decode_list,
)
from recofast_sidecar.protocol.liststore import ListReader, ReadTxn
from recofast_sidecar.protocol.names import DB_CONTEXT, DB_ITEMS
from recofast_sidecar.protocol.settings import SharedSettings
from recofast_sidecar.rerank import Candidate, Filters, passes

log = logging.getLogger("recofast.sidecar")

_CTX_HEAD = 20  # a list record's header: format, flags, count, model version, time


class Store:
    """The LMDB reader, opened lazily and reopened when it goes missing. Every read returns
    None instead of raising when the store is absent or a record is unreadable.

    A handler reads in one transaction (``with store.request():``), so one request sees one
    commit and pays for one transaction; reads outside a request make their own. A store
    the engine has grown (even past this reader's map) is followed by the codec's reader,
    never answered from the fallback lists.

    Inside a request, :attr:`generation` names the commit it reads: LMDB's transaction id
    (the last write transaction the snapshot holds) within this opening of the store. Two
    requests with the same generation read the same bytes, so whatever was derived from the
    store under one generation (an item's decoded record, the summed affinities of a
    context, a whole answer) is reused without reading again until the engine commits."""

    SHARED_SECONDS = 1.0
    """How often the meta record is re-read for the engine's shared settings."""
    MAX_DECODED_ITEMS = 200_000
    MAX_CONTEXT_RECORDS = 100_000
    MAX_CONTEXT_SUMS = 10_000
    MAX_MEMO = 10_000
    """Bound of the per-generation memo (affinity sums by context keys, filtered pools)."""

    def __init__(self, path: str | None, reader: ListReader | None = None) -> None:
        self.path = path
        self.reader = reader
        self._owned = reader is None
        self.error: str | None = None if reader is not None else "not opened yet"
        self._t: ReadTxn | None = None  # the current request's transaction
        # Decoded item records by id: [raw bytes, record, generation last checked]. Within one
        # generation a record is used without a read; in a later one it is read again and
        # reused while its bytes are equal.
        self._decoded: dict[str, list[Any]] = {}
        self._epoch = 0  # counts openings of the store: generations of two openings differ
        self.generation: int | None = None
        """The commit the current request reads (None outside a request or with no store)."""
        self._memo: dict[Any, tuple[int, Any]] = {}
        # Decoded context records by key, with the record's header (format, count, model
        # version, write time): a record is decoded once per write, not once per request.
        self._ctx: dict[str, tuple[bytes, Any]] = {}
        self._sums: dict[tuple[int, ...], tuple[list[dict[str, float]], dict[str, float]]] = {}
        self._shared: SharedSettings | None = None
        self._shared_next = 0.0  # monotonic time of the next read of the meta record

    @property
    def available(self) -> bool:
        return self.reader is not None

    def open(self) -> bool:
        """Tries to open the store (blocking: call it in a thread). Logs one line per change."""
        if self.reader is not None:
            return True
        if not self.path:
            self._set_error("no --lmdb store configured")
            return False
        try:
            if not os.path.isdir(self.path):
                raise FileNotFoundError(f"{self.path} does not exist")
            self.reader = ListReader(self.path)
        except (lmdb.Error, OSError, CodecError) as e:
            self._set_error(f"cannot open {self.path}: {e}")
            return False
        log.info("list store %s open", self.path)
        self._epoch += 1
        self.error = None
        self._shared_next = 0.0
        return True

    def _set_error(self, msg: str) -> None:
        if msg != self.error:
            log.warning("list store unavailable, serving fallback lists: %s", msg)
        self.error = msg

    def _fail(self, e: Exception) -> None:
        self._set_error(f"read failed: {e}")
        self._epoch += 1
        self.generation = None
        if self._owned and self.reader is not None:
            self._t = None
            try:
                self.reader.close()
            except lmdb.Error:
                pass
            self.reader = None

    def request(self) -> _Request:
        """``with store.request():`` makes the reads inside one transaction (no await inside)."""
        return _Request(self)

    def _read(self, fn: Callable[[ReadTxn], Any]) -> Any:
        """``fn(txn)`` in the request's transaction (or one of its own); None on a failure."""
        r = self.reader
        if r is None:
            return None
        try:
            t = self._t
            if t is not None:
                return fn(t)
            with r.read() as t:
                return fn(t)
        except (lmdb.Error, CodecError, UnicodeError) as e:
            if isinstance(e, lmdb.Error):
                self._fail(e)
            return None

    def user_list(self, user: str) -> ListView | None:
        return self._read(lambda t: t.user_list_view(user))

    def segment(self, kind: str, seg: str) -> ListView | None:
        return self._read(lambda t: t.segment_view(kind, seg))

    def similar(self, item: str) -> ListView | None:
        """The item's neighbours as the engine exported them (one read, never a scan)."""
        return self._read(lambda t: t.similar_view(item))

    def _cached(self, t: ReadTxn, key: str, decode: Callable[[bytes], Any]) -> Any:
        raw = t.get(DB_CONTEXT, key.encode())
        if raw is None:
            return None
        head = bytes(raw[:_CTX_HEAD])
        hit = self._ctx.get(key)
        if hit is not None and hit[0] == head:
            return hit[1]
        try:
            value = decode(bytes(raw))
        except (CodecError, UnicodeError):
            return None
        if len(self._ctx) >= self.MAX_CONTEXT_RECORDS:
            self._ctx.clear()
        self._ctx[key] = (head, value)
        return value

    def memo(self, key: Any, compute: Callable[[], Any]) -> Any:
        """``compute()``, kept for the rest of this generation under ``key`` (bounded): for
        what is derived from the store alone. Outside a request it is not kept."""
        gen = self.generation
        if gen is None:
            return compute()
        hit = self._memo.get(key)
        if hit is not None and hit[0] == gen:
            return hit[1]
        value = compute()
        if hit is None and len(self._memo) >= self.MAX_MEMO:
            del self._memo[next(iter(self._memo))]  # the oldest
        self._memo[key] = (gen, value)
        return value

    def affinities(self, keys: Iterable[str]) -> list[dict[str, float]]:
        """The summed affinities (``{item: Σ affinity}``) of these context keys' lists, read
        in one transaction, as a list of one mapping (empty when no key has a list). The sum
        is kept per combination of decoded lists, so a context seen before costs a lookup
        (and nothing at all within one generation)."""
        keys = tuple(keys)
        return self.memo(("aff", keys), lambda: self._affinities(keys))  # type: ignore[no-any-return]

    def _affinities(self, keys: tuple[str, ...]) -> list[dict[str, float]]:
        parts = self._read(lambda t: [d for k in keys if (d := self._cached(t, AFFINITY_PREFIX + k, decode_affinities))]) or []
        if len(parts) <= 1:
            return parts
        ck = tuple(id(d) for d in parts)
        hit = self._sums.get(ck)
        if hit is None or any(a is not b for a, b in zip(hit[0], parts)):
            total: dict[str, float] = {}
            for d in parts:
                for item, v in d.items():
                    total[item] = total.get(item, 0.0) + v
            if len(self._sums) >= self.MAX_CONTEXT_SUMS:
                self._sums.clear()
            hit = self._sums[ck] = (parts, total)  # holds the parts, so their ids stay theirs
        return [hit[1]]

    def fresh(self) -> list[str]:
        """The fresh items (new, few events yet: the exploration pool), newest first."""
        return self.memo("fresh", lambda: self._read(lambda t: self._cached(t, FRESH_KEY, lambda b: decode_list(b).items)) or [])  # type: ignore[no-any-return]

    def select(
        self, sources: Iterable[tuple[str, Iterable[Candidate]]], f: Filters, want: int
    ) -> tuple[list[Candidate], dict[str, ItemRecord | None], str | None]:
        """Walks the candidate lists in order (each read only when the ones before it did not
        yield ``want`` items), reads each item's metadata in one read transaction, and keeps
        the first ``want`` distinct items that pass ``f``. Returns them, their metadata, and
        the name of the source of the first one."""
        out: list[Candidate] = []
        meta: dict[str, ItemRecord | None] = {}
        first: str | None = None
        seen: set[str] = set()
        # Only the stock counts (no request filter): tested here rather than by passes().
        plain = not (f.exclude or f.exclude_categories or f.category is not None or f.needs_price)
        with self.request():
            t = self._t
            gen = self.generation
            decoded = self._decoded
            # One lookup function for the items database: this loop runs for every candidate.
            get = t.getter(DB_ITEMS) if t is not None else None
            try:
                for name, cands in sources:
                    for c in cands:
                        item = c[0]
                        if item in seen:
                            continue
                        seen.add(item)
                        hit = decoded.get(item)
                        rec = hit[1] if hit is not None and hit[2] == gen and gen is not None else self._item(get, item)
                        if (rec is None or rec.in_stock is not False) if plain else passes(item, rec, f):
                            out.append(c)
                            meta[item] = rec
                            if first is None:
                                first = name
                            if len(out) >= want:
                                return out, meta, first
            except lmdb.Error as e:
                self._fail(e)
        return out, meta, first

    def _item(self, get: Callable[[bytes], Any] | None, item: str) -> ItemRecord | None:
        if get is None or self._t is None:
            return None
        raw = get(item.encode())
        hit = self._decoded.get(item)
        if raw is None:
            if hit is not None:
                del self._decoded[item]
            return None
        if hit is not None and hit[0] == raw:
            hit[2] = self.generation
            return hit[1]  # type: ignore[no-any-return]
        raw = bytes(raw)
        try:
            rec = decode_item(raw)
        except (CodecError, UnicodeError):
            if hit is not None:
                del self._decoded[item]
            return None
        if hit is None and len(self._decoded) >= self.MAX_DECODED_ITEMS:
            self._decoded.clear()
        self._decoded[item] = [raw, rec, self.generation]
        return rec

    def shared(self) -> SharedSettings | None:
        """The settings the engine shares through the meta record (``MetaRecord.shared``;
        None when it has written none, e.g. an older engine), read when the store is opened
        and then at most once every :attr:`SHARED_SECONDS` (the last ones read are kept while
        the store cannot be read)."""
        now = time.monotonic()
        if now >= self._shared_next and self.reader is not None:
            self._shared_next = now + self.SHARED_SECONDS
            got = self._read(lambda t: (t.meta(),))  # None: the read failed
            if got is not None:
                self._shared = got[0].shared if got[0] is not None else None
        return self._shared

    def meta_version(self) -> int:
        def read() -> int:
            m = self._read(lambda t: t.meta())
            return 0 if m is None else m.model_version

        return self.memo("meta_version", read)  # type: ignore[no-any-return]

    def adopt(self, reader: ListReader) -> None:
        """Reads through ``reader`` from now on (one this store does not close: the reader of
        the process's own writer)."""
        self.reader = reader
        self._owned = False
        self._epoch += 1
        self.error = None
        self._shared_next = 0.0

    def map_size(self) -> int:
        """The LMDB map size of the open store in this process (0 when it is not open)."""
        return self.reader.map_size if self.reader is not None else 0

    def remaps(self) -> int:
        """How many times the reader adopted a map its writer had grown."""
        return self.reader.remaps if self.reader is not None else 0

    def close(self) -> None:
        self._t = None
        self.generation = None
        self._epoch += 1
        if self._owned and self.reader is not None:
            self.reader.close()
        self.reader = None


class _Request:
    """The context manager of :meth:`Store.request` (re-entrant: an inner one reuses the
    outer transaction)."""

    __slots__ = ("store", "ctx")

    def __init__(self, store: Store) -> None:
        self.store = store
        self.ctx: ReadTxn | None = None

    def __enter__(self) -> _Request:
        st = self.store
        if st._t is None and st.reader is not None:
            ctx = st.reader.read()
            try:
                st._t = t = ctx.__enter__()
                # The generation: this opening of the store and the commit the snapshot holds.
                st.generation = (st._epoch << 48) | t.txn.id()
            except (lmdb.Error, CodecError) as e:
                st._t = None
                st._fail(e)
                return self
            self.ctx = ctx
        return self

    def __exit__(self, *exc: object) -> None:
        ctx, self.ctx = self.ctx, None
        if ctx is not None:
            st = self.store
            st._t = None
            st.generation = None
            ctx.__exit__(None, None, None)




__all__ = ["Store"]
