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
                :mod:`recofast_sidecar.protocol.context`). Value: an *affinity list*, a list record
                whose scores are the items' affinities to that context (the model's log-lift,
                positive, best first). A key the model no longer exports is written empty.
                Key ``"fresh"``. Value: a list record of the new items (introduced by their
                catalog text, few events yet), newest first, scores 0: the exploration pool.
                A store written before this database existed reads as if it were empty.
``similar``     key: item id. Value: a list record of the item's neighbours, best first, as
                the engine exports them (what ``/v1/items/{id}/similar`` serves). Optional
                like ``context``: a store without it reads as if it were empty.

List record::

    u8  format (1) | u8 flags | u16 n | u64 model_version | f64 time (epoch s)
    n × f32 score
    n × (u16 byte length, UTF-8 item id)
    with flag 1 (reasons): n × (u16 byte length, UTF-8 reason), each item's reason in
    words ("bought with Brass desk lamp"; empty: none). A reader that knows no flags
    reads the items and scores the same and never looks past them.

Item record::

    u8 format (1) | u8 in_stock (0 no, 1 yes, 255 unknown) | f64 price (NaN unknown)
    | f64 updated (epoch s) | then three strings, each u32 byte length + UTF-8:
    category, title, text

Meta record::

    u8 format (1) | u8 flags | u16 reserved | u32 reserved | u64 model_version
    | u64 last_seq (last JetStream sequence whose effects are in this file) | f64 time

    format 2: the same head with format byte 2, then the engine's shared settings
    (:class:`~recofast_sidecar.protocol.settings.SharedSettings`) as a JSON object

A record whose format byte is not one this module knows raises :class:`CodecError`; a
reader never guesses. Every :meth:`ListWriter.commit` is one LMDB write transaction, so a
reader sees all of a commit or none of it, never a half-written list.
pointer into an unmapped map.

>>> rec = ListRecord(items=["mug", "tea"], scores=[0.5, 0.25], model_version=3, time=1.5)
>>> decode_list(encode_list(rec)) == rec
True
"""

from __future__ import annotations

import math
import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import msgspec
import numpy as np

from recofast_sidecar.protocol.settings import SharedSettings

FORMAT_VERSION = 1
META_FORMAT_SHARED = 2
"""The meta record's format when it carries :class:`SharedSettings` (JSON after the head)."""
MAX_LIST_LEN = 65535
LIST_FLAG_REASONS = 1
"""List record flag: each item's reason follows the item ids."""
MAX_REASON_BYTES = 400
"""The most bytes of one reason kept in a list record."""
_LIST_HEAD = struct.Struct("<BBHQd")
_ITEM_HEAD = struct.Struct("<BBdd")
_META = struct.Struct("<BBHIQQd")
_U16 = struct.Struct("<H")
_F32 = struct.Struct("<f")
_U32 = struct.Struct("<I")
_SHARED_ENC = msgspec.json.Encoder()
_SHARED_DEC = msgspec.json.Decoder(SharedSettings)
AFFINITY_PREFIX = "aff:"
FRESH_KEY = "fresh"


class CodecError(ValueError):
    """A record is truncated or of an unknown format version; the base of this module's errors."""




@dataclass(frozen=True)
class ListRecord:
    """A ranked list: item ids best first, their scores, the model version and the time
    (epoch seconds) it was computed."""

    items: list[str]
    scores: list[float]
    model_version: int = 0
    time: float = 0.0
    reasons: list[str] | None = None
    """Each item's reason in words (see :mod:`recofast.explain`), or None."""


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
    """What the file reflects: the model version and the last applied stream sequence, and the
    settings the edges take from the engine."""

    model_version: int = 0
    last_seq: int = 0
    time: float = 0.0
    shared: SharedSettings | None = None
    """The settings the edges take from the engine (time zone, context weight); None in a
    record of format 1."""


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
    reasons = rec.reasons
    if reasons is not None and len(reasons) != n:
        raise CodecError(f"{n} items but {len(reasons)} reasons")
    parts = [
        _LIST_HEAD.pack(FORMAT_VERSION, LIST_FLAG_REASONS if reasons is not None else 0, n, rec.model_version, rec.time),
        np.asarray(rec.scores, dtype="<f4").tobytes(),
    ]
    for item in rec.items:
        b = item.encode()
        if len(b) > 0xFFFF:
            raise CodecError("an item id is longer than 65535 bytes")
        parts.append(_U16.pack(len(b)))
        parts.append(b)
    for r in reasons or ():
        b = r.encode()[:MAX_REASON_BYTES].decode("utf-8", "ignore").encode()  # never half a character
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
    fmt, flags, n, version, t = _LIST_HEAD.unpack_from(buf, 0)
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
    reasons: list[str] | None = None
    if flags & LIST_FLAG_REASONS:
        reasons = []
        for _ in range(n):
            r, off = _read_str(buf, off, _U16, "list")
            reasons.append(r)
    if off != len(buf):
        raise CodecError("trailing bytes after list record")
    return ListRecord(items=items, scores=scores, model_version=version, time=t, reasons=reasons)


