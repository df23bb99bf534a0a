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

_Id = Annotated[str, msgspec.Meta(min_length=1, max_length=512)]
_Text = Annotated[str, msgspec.Meta(max_length=4096)]


class Context(msgspec.Struct, omit_defaults=True):
    """What the producer knows about the shopper's situation; the engine fills the rest."""

    device: _Text | None = None
    ua: _Text | None = None
    country: _Text | None = None
    region: _Text | None = None
    lat: Annotated[float, msgspec.Meta(ge=-90, le=90)] | None = None
    lon: Annotated[float, msgspec.Meta(ge=-180, le=180)] | None = None
    weather: _Text | None = None
    intent: _Text | None = None


class Event(msgspec.Struct, omit_defaults=True):
    """One shopper event, schema v1."""

    v: int
    id: _Id
    type: EventType
    user: _Id | int
    item: _Id | int | None = None
    session: _Text | None = None
    query: _Text | None = None
    ts: int | float | datetime | None = None
    context: Context | None = None
    rec_id: _Text | None = None
    price: float | None = None
    qty: float | None = None

    def __post_init__(self) -> None:
        # Normalise ids to text, so 7 and "7" are the same user.
        if not isinstance(self.user, str):
            self.user = str(self.user)
        if self.item is not None and not isinstance(self.item, str):
            self.item = str(self.item)
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
    category: _Text | None = None
    title: _Text | None = None
    text: Annotated[str, msgspec.Meta(max_length=65536)] | None = None
    price: float | None = None
    in_stock: bool | None = None
    ts: int | float | datetime | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.item, str):
            self.item = str(self.item)


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
    return ts / 1000.0


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


def decode_events(body: bytes, accepted: tuple[int, ...] = ACCEPTED_VERSIONS) -> tuple[list[Event], list[Rejected]]:
    """Decodes one message body (an event or an array of events); returns the valid events
    in order and the rejected ones with a reason each. Never raises on bad input."""
    try:
        evs = _events.decode(body) if _is_list(body) else [_event.decode(body)]
        if all(e.v in accepted for e in evs):
            return evs, []
    except (msgspec.DecodeError, msgspec.ValidationError, ValueError):
        pass
    # The slow path: find the bad ones one by one.
    raws, bad = _split(body, "events")
    return _decode_each(raws, _event, accepted) if not bad else ([], bad)


def decode_item_upserts(body: bytes, accepted: tuple[int, ...] = ACCEPTED_VERSIONS) -> tuple[list[ItemUpsert], list[Rejected]]:
    """Like :func:`decode_events`, for catalog upserts. Never raises on bad input.

    >>> decode_item_upserts(b'[{"v": 1, "item": "mug"}, {"v": 1, broken')[1][0].reason[:35]
    'not a JSON array of catalog upserts'
    """
    raws, bad = _split(body, "catalog upserts")
    return _decode_each(raws, _item, accepted) if not bad else ([], bad)


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
