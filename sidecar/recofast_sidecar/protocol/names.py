"""Names shared by the engine and the sidecar: NATS subjects, the stream, KV buckets,
LMDB databases and HTTP paths. Use these constants, never the literal strings."""

# -- NATS -----------------------------------------------------------------------------------
STREAM = "RECOFAST_EVENTS"
"""The JetStream stream holding every event and catalog message."""
EVENTS_SUBJECT_PREFIX = "recofast.events"
EVENTS_SUBJECTS = f"{EVENTS_SUBJECT_PREFIX}.>"
"""Producers publish to ``recofast.events.<partition>``."""
CATALOG_SUBJECT = f"{EVENTS_SUBJECT_PREFIX}.catalog"
"""Item catalog upserts travel in the same stream, so they are ordered with the events."""
FORGET_SUBJECT = f"{EVENTS_SUBJECT_PREFIX}.forget"
"""``recofast forget`` requests (``{"v": 1, "user": ...}``), in the event stream so they are
applied in order with the events and survive a restart."""
FORGOTTEN_SUBJECT = "recofast.forgotten"
"""The engine confirms each applied forget request here (core NATS, not stored)."""
ALERTS_SUBJECT = "recofast.alerts"
"""The engine's drift, adaptation and rollback alerts (JSON, core NATS, not stored)."""
DLQ_SUBJECT = "recofast.dlq"
"""Invalid events and unknown schema versions, with the reason in the ``Recofast-Reason`` header."""
DLQ_STREAM = "RECOFAST_DLQ"
"""The stream that keeps the dead letters."""
DLQ_REASON_HEADER = "Recofast-Reason"
DLQ_SEQ_HEADER = "Recofast-Stream-Seq"
DLQ_SOURCE_HEADER = "Recofast-Source"
"""Set to ``sidecar`` on events the sidecar rejected at the door (they never reached the stream)."""
MSG_ID_HEADER = "Nats-Msg-Id"
CONSUMER = "recofast-engine"
"""The engine's durable pull consumer."""
SCHEMA_BUCKET = "recofast_schemas"
"""NATS KV bucket: key ``event.v<N>`` → JSON description of an accepted schema version."""
SCHEMA_KEY_PREFIX = "event.v"

# -- LMDB -----------------------------------------------------------------------------------
DB_USER_LISTS = b"user_lists"
DB_ITEMS = b"items"
DB_SEGMENTS = b"segments"
DB_META = b"meta"
META_RECORD_KEY = b"state"
"""The key of the meta record in ``meta``."""
DB_CONTEXT = b"context"
"""Context affinity lists and the list of fresh items (see :mod:`recofast_sidecar.protocol.codec`)."""
DB_SIMILAR = b"similar"
"""Each item's neighbours as the engine exports them (what ``/v1/items/{id}/similar`` serves)."""
LMDB_DBS = (DB_USER_LISTS, DB_ITEMS, DB_SEGMENTS, DB_META, DB_CONTEXT, DB_SIMILAR)
OPTIONAL_DBS = (DB_CONTEXT, DB_SIMILAR)
"""Databases a store written by an older engine may lack (a reader treats them as empty)."""

# -- HTTP (engine metrics) ------------------------------------------------------------------
PATH_HEALTHZ = "/healthz"
PATH_METRICS = "/metrics"
IMPRESSIONS_SUBJECT = "recofast.impressions"
"""The sidecar publishes every served list here (JSON arrays of impression records, each with
its ``rec_id``; see :mod:`recofast_sidecar.protocol.feedback`), so clicks and purchases can be
attributed. Outside the events stream on purpose: an impression teaches the model nothing."""
IMPRESSIONS_STREAM = "RECOFAST_IMPRESSIONS"
"""The stream that keeps the impressions until the engine has attributed them."""
LOOP_IMPRESSIONS_CONSUMER = "recofast-loop-impressions"
LOOP_EVENTS_CONSUMER = "recofast-loop-events"
"""The engine's durable consumers of the closed loop: impressions, and the event stream read a
second time for attribution (apart from learning, so neither waits for the other)."""
PATH_LOOP = "/v1/loop"
"""The engine's JSON report of the closed loop (online metrics and experiments)."""

# -- HTTP (the sidecar) ---------------------------------------------------------------------
PATH_ROOT = "/"
"""Redirects to the dashboard when the sidecar option ``dashboard_url`` is set (404 otherwise)."""
PATH_READYZ = "/readyz"
PATH_OPENAPI = "/openapi.json"
PATH_RECOMMENDATIONS = "/v1/recommendations/{user_id}"
PATH_SIMILAR = "/v1/items/{item_id}/similar"
PATH_POPULAR = "/v1/popular"
PATH_EVENTS = "/v1/events"
PATH_TRACK_JS = "/v1/track.js"
PRODUCER_KEY_HEADER = "X-Recofast-Producer-Key"
"""With user tokens on, a shop backend's key (option ``producer_keys``): it may post events for any user."""

LISTS_BUCKET = "recofast_lists"
"""NATS KV bucket mirroring the list store for remote edges (``recofast-sidecar --sync``):
key ``u.<id>``, ``i.<id>``, ``s.<segment key>``, ``c.<context record key>``, ``n.<item id>``
(an item's neighbours; ids in unpadded base64url) or ``meta``;
value the record's codec bytes, exactly as in LMDB. See :mod:`recofast_sidecar.protocol.keys`."""
