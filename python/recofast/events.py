"""Event schema v1 and the item catalog upsert (re-exported from :mod:`recofast_sidecar.events`).

The validators live in the sidecar package, so the edge server and the engine check events
against one definition. An event is one JSON object; a NATS message carries one event or a
JSON array of events::

    {"v": 1, "id": "e-1", "type": "view", "user": "u1", "item": "mug",
     "ts": 1700000000000, "context": {"ua": "Mozilla/5.0 (iPhone ...)", "country": "GB"}}

See :mod:`recofast_sidecar.events` for every field.

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

from recofast_sidecar import events as _v1
from recofast_sidecar.events import (
    ACCEPTED_VERSIONS,
    DEFAULT_WINDOW,
    EVENT_TYPES,
    MAX_CONTEXT_BYTES,
    MAX_ID_BYTES,
    MAX_QUERY_BYTES,
    MAX_WORD_BYTES,
    OPEN_WINDOW,
    SCHEMA_VERSION,
    TYPES_WITHOUT_ITEM,
    Context,
    Event,
    EventType,
    ItemUpsert,
    Rejected,
    TimeWindow,
    _seconds,
    decode_events,
    decode_item_upserts,
    encode,
    json_schema,
    make_event,
)

__all__ = list(_v1.__all__)
_ = (TYPES_WITHOUT_ITEM, EventType, _seconds)  # also used by the engine
