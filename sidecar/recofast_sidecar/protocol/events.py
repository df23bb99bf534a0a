"""Event schema v1 and the item catalog upsert: fast validating decoders (msgspec).

The one definition of the wire contract: the sidecar validates ``POST /v1/events`` with it
and the engine (``recofast.events`` re-exports this module) validates what it consumes, so
an event the sidecar accepts is an event the engine applies.

An event is one JSON object; a NATS message carries one event or a JSON array of events
(packing many events into one message is what makes a JetStream consumer fast)::

    {"v": 1, "id": "e-1", "type": "view", "user": "u1", "item": "mug",
     "ts": 1700000000000, "context": {"ua": "Mozilla/5.0 (iPhone ...)", "country": "GB"}}

Fields: ``v`` schema version (1); ``id`` unique event id (the dedupe key, and the
``Nats-Msg-Id`` of a single-event message); ``type`` one of :data:`EVENT_TYPES`; ``user``;
``session`` (optional); ``item`` (required for every type but ``search``); ``query``
(required for ``search``); ``ts`` epoch milliseconds or RFC 3339 text (optional: the time
the engine decodes it); ``context`` (``device``, ``ua``, ``country``, ``region``, ``lat``,
``lon``, ``weather``, ``intent``, all optional); ``rec_id`` (the served list a click or
purchase is attributed to); ``price``; ``qty``. Unknown fields are ignored, so a producer
may add fields without a version bump; removing or retyping one needs a new version.

Limits, checked at the door (sidecar and engine alike) so that nothing later code builds
from an event can fail: ids (``id``, ``user``, ``item``, ``session``) at most
:data:`MAX_ID_BYTES` bytes of UTF-8 (an LMDB key holds 511); ``device``, ``country``,
``region`` and ``weather`` at most :data:`MAX_CONTEXT_BYTES` (they become segment and
context keys); ``intent`` and ``query`` at most :data:`MAX_QUERY_BYTES` with no word longer
than :data:`MAX_WORD_BYTES` (each word becomes an ``intent=<word>`` key); ``price`` and
``qty`` finite, not negative, at most :data:`MAX_AMOUNT`; ``ts`` inside a :class:`TimeWindow`
(by default 2000-01-01 to the decoder's clock plus a day).

>>> ok, bad = decode_events(b'{"v":1,"id":"e1","type":"view","user":7,"item":"mug","ts":1700000000000}')
>>> ok[0].user, ok[0].item, ok[0].ts_seconds, bad
('7', 'mug', 1700000000.0, [])
>>> ok, bad = decode_events(b'[{"v":1,"id":"e2","type":"purchase","user":"u"}, {"v":2,"id":"e3"}]')
>>> ok, [(r.index, r.reason) for r in bad]
([], [(0, 'purchase event needs an item'), (1, 'unknown schema version 2')])
>>> decode_item_upserts(b'{"v":1,"item":"mug","category":"kitchen","price":4.5}')[0][0].category
'kitchen'
"""

from __future__ import annotations

import math
import re
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Annotated, Any, Literal

import msgspec

SCHEMA_VERSION = 1
ACCEPTED_VERSIONS = (1,)
EVENT_TYPES = ("view", "add_to_cart", "remove_from_cart", "purchase", "search", "click", "impression")
EventType = Literal["view", "add_to_cart", "remove_from_cart", "purchase", "search", "click", "impression"]
TYPES_WITHOUT_ITEM = frozenset({"search"})

# Byte limits (UTF-8) of what becomes an LMDB or KV key somewhere downstream.
MAX_ID_BYTES = 256
MAX_CONTEXT_BYTES = 64
MAX_QUERY_BYTES = 1024
MAX_WORD_BYTES = 64
MAX_UA_BYTES = 1024
MAX_REC_ID_BYTES = 128
MAX_AMOUNT = 1e12