class ListView:
    """A list record read lazily: the header at once, each ``(item, score)`` as it is
    iterated, so a reader that needs the first ten of a long list decodes ten. Iteration
    raises :class:`CodecError` where the record turns out truncated.

    >>> v = ListView(encode_list(ListRecord(items=["mug", "tea"], scores=[0.5, 0.25], model_version=3)))
    >>> len(v), v.model_version, list(v)
    (2, 3, [('mug', 0.5), ('tea', 0.25)])
    """

    __slots__ = ("_buf", "n", "model_version", "time", "flags")

    def __init__(self, buf: bytes | memoryview) -> None:
        buf = bytes(buf)
        if len(buf) < _LIST_HEAD.size:
            raise CodecError("list record truncated")
        fmt, flags, n, version, t = _LIST_HEAD.unpack_from(buf, 0)
        if fmt != FORMAT_VERSION:
            raise CodecError(f"unknown list format {fmt}")
        if len(buf) < _LIST_HEAD.size + 4 * n + 2 * n:
            raise CodecError("list record truncated")
        self._buf, self.n, self.model_version, self.time, self.flags = buf, n, version, t, flags

    def reasons(self) -> dict[str, str]:
        """Each item's reason in words, by item (empty when the record has none; a
        truncated record gives what was read before the break).

        >>> rec = ListRecord(items=["mug", "tea"], scores=[0.5, 0.25], reasons=["trending", "bought with Mug"])
        >>> ListView(encode_list(rec)).reasons()
        {'mug': 'trending', 'tea': 'bought with Mug'}
        """
        if not self.flags & LIST_FLAG_REASONS:
            return {}
        buf, n, end = self._buf, self.n, len(self._buf)
        off = _LIST_HEAD.size + 4 * n
        items: list[str] = []
        out: dict[str, str] = {}
        try:
            for _ in range(n):
                item, off = _read_str(buf, off, _U16, "list")
                items.append(item)
            for item in items:
                if off >= end:
                    break
                r, off = _read_str(buf, off, _U16, "list")
                if r:
                    out.setdefault(item, r)
        except (CodecError, UnicodeDecodeError):
            pass
        return out

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
    if rec.shared is None:
        return _META.pack(FORMAT_VERSION, 0, 0, 0, rec.model_version, rec.last_seq, rec.time)
    return _META.pack(META_FORMAT_SHARED, 0, 0, 0, rec.model_version, rec.last_seq, rec.time) + _SHARED_ENC.encode(rec.shared)


def decode_meta(buf: bytes | memoryview) -> MetaRecord:
    """A meta record of format 1, or of format 2 (with the engine's shared settings).

    >>> r = MetaRecord(model_version=2, last_seq=9, shared=SharedSettings(timezone="Europe/London"))
    >>> decode_meta(encode_meta(r)) == r, decode_meta(encode_meta(MetaRecord(model_version=1))).shared
    (True, None)
    """
    buf = bytes(buf)
    if len(buf) < _META.size:
        raise CodecError("meta record truncated")
    fmt, _f, _r1, _r2, version, seq, t = _META.unpack_from(buf, 0)
    if fmt == FORMAT_VERSION:
        if len(buf) != _META.size:
            raise CodecError("meta record has the wrong size")
        return MetaRecord(model_version=version, last_seq=seq, time=t)
    if fmt != META_FORMAT_SHARED:
        raise CodecError(f"unknown meta format {fmt}")
    try:
        shared = _SHARED_DEC.decode(buf[_META.size :])
    except msgspec.DecodeError as e:
        raise CodecError(f"meta record: bad shared settings ({e})") from None
    return MetaRecord(model_version=version, last_seq=seq, time=t, shared=shared)


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



def list_record(pairs: Iterable[tuple[str, float] | tuple[str, float, str]], model_version: int, time: float) -> ListRecord:
    """A :class:`ListRecord` from ``(item, score)`` pairs as ``Recommender.recommend`` returns,
    or ``(item, score, reason)`` triples (the record then carries the reasons)."""
    items: list[str] = []
    scores: list[float] = []
    reasons: list[str] = []
    for p in pairs:
        items.append(p[0])
        scores.append(p[1])
        reasons.append(p[2] if len(p) > 2 else "")  # type: ignore[misc]
    return ListRecord(items=items, scores=scores, model_version=model_version, time=time,
                      reasons=reasons if any(reasons) else None)



__all__ = [
    "AFFINITY_PREFIX",
    "FORMAT_VERSION",
    "FRESH_KEY",
    "MAX_LIST_LEN",
    "CodecError",
    "Commit",
    "ItemRecord",
    "ListRecord",
    "ListView",
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
