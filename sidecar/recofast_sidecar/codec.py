"""The LMDB list codec: one writer and one reader of recofast's list store.

Layout (format version 1)
-------------------------
One LMDB environment (a directory) with five named databases. Keys are UTF-8 text. All
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

>>> rec = ListRecord(items=["mug", "tea"], scores=[0.5, 0.25], model_version=3, time=1.5)
>>> decode_list(encode_list(rec)) == rec
True
"""

from __future__ import annotations

import math
import os
import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import lmdb
import numpy as np

from recofast_sidecar.constants import DB_CONTEXT, DB_ITEMS, DB_META, DB_SEGMENTS, DB_USER_LISTS, LMDB_DBS, OPTIONAL_DBS

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


class CodecError(ValueError):
    """A record is truncated or of an unknown format version."""


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

    def merge(self, other: Commit) -> None:
        """Adds ``other``'s records; where both hold a key, ``other``'s wins."""
        self.user_lists.update(other.user_lists)
        self.items.update(other.items)
        self.segments.update(other.segments)
        self.affinities.update(other.affinities)
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


class ListWriter:
    """The one writer of a list store (the engine). Each :meth:`commit` is one transaction.

    ``sync=True, metasync=False`` (the default) keeps every commit atomic and consistent;
    a machine crash may undo the last commit, which the engine redoes from the stream.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        map_size: int = 1 << 30,
        sync: bool = True,
        metasync: bool = False,
    ) -> None:
        os.makedirs(path, exist_ok=True)
        self.env = _open_env(path, False, map_size, sync=sync, metasync=metasync)
        self._dbs = {name: self.env.open_db(name) for name in LMDB_DBS}

    def commit(self, c: Commit) -> None:
        with self.env.begin(write=True) as txn:
            if c.user_lists:
                db = self._dbs[DB_USER_LISTS]
                for user, rec in c.user_lists.items():
                    txn.put(user.encode(), encode_list(rec), db=db)
            if c.items:
                db = self._dbs[DB_ITEMS]
                for item, rec in c.items.items():
                    txn.put(item.encode(), encode_item(rec), db=db)
            if c.segments:
                db = self._dbs[DB_SEGMENTS]
                for key, rec in c.segments.items():
                    txn.put(key.encode(), encode_list(rec), db=db)
            if c.affinities or c.fresh is not None:
                db = self._dbs[DB_CONTEXT]
                for key, rec in c.affinities.items():
                    txn.put(affinity_key(key).encode(), encode_list(rec), db=db)
                if c.fresh is not None:
                    txn.put(FRESH_KEY.encode(), encode_list(c.fresh), db=db)
            if c.meta is not None:
                txn.put(_META_KEY, encode_meta(c.meta), db=self._dbs[DB_META])

    def sync(self) -> None:
        self.env.sync(True)

    def reader(self) -> ListReader:
        """A reader on this writer's environment (one process must not open it twice)."""
        return ListReader(env=self.env)

    def close(self) -> None:
        self.env.close()

    def __enter__(self) -> ListWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class ListReader:
    """Reads a list store. Each call is one read transaction, so it sees whole commits only."""

    def __init__(
        self,
        path: str | os.PathLike[str] | None = None,
        env: lmdb.Environment | None = None,
        map_size: int = 1 << 30,
    ) -> None:
        if env is None:
            if path is None:
                raise ValueError("give a path or an open environment")
            env = _open_env(path, True, map_size)
            self._owned = True
        else:
            self._owned = False
        self.env = env
        # A store the engine has not created yet raises lmdb.NotFoundError here; a store of
        # an older engine may lack the optional databases (None: read as empty).
        self._dbs: dict[bytes, Any] = {}
        for name in LMDB_DBS:
            try:
                self._dbs[name] = env.open_db(name, create=False)
            except lmdb.NotFoundError:
                if name not in OPTIONAL_DBS:
                    raise
                self._dbs[name] = None

    def _get(self, db: bytes, key: bytes) -> bytes | None:
        if self._dbs[db] is None:
            return None
        with self.env.begin(db=self._dbs[db]) as txn:
            return txn.get(key)

    def affinity(self, context_key: str) -> ListRecord | None:
        """The affinity list of a context key (``device=mobile``), None when there is none."""
        v = self._get(DB_CONTEXT, affinity_key(context_key).encode())
        return None if v is None else decode_list(v)

    def affinity_keys(self) -> list[str]:
        """The context keys that have an affinity list (empty ones included)."""
        if self._dbs[DB_CONTEXT] is None:
            return []
        n = len(AFFINITY_PREFIX)
        return [k[n:] for k in self.keys(DB_CONTEXT) if k.startswith(AFFINITY_PREFIX)]

    def fresh(self) -> ListRecord | None:
        """The list of fresh items (the exploration pool), None when there is none."""
        v = self._get(DB_CONTEXT, FRESH_KEY.encode())
        return None if v is None else decode_list(v)

    def user_list(self, user: str) -> ListRecord | None:
        v = self._get(DB_USER_LISTS, user.encode())
        return None if v is None else decode_list(v)

    def item(self, item: str) -> ItemRecord | None:
        v = self._get(DB_ITEMS, item.encode())
        return None if v is None else decode_item(v)

    def user_list_view(self, user: str) -> ListView | None:
        """Like :meth:`user_list`, decoded lazily (:class:`ListView`)."""
        v = self._get(DB_USER_LISTS, user.encode())
        return None if v is None else ListView(v)

    def segment_view(self, kind: str, segment: str) -> ListView | None:
        """Like :meth:`segment`, decoded lazily (:class:`ListView`)."""
        v = self._get(DB_SEGMENTS, segment_key(kind, segment).encode())
        return None if v is None else ListView(v)

    def segment(self, kind: str, segment: str) -> ListRecord | None:
        v = self._get(DB_SEGMENTS, segment_key(kind, segment).encode())
        return None if v is None else decode_list(v)

    def meta(self) -> MetaRecord | None:
        v = self._get(DB_META, _META_KEY)
        return None if v is None else decode_meta(v)

    def snapshot(self) -> tuple[MetaRecord | None, dict[str, ListRecord]]:
        """The meta record and every user list, read in one transaction."""
        out: dict[str, ListRecord] = {}
        with self.env.begin() as txn:
            m = txn.get(_META_KEY, db=self._dbs[DB_META])
            for k, v in txn.cursor(db=self._dbs[DB_USER_LISTS]):
                out[bytes(k).decode()] = decode_list(v)
        return (None if m is None else decode_meta(m)), out

    def keys(self, db: bytes) -> Iterable[str]:
        if self._dbs[db] is None:
            return []
        with self.env.begin(db=self._dbs[db]) as txn:
            return [bytes(k).decode() for k in txn.cursor().iternext(keys=True, values=False)]

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
    "FORMAT_VERSION",
    "FRESH_KEY",
    "CodecError",
    "Commit",
    "ItemRecord",
    "ListReader",
    "ListRecord",
    "ListView",
    "ListWriter",
    "MetaRecord",
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