_Id = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_ID_BYTES)]
_Text = Annotated[str, msgspec.Meta(max_length=4096)]
_Short = Annotated[str, msgspec.Meta(max_length=MAX_CONTEXT_BYTES)]
_Amount = Annotated[float, msgspec.Meta(ge=0, le=MAX_AMOUNT)]
_WORD = re.compile(r"\S{%d,}" % (MAX_WORD_BYTES // 4 + 1))


def _check_bytes(name: str, value: str | None, limit: int) -> None:
    """Raises ValueError when ``value`` is longer than ``limit`` bytes of UTF-8 (or is not
    encodable: a lone surrogate). Cheap for short text: only long strings are encoded."""
    if value is None or len(value) * 4 <= limit and value.isascii():
        return
    try:
        n = len(value.encode())
    except UnicodeEncodeError:
        raise ValueError(f"`{name}` is not valid Unicode text") from None
    if n > limit:
        raise ValueError(f"`{name}` is {n} bytes of UTF-8, more than {limit}")


def _check_words(name: str, value: str | None) -> None:
    _check_bytes(name, value, MAX_QUERY_BYTES)
    if value is None:
        return
    for m in _WORD.finditer(value):
        if len(m.group().encode()) > MAX_WORD_BYTES:
            raise ValueError(f"`{name}` has a word of more than {MAX_WORD_BYTES} bytes")


class Context(msgspec.Struct, omit_defaults=True):
    """What the producer knows about the shopper's situation; the engine fills the rest."""

    device: _Short | None = None
    ua: Annotated[str, msgspec.Meta(max_length=MAX_UA_BYTES)] | None = None
    country: _Short | None = None
    region: _Short | None = None
    lat: Annotated[float, msgspec.Meta(ge=-90, le=90)] | None = None
    lon: Annotated[float, msgspec.Meta(ge=-180, le=180)] | None = None
    weather: _Short | None = None
    intent: Annotated[str, msgspec.Meta(max_length=MAX_QUERY_BYTES)] | None = None

    def __post_init__(self) -> None:
        # Fast path (every event pays it): ASCII text within the limit in characters is within
        # it in bytes; anything else takes the byte checks.
        d, c, r, w, ua = self.device, self.country, self.region, self.weather, self.ua
        if not (
            (d is None or (d.isascii() and len(d) <= MAX_CONTEXT_BYTES))
            and (c is None or (c.isascii() and len(c) <= MAX_CONTEXT_BYTES))
            and (r is None or (r.isascii() and len(r) <= MAX_CONTEXT_BYTES))
            and (w is None or (w.isascii() and len(w) <= MAX_CONTEXT_BYTES))
            and (ua is None or (ua.isascii() and len(ua) <= MAX_UA_BYTES))
        ):
            for name in ("device", "country", "region", "weather"):
                _check_bytes(f"context.{name}", getattr(self, name), MAX_CONTEXT_BYTES)
            _check_bytes("context.ua", ua, MAX_UA_BYTES)
        if self.intent is not None:
            _check_words("context.intent", self.intent)


class Event(msgspec.Struct, omit_defaults=True):
    """One shopper event, schema v1."""

    v: int
    id: _Id
    type: EventType
    user: _Id | int
    item: _Id | int | None = None
    session: _Id | None = None
    query: Annotated[str, msgspec.Meta(max_length=MAX_QUERY_BYTES)] | None = None
    ts: int | float | datetime | None = None
    context: Context | None = None
    rec_id: Annotated[str, msgspec.Meta(max_length=MAX_REC_ID_BYTES)] | None = None
    price: _Amount | None = None
    qty: _Amount | None = None

    def __post_init__(self) -> None:
        # Normalise ids to text, so 7 and "7" are the same user.
        if not isinstance(self.user, str):
            self.user = str(self.user)
        if self.item is not None and not isinstance(self.item, str):
            self.item = str(self.item)
        # Fast path, as in Context: ASCII ids within the limit in characters need no encoding.
        i, u, it, s, r = self.id, self.user, self.item, self.session, self.rec_id
        if not (
            (i.isascii() and len(i) <= MAX_ID_BYTES)
            and (u.isascii() and len(u) <= MAX_ID_BYTES)
            and (it is None or (it.isascii() and len(it) <= MAX_ID_BYTES))
            and (s is None or (s.isascii() and len(s) <= MAX_ID_BYTES))
            and (r is None or (r.isascii() and len(r) <= MAX_REC_ID_BYTES))
        ):
            _check_bytes("id", i, MAX_ID_BYTES)
            _check_bytes("user", u, MAX_ID_BYTES)
            _check_bytes("item", it, MAX_ID_BYTES)
            _check_bytes("session", s, MAX_ID_BYTES)
            _check_bytes("rec_id", r, MAX_REC_ID_BYTES)
        if self.query is not None:
            _check_words("query", self.query)
        if self.type in TYPES_WITHOUT_ITEM:
            if not self.query and self.item is None:
                raise ValueError(f"{self.type} event needs a query")
        elif self.item is None:
            raise ValueError(f"{self.type} event needs an item")

    @property
    def ts_seconds(self) -> float | None:
        """``ts`` as seconds since the epoch (RFC 3339 without an offset is UTC)."""
        return _seconds(self.ts)


class ItemUpsert(msgspec.Struct, omit_defaults=True):
    """An item catalog upsert, on subject ``recofast.events.catalog``. Fields left out keep
    their previous value."""

    v: int
    item: _Id | int
    category: Annotated[str, msgspec.Meta(max_length=MAX_ID_BYTES)] | None = None
    title: _Text | None = None
    text: Annotated[str, msgspec.Meta(max_length=65536)] | None = None
    price: _Amount | None = None
    in_stock: bool | None = None
    ts: int | float | datetime | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.item, str):
            self.item = str(self.item)
        _check_bytes("item", self.item, MAX_ID_BYTES)
        _check_bytes("category", self.category, MAX_ID_BYTES)
        _check_bytes("title", self.title, 4 * 4096)
        _check_bytes("text", self.text, 4 * 65536)


@dataclass(frozen=True)
class TimeWindow:
    """The event times accepted at the door: from ``earliest`` (epoch seconds) to the
    decoder's clock plus ``max_future`` seconds. ``None`` bounds are open (offline logs).

    >>> w = TimeWindow()
    >>> w.check(1_700_000_000.0, now=1_700_000_000.0), w.check(1e300, now=1_700_000_000.0)[:33]
    (None, 'event time 1e+300 is after the ac')
    """

    earliest: float | None = 946_684_800.0  # 2000-01-01T00:00:00Z
    max_future: float | None = 86_400.0

    def check(self, ts: float | None, now: float | None = None) -> str | None:
        """None when ``ts`` is acceptable (or absent), else the reason."""
        if ts is None:
            return None
        if not math.isfinite(ts):
            return f"event time {ts!r} is not a finite number"
        if self.earliest is not None and ts < self.earliest:
            return f"event time {ts!r} is before the accepted window (earliest {self.earliest:.0f} s)"
        if self.max_future is not None:
            limit = (time.time() if now is None else now) + self.max_future
            if ts > limit:
                return f"event time {ts!r} is after the accepted window (at most {self.max_future:.0f} s ahead of the clock)"
        return None


DEFAULT_WINDOW = TimeWindow()
OPEN_WINDOW = TimeWindow(earliest=None, max_future=None)


class _Version(msgspec.Struct):
    v: Any = None


@dataclass(frozen=True)
class Rejected:
    """An event that did not pass: its position in the message, the reason, and its bytes."""

    index: int
    reason: str
    raw: bytes


_event = msgspec.json.Decoder(Event)
_events = msgspec.json.Decoder(list[Event])
_raws = msgspec.json.Decoder(list[msgspec.Raw])
_version = msgspec.json.Decoder(_Version)
_item = msgspec.json.Decoder(ItemUpsert)
_items = msgspec.json.Decoder(list[ItemUpsert])
_encoder = msgspec.json.Encoder()


def _seconds(ts: int | float | datetime | None) -> float | None:
    if ts is None:
        return None
    if isinstance(ts, datetime):
        if ts.tzinfo is None:
            ts = ts.replace(tzinfo=timezone.utc)
        return ts.timestamp()
    try:
        return ts / 1000.0
    except OverflowError:  # an int too large for a float
        return math.inf


def _reason(raw: bytes, err: Exception, accepted: tuple[int, ...]) -> str:
    try:
        v = _version.decode(raw).v
    except (msgspec.DecodeError, msgspec.ValidationError):
        v = None
    if v is None:
        return "missing schema version `v`" if raw.lstrip()[:1] == b"{" else str(err)
    if v not in accepted:
        return f"unknown schema version {v}"
    return str(err)


def _is_list(body: bytes) -> bool:
    return body.lstrip()[:1] == b"["


def _split(body: bytes, what: str) -> tuple[list[bytes], list[Rejected]]:
    """The raw items of a message body (an object, or an array of them)."""
    if not _is_list(body):
        return [body], []
    try:
        return [bytes(r) for r in _raws.decode(body)], []
    except (msgspec.DecodeError, msgspec.ValidationError) as e:
        return [], [Rejected(0, f"not a JSON array of {what}: {e}", body)]


def _decode_each(raws: list[bytes], decoder: Any, accepted: tuple[int, ...]) -> tuple[list[Any], list[Rejected]]:
    """Decodes items one by one: the valid ones in order, the others with a reason each."""
    ok: list[Any] = []
    bad: list[Rejected] = []
    for i, raw in enumerate(raws):
        try:
            x = decoder.decode(raw)
        except (msgspec.DecodeError, msgspec.ValidationError, ValueError) as e:
            bad.append(Rejected(i, _reason(raw, e, accepted), raw))
            continue
        if x.v not in accepted:
            bad.append(Rejected(i, f"unknown schema version {x.v}", raw))
        else:
            ok.append(x)
    return ok, bad


def _check_times(items: list[Any], window: TimeWindow | None, now: float | None) -> list[str | None]:
    if window is None or window == OPEN_WINDOW:
        return [None] * len(items)
    now = time.time() if now is None else now
    return [window.check(_seconds(x.ts), now) for x in items]


def _apply_window(
    items: list[Any], bad: list[Rejected], window: TimeWindow | None, now: float | None, raws: list[bytes] | bytes
) -> tuple[list[Any], list[Rejected]]:
    """Moves the items whose time is outside the window to the rejected list (``raws``: the
    raw bytes of each item, or the whole message body when every item decoded)."""
    reasons = _check_times(items, window, now)
    if not any(reasons):
        return items, bad
    if isinstance(raws, bytes):
        raws = _split(raws, "events")[0] if _is_list(raws) else [raws]
    # Positions in the message: the items that decoded are those not rejected already.
    taken = {r.index for r in bad}
    positions = [i for i in range(len(items) + len(bad)) if i not in taken]
    ok = []
    for pos, x, r, raw in zip(positions, items, reasons, raws):
        if r is None:
            ok.append(x)
        else:
            bad.append(Rejected(pos, r, raw))
    bad.sort(key=lambda r: r.index)
    return ok, bad


def decode_events(
    body: bytes, accepted: tuple[int, ...] = ACCEPTED_VERSIONS, window: TimeWindow | None = DEFAULT_WINDOW, now: float | None = None
) -> tuple[list[Event], list[Rejected]]:
    """Decodes one message body (an event or an array of events); returns the valid events
    in order and the rejected ones with a reason each. Never raises on bad input. Event
    times outside ``window`` (read against ``now``, default the clock) are rejected;
    ``window=None`` accepts any time (offline logs)."""
    try:
        evs = _events.decode(body) if _is_list(body) else [_event.decode(body)]
        if all(e.v in accepted for e in evs):
            return _apply_window(evs, [], window, now, body)
    except (msgspec.DecodeError, msgspec.ValidationError, ValueError):
        pass
    # The slow path: find the bad ones one by one.
    raws, bad = _split(body, "events")
    if bad:
        return [], bad
    ok, bad = _decode_each(raws, _event, accepted)
    taken = {r.index for r in bad}
    return _apply_window(ok, bad, window, now, [r for i, r in enumerate(raws) if i not in taken])


def decode_item_upserts(
    body: bytes, accepted: tuple[int, ...] = ACCEPTED_VERSIONS, window: TimeWindow | None = DEFAULT_WINDOW, now: float | None = None
) -> tuple[list[ItemUpsert], list[Rejected]]:
    """Like :func:`decode_events`, for catalog upserts. Never raises on bad input.

    >>> decode_item_upserts(b'[{"v": 1, "item": "mug"}, {"v": 1, broken')[1][0].reason[:35]
    'not a JSON array of catalog upserts'
    """
    raws, bad = _split(body, "catalog upserts")
    if bad:
        return [], bad
    ok, bad = _decode_each(raws, _item, accepted)
    taken = {r.index for r in bad}
    return _apply_window(ok, bad, window, now, [r for i, r in enumerate(raws) if i not in taken])


def encode(obj: Event | ItemUpsert | list[Any]) -> bytes:
    """JSON bytes of an event, an upsert, or a list of them (a packed message)."""
    return _encoder.encode(obj)


def make_event(id: str, type: str, user: str, item: str | None = None, ts_ms: int | None = None, **fields: Any) -> Event:
    """Builds and validates an :class:`Event` (``ts_ms`` defaults to now)."""
    if "context" in fields and isinstance(fields["context"], dict):
        fields["context"] = Context(**fields["context"])
    ev = Event(v=SCHEMA_VERSION, id=id, type=type, user=user, item=item, ts=int(time.time() * 1000) if ts_ms is None else ts_ms, **fields)  # type: ignore[arg-type]
    return _event.decode(encode(ev))


def json_schema() -> dict[str, Any]:
    """The JSON Schema of event v1 (what the schema registry stores)."""
    return msgspec.json.schema(Event)


__all__ = [
    "ACCEPTED_VERSIONS",
    "DEFAULT_WINDOW",
    "MAX_CONTEXT_BYTES",
    "MAX_ID_BYTES",
    "MAX_QUERY_BYTES",
    "MAX_WORD_BYTES",
    "OPEN_WINDOW",
    "TimeWindow",
    "EVENT_TYPES",
    "SCHEMA_VERSION",
    "Context",
    "Event",
    "ItemUpsert",
    "Rejected",
    "decode_events",
    "decode_item_upserts",
    "encode",
    "json_schema",
    "make_event",
]
