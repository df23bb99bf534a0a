"""The edge sidecar: an aiohttp server over a local LMDB list store.

``recofast-sidecar --lmdb DIR [--port 8080] [--nats URL]`` serves

- ``GET /v1/recommendations/{user_id}``: the user's list, filtered (stock, category, price,
  exclusions), re-ranked for the request's context (device, country, hour, weather, intent)
  by the affinities the engine exports, diversified (MMR over categories), with an optional
  exploration slot (new items first); when the user has no list, the popular list of the
  context's segment, then of the whole shop, then a static fallback list. It never answers
  5xx for want of data.
- ``GET /v1/items/{item_id}/similar``, ``GET /v1/popular``,
- ``POST /v1/events`` (validated with :mod:`recofast_sidecar.protocol.events`, published to NATS),
- ``GET /v1/track.js``, ``/healthz``, ``/readyz``, ``/metrics``, ``/openapi.json``.

Every served list is published as an impression (with its ``rec_id``) from a background
queue, so the answer never waits for NATS.

>>> app = create_app(SidecarConfig(lmdb=None, fallback_items=("mug",)))
>>> sorted(r.resource.canonical for r in app.router.routes() if r.method == "GET")[:3]
['/healthz', '/metrics', '/openapi.json']
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import functools
import hashlib
import hmac
import itertools
import json
import logging
import math
import os
import random
import re
import sys
import time
import uuid
import zlib
from collections import Counter, deque
from collections.abc import (
    AsyncIterator,
    Awaitable,
    Callable,
    Iterable,
    Iterator,
    Mapping,
)
from dataclasses import dataclass, field
from typing import Any

import lmdb
from aiohttp import web

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from recofast_sidecar import __version__
from recofast_sidecar.protocol import events as ev
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
from recofast_sidecar.protocol.context import context_keys, request_segments
from recofast_sidecar.protocol.liststore import (
    DEFAULT_MAX_MAP_SIZE,
    ListReader,
    ListWriter,
    ReadTxn,
)
from recofast_sidecar.protocol.names import (
    DB_CONTEXT,
    DB_ITEMS,
    DLQ_REASON_HEADER,
    DLQ_SOURCE_HEADER,
    DLQ_SUBJECT,
    EVENTS_SUBJECT_PREFIX,
    IMPRESSIONS_SUBJECT,
    LISTS_BUCKET,
    MSG_ID_HEADER,
    PATH_EVENTS,
    PATH_HEALTHZ,
    PATH_METRICS,
    PATH_OPENAPI,
    PATH_POPULAR,
    PATH_READYZ,
    PATH_RECOMMENDATIONS,
    PATH_SIMILAR,
    PATH_TRACK_JS,
    PRODUCER_KEY_HEADER,
    SCHEMA_BUCKET,
    SCHEMA_KEY_PREFIX,
)
from recofast_sidecar.rerank import (
    Candidate,
    Filters,
    context_rerank,
    explore_slot,
    mmr,
    passes,
)
from recofast_sidecar.sync import Mirror

log = logging.getLogger("recofast.sidecar")


# -- configuration ----------------------------------------------------------------------------


@dataclass
class SidecarConfig:
    """Every option of the sidecar, with its default. The CLI flags set these."""

    lmdb: str | None = None
    """The list store the engine writes (a directory). None or missing: static fallback only."""
    host: str = "127.0.0.1"
    port: int = 8080
    processes: int = 1
    """Server processes sharing the port (SO_REUSEPORT), each with its own reader and NATS
    connection. More than 1 cannot be combined with ``sync`` (one writer per store)."""
    nats: str | None = None
    """NATS URL for ``POST /v1/events`` and impressions. None: events answer 503."""
    partitions: int = 1
    """Events go to ``recofast.events.p<crc32(user) % partitions>``."""
    fallback_items: tuple[str, ...] = ()
    """Served (source ``fallback``) when no list can be read at all."""
    token_secret: str | None = None
    """When set, ``/v1/recommendations/{user}`` needs ``hex(HMAC-SHA256(secret, user))`` as a
    ``Bearer`` token or ``?token=``: a shopper can fetch only its own list; and ``POST
    /v1/events`` needs that token too, every event in the body for that user (or a producer
    key): a shopper can post only its own events."""
    producer_keys: tuple[str, ...] = ()
    """Keys of shop backends (and other trusted producers): with user tokens on, a request
    with one of them in the ``X-Recofast-Producer-Key`` header may post events for any user.
    Compared in constant time. Prefer ``RECOFAST_SIDECAR_PRODUCER_KEYS`` (comma-separated)."""
    cors_origins: tuple[str, ...] = ()
    """Origins allowed by CORS (``*`` for any). Empty: no CORS headers."""
    max_body: int = 256 * 1024
    """Largest request body in bytes (413 above)."""
    max_events: int = 1000
    """Most events in one ``POST /v1/events``."""
    max_k: int = 200
    impressions: bool = True
    """Publish every served list to ``recofast.impressions`` (when NATS is configured)."""
    impression_queue: int = 10000
    """Impressions waiting beyond this are dropped (and counted), never awaited."""
    reopen_seconds: float = 2.0
    """How often to retry opening a missing or unreadable list store."""
    publish_timeout: float = 2.0
    schema_refresh_seconds: float = 30.0
    """How often the event versions registered in the schema registry (NATS KV bucket
    ``recofast_schemas``) are re-read; posted events must be of a registered version."""
    seed: int | None = None
    """Seed of the exploration draws (None: from the OS)."""
    sync: bool = False
    """Mirror the list store from the NATS KV bucket ``recofast_lists`` into ``lmdb`` (needs
    ``nats``); this sidecar is then the one writer of its local store."""
    sync_bucket: str = LISTS_BUCKET
    map_size: int = 1 << 30
    """Initial LMDB map size when this sidecar writes the store (``sync``); doubled as the
    store fills, up to ``max_map_size``."""
    max_map_size: int = DEFAULT_MAX_MAP_SIZE
    """Largest LMDB map the ``sync`` mirror grows its store to (64 GiB): past it the mirror
    fails (logged, counted, retried; ``/readyz`` answers 503) instead of writing."""
    context_weight: float = 0.4
    """Context re-rank of personal lists: each score times ``exp(context_weight * Σ affinity)``
    over the request's context keys (affinities exported by the engine). The default is the
    model's own ``w_ctx``; 0 turns it off."""
    timezone: str = "UTC"
    """The shop's time zone (IANA name, as the engine's): a request without ``hour`` is in
    the hour and weekday of the server clock there."""


# -- the store --------------------------------------------------------------------------------


class Store:
    """The LMDB reader, opened lazily and reopened when it goes missing. Every read returns
    None instead of raising when the store is absent or a record is unreadable.

    A handler reads in one transaction (``with store.request():``), so one request sees one
    commit and pays for one transaction; reads outside a request make their own. A store
    the engine has grown (even past this reader's map) is followed by the codec's reader,
    never answered from the fallback lists."""

    MAX_DECODED_ITEMS = 200_000
    MAX_CONTEXT_RECORDS = 100_000
    MAX_CONTEXT_SUMS = 10_000

    def __init__(self, path: str | None, reader: ListReader | None = None) -> None:
        self.path = path
        self.reader = reader
        self._owned = reader is None
        self.error: str | None = None if reader is not None else "not opened yet"
        self._t: ReadTxn | None = None  # the current request's transaction
        # Decoded item records by id, with the raw bytes they came from (reused while equal).
        self._decoded: dict[str, tuple[bytes, ItemRecord]] = {}
        # Decoded context records by key, with the record's header (format, count, model
        # version, write time): a record is decoded once per write, not once per request.
        self._ctx: dict[str, tuple[bytes, Any]] = {}
        self._sums: dict[tuple[int, ...], tuple[list[dict[str, float]], dict[str, float]]] = {}

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
        self.error = None
        return True

    def _set_error(self, msg: str) -> None:
        if msg != self.error:
            log.warning("list store unavailable, serving fallback lists: %s", msg)
        self.error = msg

    def _fail(self, e: Exception) -> None:
        self._set_error(f"read failed: {e}")
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

    def affinities(self, keys: Iterable[str]) -> list[dict[str, float]]:
        """The summed affinities (``{item: Σ affinity}``) of these context keys' lists, read
        in one transaction, as a list of one mapping (empty when no key has a list). The sum
        is kept per combination of decoded lists, so a context seen before costs a lookup."""
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
        return self._read(lambda t: self._cached(t, FRESH_KEY, lambda b: decode_list(b).items)) or []

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
        with self.request():
            t = self._t
            # The raw transaction and database handle: this loop runs for every candidate.
            get = None
            if t is not None and self.reader is not None and (h := self.reader._dbs[DB_ITEMS]) is not None:
                get = functools.partial(t.txn.get, db=h)
            try:
                for name, cands in sources:
                    for c in cands:
                        if c.item in seen:
                            continue
                        seen.add(c.item)
                        rec = self._item(get, c.item)
                        if passes(c.item, rec, f):
                            out.append(c)
                            meta[c.item] = rec
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
        if raw is None:
            return None
        hit = self._decoded.get(item)
        if hit is not None and hit[0] == raw:
            return hit[1]
        raw = bytes(raw)
        try:
            rec = decode_item(raw)
        except (CodecError, UnicodeError):
            return None
        if len(self._decoded) >= self.MAX_DECODED_ITEMS:
            self._decoded.clear()
        self._decoded[item] = (raw, rec)
        return rec

    def meta_version(self) -> int:
        m = self._read(lambda t: t.meta())
        return 0 if m is None else m.model_version

    def close(self) -> None:
        self._t = None
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
                st._t = ctx.__enter__()
            except (lmdb.Error, CodecError) as e:
                st._fail(e)
                return self
            self.ctx = ctx
        return self

    def __exit__(self, *exc: object) -> None:
        ctx, self.ctx = self.ctx, None
        if ctx is not None:
            self.store._t = None
            ctx.__exit__(None, None, None)


_CTX_HEAD = 20  # a list record's header: format, flags, count, model version, time


# -- metrics ----------------------------------------------------------------------------------


class Metrics:
    """Counters and gauges rendered in the Prometheus text format."""

    def __init__(self) -> None:
        self.counters: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
        self.help: dict[str, tuple[str, str]] = {}
        self.gauges: dict[str, Callable[[], float]] = {}

    def counter(self, name: str, doc: str) -> None:
        self.help[name] = ("counter", doc)

    def gauge(self, name: str, doc: str, fn: Callable[[], float]) -> None:
        self.help[name] = ("gauge", doc)
        self.gauges[name] = fn

    def inc(self, name: str, value: float = 1.0, **labels: str) -> None:
        key = (name, tuple(sorted(labels.items())))
        self.counters[key] = self.counters.get(key, 0.0) + value

    def value(self, name: str, **labels: str) -> float:
        return self.counters.get((name, tuple(sorted(labels.items()))), 0.0)

    def render(self) -> str:
        lines = []
        for name, (kind, doc) in self.help.items():
            lines.append(f"# HELP {name} {doc}")
            lines.append(f"# TYPE {name} {kind}")
            if kind == "gauge":
                lines.append(f"{name} {self.gauges[name]():g}")
                continue
            for (n, labels), v in sorted(self.counters.items()):
                if n == name:
                    lab = ",".join(f'{k}="{_esc(val)}"' for k, val in labels)
                    lines.append(f"{name}{{{lab}}} {v:g}" if lab else f"{name} {v:g}")
        return "\n".join(lines) + "\n"


def _esc(s: str) -> str:
    return s.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


# -- application state ------------------------------------------------------------------------


@dataclass
class State:
    config: SidecarConfig
    store: Store
    metrics: Metrics = field(default_factory=Metrics)
    nc: Any = None  # nats.aio.client.Client once connected
    js: Any = None
    impressions: asyncio.Queue[dict[str, Any]] | None = None
    exposure: Counter[str] = field(default_factory=Counter)
    rng: random.Random = field(default_factory=random.Random)
    latencies: deque[float] = field(default_factory=lambda: deque(maxlen=4096))
    accepted: tuple[int, ...] = ev.ACCEPTED_VERSIONS
    """Event versions posted events may have: this package's, narrowed to the registry's."""
    writer: ListWriter | None = None
    mirror: Mirror | None = None
    mirror_task: asyncio.Task[None] | None = None
    clock: Clock = field(default_factory=lambda: Clock("UTC"))


STATE = web.AppKey("state", State)


class BadRequest(Exception):
    """Bad input: answered with ``status`` (a 4xx) and a JSON error."""

    def __init__(self, msg: str, status: int = 400) -> None:
        super().__init__(msg)
        self.msg = msg
        self.status = status


# -- input parsing ----------------------------------------------------------------------------

_TOKEN = re.compile(r"^[A-Za-z0-9_.:\-]{1,64}$")
_ID_MAX = 512
_INTENT = re.compile(r"^[\w .,'\-]{1,128}$", re.UNICODE)


def _int(q: Any, name: str, default: int, lo: int, hi: int) -> int:
    raw = q.get(name)
    if raw is None:
        return default
    try:
        v = int(raw)
    except ValueError:
        raise BadRequest(f"`{name}` must be an integer") from None
    if not lo <= v <= hi:
        raise BadRequest(f"`{name}` must be between {lo} and {hi}")
    return v


def _float(q: Any, name: str, lo: float, hi: float) -> float | None:
    raw = q.get(name)
    if raw is None:
        return None
    try:
        v = float(raw)
    except ValueError:
        raise BadRequest(f"`{name}` must be a number") from None
    if not math.isfinite(v) or not lo <= v <= hi:
        raise BadRequest(f"`{name}` must be between {lo:g} and {hi:g}")
    return v


def _token(q: Any, name: str, pattern: re.Pattern[str] = _TOKEN) -> str | None:
    raw = q.get(name)
    if raw is None:
        return None
    if not pattern.match(raw):
        raise BadRequest(f"`{name}` has an invalid value")
    return raw


def _id(raw: str, what: str) -> str:
    if not raw or len(raw.encode()) > _ID_MAX or any(ord(ch) < 32 for ch in raw):
        raise BadRequest(f"invalid {what}")
    return raw


@dataclass(frozen=True)
class Context:
    device: str | None = None
    country: str | None = None
    hour: int | None = None
    weather: str | None = None
    intent: str | None = None

    def keys(self, clock: tuple[int, int]) -> list[str]:
        """The context keys of the request, as the core normalises them (the hour and weekday
        of ``clock`` when the request gave no hour). Intent first: at most eight keys count."""
        hour, weekday = (self.hour, None) if self.hour is not None else clock
        ck = (self.intent, self.device, self.country, self.weather, hour, weekday)
        hit = _KEYS_CACHE.get(ck)
        if hit is None:
            hit = context_keys(
                {"intent": self.intent, "device": self.device, "country": self.country, "weather": self.weather,
                 "hour": hour, "weekday": weekday}
            )
            if len(_KEYS_CACHE) >= 10_000:
                _KEYS_CACHE.clear()
            _KEYS_CACHE[ck] = hit
        return hit

    def segments(self) -> list[str]:
        """Segment keys to try, most specific first (as the engine writes them), then ``all``."""
        return request_segments(self.country, self.device, self.hour)


_KEYS_CACHE: dict[tuple[Any, ...], list[str]] = {}


class Clock:
    """Hour of day and weekday (0 = Monday) now, in a time zone; recomputed once a minute."""

    def __init__(self, timezone: str) -> None:
        from zoneinfo import ZoneInfo

        self.tz = ZoneInfo(timezone)
        self._until = 0.0
        self._now = (0, 0)

    def now(self) -> tuple[int, int]:
        t = time.time()
        if t >= self._until:
            from datetime import datetime

            d = datetime.fromtimestamp(t, self.tz)
            self._now = (d.hour, d.weekday())
            self._until = t - (t % 60) + 60  # offsets change on whole minutes at most
        return self._now


def _context(q: Any) -> Context:
    country = _token(q, "country")
    if country is not None:
        if not re.fullmatch(r"[A-Za-z]{2,3}", country):
            raise BadRequest("`country` must be a 2 or 3 letter code")
        country = country.upper()
    device = _token(q, "device")
    return Context(
        device=None if device is None else device.lower(),
        country=country,
        hour=_int(q, "hour", -1, 0, 23) if "hour" in q else None,
        weather=_token(q, "weather"),
        intent=_token(q, "intent", _INTENT),
    )


def _filters(q: Any) -> Filters:
    lo = _float(q, "min_price", 0.0, 1e12)
    hi = _float(q, "max_price", 0.0, 1e12)
    if lo is not None and hi is not None and lo > hi:
        raise BadRequest("`min_price` is above `max_price`")
    exclude: frozenset[str] = frozenset()
    raw = q.get("exclude")
    if raw:
        ids = [x for x in raw.split(",") if x]
        if len(ids) > 1000:
            raise BadRequest("`exclude` holds at most 1000 ids")
        exclude = frozenset(_id(x, "id in `exclude`") for x in ids)
    cat = q.get("category")
    if cat is not None and (not cat or len(cat) > 256):
        raise BadRequest("`category` must be 1 to 256 characters")
    return Filters(category=cat, min_price=lo, max_price=hi, exclude=exclude)


# -- handlers ---------------------------------------------------------------------------------


def _given_token(request: web.Request) -> str | None:
    """The user token of a request: an ``Authorization: Bearer`` header, else ``?token=``."""
    auth = request.headers.get("Authorization", "")
    tok = auth[7:].strip() if auth[:7].lower() == "bearer " else request.query.get("token")
    return tok or None


def _token_is(secret: str, tok: str, user: str) -> bool:
    """Whether ``tok`` is ``user``'s token (constant time; any text, non-ASCII too, is safe)."""
    return tok.isascii() and hmac.compare_digest(tok.encode(), user_token(secret, user).encode())


def _check_token(request: web.Request, user: str) -> None:
    secret = request.app[STATE].config.token_secret
    if not secret:
        return
    tok = _given_token(request)
    if not tok:
        raise BadRequest("a user token is required", 401)
    if not _token_is(secret, tok, user):
        raise BadRequest("the token does not belong to this user", 403)


def _is_producer(key: str, keys: tuple[str, ...]) -> bool:
    """Whether ``key`` is one of the producer keys, compared in constant time with each."""
    try:
        given = key.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        return False
    found = False
    for k in keys:
        found |= hmac.compare_digest(given, k.encode())
    return found


def _events_token(request: web.Request) -> str | None:
    """Who may post these events: None when anyone may post for any user (no token secret,
    or a valid producer key), else the user token every event's user must match. 401 without
    credentials, 403 with a wrong producer key; read before the body is."""
    cfg = request.app[STATE].config
    if not cfg.token_secret:
        return None
    key = request.headers.get(PRODUCER_KEY_HEADER)
    if key is not None:
        if cfg.producer_keys and _is_producer(key, cfg.producer_keys):
            return None
        raise BadRequest("the producer key is not valid", 403)
    tok = _given_token(request)
    if not tok:
        raise BadRequest("posting events needs the shopper's user token (or a producer key)", 401)
    return tok


def _check_event_users(secret: str, tok: str, raw: list[Any], ok: list[ev.Event]) -> None:
    """403 unless every event of the body (valid or not) is for the token's user."""
    users = {str(e.user) for e in ok}
    for x in raw:
        if isinstance(x, dict):
            u = x.get("user")
            if isinstance(u, str) or (isinstance(u, int) and not isinstance(u, bool)):
                users.add(str(u))
    for u in users:
        if not _token_is(secret, tok, u):
            raise BadRequest("the user token does not belong to the user of every event", 403)


def user_token(secret: str, user: str) -> str:
    """The token a shop backend hands to ``user``: hex HMAC-SHA256 of the user id.

    >>> user_token("s3cret", "u1")[:16]
    '8f0d05b747219f7d'
    """
    return hmac.new(secret.encode(), user.encode(), hashlib.sha256).hexdigest()


def _cands(rec: ListView | None, reason: str) -> Iterator[Candidate]:
    """The list's items as candidates, decoded only as far as they are read (a truncated
    record ends where it breaks)."""
    if rec is not None:
        try:
            for i, sc in rec:
                yield Candidate(i, sc, reason)
        except (CodecError, UnicodeDecodeError):
            return


def _finite(score: float) -> float:
    """A score as JSON can carry it (a NaN or infinite score in the store becomes 0)."""
    return round(score, 6) if math.isfinite(score) else 0.0


def _fallback(cfg: SidecarConfig) -> list[Candidate]:
    return [Candidate(i, 0.0, "fallback") for i in cfg.fallback_items]


def _queue_impression(st: State, rec: dict[str, Any]) -> None:
    q = st.impressions
    if q is None:
        return
    try:
        q.put_nowait(rec)
    except asyncio.QueueFull:
        st.metrics.inc("recofast_sidecar_impressions_dropped_total")


def _answer_list(
    st: State, kind: str, key: str, source: str, model_version: int, items: list[Candidate], extra: dict[str, Any]
) -> web.Response:
    rec_id = uuid.uuid4().hex
    ids = [c.item for c in items]
    if len(st.exposure) > 1_000_000:  # exposure is relative: start over rather than grow
        st.exposure.clear()
    st.exposure.update(ids)
    st.metrics.inc("recofast_sidecar_lists_served_total", endpoint=kind, source=source)
    if ids:
        _queue_impression(
            st,
            {"v": 1, "rec_id": rec_id, "kind": kind, key: extra[key], "items": ids, "source": source,
             "model_version": model_version, "ts": int(time.time() * 1000)},
        )
    body = {
        **extra,
        "rec_id": rec_id,
        "model_version": model_version,
        "source": source,
        "items": [{"item": c.item, "score": _finite(c.score), "reason": c.reason} for c in items],
    }
    return web.json_response(body)


async def recommendations(request: web.Request) -> web.Response:
    st = request.app[STATE]
    cfg = st.config
    user = _id(request.match_info["user_id"], "user id")
    q = request.query
    k = _int(q, "k", 10, 1, cfg.max_k)
    ctx = _context(q)
    flt = _filters(q)
    diversity = _float(q, "diversity", 0.0, 1.0) or 0.0
    explore = _float(q, "explore", 0.0, 1.0) or 0.0
    _check_token(request, user)

    store = st.store
    with store.request():
        personal = store.user_list(user)
        segs = ctx.segments()
        # Context re-rank of the personal list by the affinities the engine exported.
        w = cfg.context_weight
        affs = store.affinities(ctx.keys(st.clock.now())) if w and personal is not None and len(personal) > 1 else []

        # Diversity looks a little beyond k, so it has something to choose from; so does the
        # context re-rank (items below k in the personal list may move up).
        wide = max(k * 3, k + 10)

        def sources() -> Iterator[tuple[str, Iterable[Candidate]]]:
            if personal is not None:
                cands = _cands(personal, "personal")
                if affs:
                    # Re-ranked before the filters read any metadata, so they read k items, not 3k.
                    head = context_rerank(list(itertools.islice(cands, wide)), affs, w)
                    cands = itertools.chain(head, cands)
                yield "personal", cands
            for seg in segs:
                yield ("segment" if seg != "all" else "popular"), _cands(store.segment("popular", seg), f"popular in {seg}")
            yield "fallback", _fallback(cfg)

        want = wide if diversity > 0 else k
        ok, meta, first = store.select(sources(), flt, want)
        source = first or "fallback"
        chosen = mmr(ok, meta, k, diversity) if diversity > 0 else ok[:k]
        if explore > 0 and st.rng.random() < explore:
            # The slot goes to a new item (the engine's fresh list); to a trending one when no
            # new item is left to show.
            have = {c.item for c in chosen}
            fresh = [("fresh", (Candidate(i, 0.0, "fresh") for i in store.fresh() if i not in have))]
            pool, _, _ = store.select(fresh, flt, 1000)
            if not pool:
                trending = ((kind, _cands(store.segment("trending", seg), "trending")) for kind, seg in (("t", segs[0]), ("t", "all")))
                pool, _, _ = store.select(trending, flt, 1000)
            chosen = explore_slot(chosen, pool, st.exposure, 1.0, st.rng, k)
        version = personal.model_version if source == "personal" and personal is not None else store.meta_version()
    return _answer_list(st, "recommendations", "user", source, version, chosen, {"user": user})


async def similar(request: web.Request) -> web.Response:
    st = request.app[STATE]
    cfg = st.config
    item = _id(request.match_info["item_id"], "item id")
    q = request.query
    k = _int(q, "k", 10, 1, cfg.max_k)
    ctx = _context(q)
    flt = _filters(q)
    flt = Filters(flt.category, flt.min_price, flt.max_price, flt.exclude | {item})
    store = st.store
    with store.request():
        # The item's neighbours as the engine exported them (one read); the context's segment
        # list, then the shop's, when it has none (an unknown or a lonely item).
        neighbours = store.similar(item)

        def sources() -> Iterator[tuple[str, Iterable[Candidate]]]:
            if neighbours is not None and len(neighbours):
                yield "similar", _cands(neighbours, "similar")
            for seg in ctx.segments():
                yield "popular", _cands(store.segment("popular", seg), f"popular in {seg}")
            yield "fallback", _fallback(cfg)

        chosen, _, first = store.select(sources(), flt, k)
        source = first or ("popular" if store.available else "fallback")
        version = neighbours.model_version if source == "similar" and neighbours is not None else store.meta_version()
    return _answer_list(st, "similar", "item", source, version, chosen, {"item": item})


async def popular(request: web.Request) -> web.Response:
    st = request.app[STATE]
    q = request.query
    k = _int(q, "k", 10, 1, st.config.max_k)
    seg = q.get("segment", "all")
    if not seg or len(seg) > 256 or not re.fullmatch(r"[A-Za-z0-9=|_.:\-]+", seg):
        raise BadRequest("invalid `segment`")
    kind = q.get("kind", "popular")
    if kind not in ("popular", "trending"):
        raise BadRequest("`kind` must be popular or trending")
    flt = _filters(q)
    with st.store.request():
        rec = st.store.segment(kind, seg)
        chosen, _, first = st.store.select([("popular", _cands(rec, f"{kind} in {seg}")), ("fallback", _fallback(st.config))], flt, k)
    source = first or "fallback"
    version = rec.model_version if rec is not None else 0
    return _answer_list(st, "popular", "segment", source, version, chosen, {"segment": seg, "kind": kind})


async def _dead_letters(st: State, bad: list[ev.Rejected]) -> None:
    """Rejected events go to the dead-letter subject with their reason (as the engine's do),
    so a drifting producer shows where operators look; best effort, never awaited long."""
    nc = st.nc
    if nc is None or not nc.is_connected:
        return
    for r in bad[:100]:
        try:
            await nc.publish(DLQ_SUBJECT, r.raw, headers={DLQ_REASON_HEADER: r.reason[:1000], DLQ_SOURCE_HEADER: "sidecar"})
        except Exception as e:  # noqa: BLE001
            log.warning("dead-lettering a rejected event failed: %s", e)
            return


def _subject(user: str, partitions: int) -> str:
    part = zlib.crc32(user.encode()) % partitions if partitions > 1 else 0
    return f"{EVENTS_SUBJECT_PREFIX}.p{part}"


async def post_events(request: web.Request) -> web.Response:
    st = request.app[STATE]
    cfg = st.config
    tok = _events_token(request)
    body = await request.read()
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise BadRequest("the body is not JSON (or nested too deeply)") from None
    if isinstance(doc, dict) and "events" in doc:
        doc = doc["events"]
        if not isinstance(doc, list):
            raise BadRequest("`events` must be an array")
    items = doc if isinstance(doc, list) else [doc]
    if not items:
        raise BadRequest("no events")
    if len(items) > cfg.max_events:
        raise BadRequest(f"at most {cfg.max_events} events per request", 413)
    try:
        raws = [json.dumps(x, separators=(",", ":")).encode() for x in items]
    except (ValueError, RecursionError):
        raise BadRequest("an event is nested too deeply") from None
    ok, bad = ev.decode_events(b"[" + b",".join(raws) + b"]", st.accepted)
    if tok is not None:
        try:
            _check_event_users(cfg.token_secret or "", tok, items, ok)
        except BadRequest:
            st.metrics.inc("recofast_sidecar_events_total", len(items), result="forbidden")
            raise
    st.metrics.inc("recofast_sidecar_events_total", len(bad), result="rejected")
    rejected = [{"index": r.index, "reason": r.reason} for r in bad]
    if not ok:
        return web.json_response(
            {"error": "no valid events", "status": 400, "accepted": 0, "rejected": len(bad), "errors": rejected}, status=400
        )
    if st.js is None or st.nc is None or not st.nc.is_connected:
        st.metrics.inc("recofast_sidecar_events_total", len(ok), result="unavailable")
        msg = "no NATS configured" if not cfg.nats else "NATS is not connected"
        return web.json_response({"error": f"{msg}: events cannot be accepted", "status": 503}, status=503)
    if bad:
        await _dead_letters(st, bad)
    groups: dict[str, list[ev.Event]] = {}
    for e in ok:
        groups.setdefault(_subject(str(e.user), cfg.partitions), []).append(e)
    try:
        for subject, evs in groups.items():
            if len(evs) == 1:
                msg_id, data = evs[0].id, ev.encode(evs[0])
            else:
                msg_id = "pack-" + hashlib.blake2b("\n".join(e.id for e in evs).encode(), digest_size=12).hexdigest()
                data = ev.encode(evs)
            await st.js.publish(subject, data, headers={MSG_ID_HEADER: msg_id}, timeout=cfg.publish_timeout)
    except Exception as e:  # noqa: BLE001 - any NATS failure is "unavailable", not a crash
        log.warning("publishing events failed: %s", e)
        st.metrics.inc("recofast_sidecar_events_total", len(ok), result="unavailable")
        return web.json_response({"error": f"publishing to NATS failed: {type(e).__name__}", "status": 503}, status=503)
    st.metrics.inc("recofast_sidecar_events_total", len(ok), result="accepted")
    return web.json_response({"accepted": len(ok), "rejected": len(bad), "errors": rejected}, status=202)


TRACK_JS = """\
/* recofast track.js: recofast.track(type, user, item, extra) sends one event v1 to the sidecar.
   With user tokens on, set recofast.token to the shopper's token first (sent as ?token=). */
(function (w) {
  var s = document.currentScript && document.currentScript.src;
  var ep = (s ? s.replace(/\\/v1\\/track\\.js.*$/, "") : "") + "/v1/events";
  function id() {
    return w.crypto && crypto.randomUUID ? crypto.randomUUID() : Date.now() + "-" + Math.random().toString(36).slice(2);
  }
  w.recofast = w.recofast || {};
  w.recofast.track = function (type, user, item, extra) {
    var e = {v: 1, id: id(), type: type, user: String(user), ts: Date.now(), context: {ua: navigator.userAgent}};
    if (item != null) e.item = String(item);
    for (var k in extra || {}) e[k] = extra[k];
    var body = JSON.stringify(e);
    var url = w.recofast.token ? ep + "?token=" + encodeURIComponent(w.recofast.token) : ep;
    /* text/plain keeps a cross-origin beacon a simple request (no CORS preflight). */
    if (!(navigator.sendBeacon && navigator.sendBeacon(url, new Blob([body], {type: "text/plain"})))) {
      fetch(url, {method: "POST", body: body, keepalive: true, headers: {"Content-Type": "text/plain"}});
    }
  };
})(window);
"""


async def track_js(request: web.Request) -> web.Response:
    return web.Response(
        text=TRACK_JS, content_type="application/javascript", charset="utf-8", headers={"Cache-Control": "public, max-age=3600"}
    )


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok", "version": __version__})


def _sync_state(st: State) -> tuple[bool, str] | None:
    """``(ok, what)`` of the ``--sync`` mirror, None without one. Not ok while it catches
    up, while it fails to write or watch, and when its task has died."""
    m = st.mirror
    if m is None:
        return None
    task = st.mirror_task
    if task is not None and task.done():
        exc = None if task.cancelled() else task.exception()
        return False, f"stopped: {type(exc).__name__}: {exc}" if exc else "stopped"
    if m.error is not None:
        return False, f"failing: {m.error}"
    if not m.synced.is_set():
        return False, "catching up"
    return True, "live"


async def readyz(request: web.Request) -> web.Response:
    st = request.app[STATE]
    store_ok = st.store.available
    nats_ok = (not st.config.nats) or (st.nc is not None and st.nc.is_connected)
    sync = _sync_state(st)
    ready = (store_ok or bool(st.config.fallback_items)) and nats_ok and (sync is None or sync[0])
    body = {
        "status": "ready" if ready else "not ready",
        "lmdb": "open" if store_ok else st.store.error,
        "nats": "not configured" if not st.config.nats else ("connected" if nats_ok else "disconnected"),
    }
    if sync is not None:
        body["sync"] = sync[1]
    return web.json_response(body, status=200 if ready else 503)


async def metrics(request: web.Request) -> web.Response:
    return web.Response(text=request.app[STATE].metrics.render(), content_type="text/plain", charset="utf-8")


async def openapi(request: web.Request) -> web.Response:
    return web.json_response(openapi_document())


# -- OpenAPI ----------------------------------------------------------------------------------


def _q(name: str, schema: dict[str, Any], doc: str, required: bool = False) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": required, "schema": schema, "description": doc}


def openapi_document() -> dict[str, Any]:
    """The OpenAPI 3.1 description of every endpoint."""
    err = {"description": "bad input", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
    lst = {"description": "a ranked list", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/List"}}}}
    k = _q("k", {"type": "integer", "minimum": 1, "maximum": 200, "default": 10}, "list length")
    filters = [
        _q("category", {"type": "string", "maxLength": 256}, "only items of this category"),
        _q("min_price", {"type": "number", "minimum": 0}, "only items at or above this price"),
        _q("max_price", {"type": "number", "minimum": 0}, "only items at or below this price"),
        _q("exclude", {"type": "string"}, "comma-separated item ids to leave out"),
    ]
    context = [
        _q("device", {"type": "string", "pattern": _TOKEN.pattern}, "mobile, tablet, desktop, ... (context; unknown values are ignored)"),
        _q("country", {"type": "string", "pattern": "^[A-Za-z]{2,3}$"}, "country code (context)"),
        _q("hour", {"type": "integer", "minimum": 0, "maximum": 23},
           "local hour of day (context; default: the server clock in the configured time zone, for the re-rank only)"),
        _q("weather", {"type": "string", "pattern": _TOKEN.pattern}, "weather label (context)"),
        _q("intent", {"type": "string", "maxLength": 128}, "session intent, e.g. search words (context)"),
    ]
    get = lambda summary, params, resp: {  # noqa: E731
        "get": {"summary": summary, "parameters": params, "responses": {"200": resp, "400": err}}
    }
    text = lambda ct: {"description": "ok", "content": {ct: {"schema": {"type": "string"}}}}  # noqa: E731
    rec = get(
        "A user's recommendations, filtered, diversified, with fallbacks",
        [
            {"name": "user_id", "in": "path", "required": True, "schema": {"type": "string"}},
            k,
            *context,
            *filters,
            _q("diversity", {"type": "number", "minimum": 0, "maximum": 1}, "MMR weight over categories"),
            _q("explore", {"type": "number", "minimum": 0, "maximum": 1}, "probability of one exploration slot"),
            _q("token", {"type": "string"}, "HMAC user token (or an Authorization: Bearer header)"),
        ],
        lst,
    )
    rec["get"]["responses"]["401"] = err
    rec["get"]["responses"]["403"] = err
    return {
        "openapi": "3.1.0",
        "info": {"title": "recofast sidecar", "version": __version__},
        "paths": {
            PATH_RECOMMENDATIONS: rec,
            PATH_SIMILAR: get(
                "Items similar to an item (the neighbours the engine exports), filled from the segment's popular list",
                [{"name": "item_id", "in": "path", "required": True, "schema": {"type": "string"}}, k, *context, *filters],
                lst,
            ),
            PATH_POPULAR: get(
                "Popular or trending list of a segment",
                [
                    k,
                    _q("segment", {"type": "string", "default": "all"}, "e.g. country=GB or all"),
                    _q("kind", {"type": "string", "enum": ["popular", "trending"], "default": "popular"}, "list kind"),
                    *filters,
                ],
                lst,
            ),
            PATH_EVENTS: {
                "post": {
                    "summary": "One event v1, an array, or {events: [...]}; validated and published to NATS",
                    "description": "With user tokens on (token_secret), the shopper's token is required and every event "
                    "must be for that user (403 otherwise, 401 without a token), unless the request carries a producer key.",
                    "parameters": [
                        _q("token", {"type": "string"}, "HMAC user token of the events' user (or an Authorization: Bearer header)"),
                        {"name": PRODUCER_KEY_HEADER, "in": "header", "required": False, "schema": {"type": "string"},
                         "description": "a shop backend's producer key (option producer_keys): may post events for any user"},
                    ],
                    "requestBody": {"required": True, "content": {"application/json": {"schema": {}}, "text/plain": {"schema": {}}}},
                    "responses": {
                        "202": {"description": "accepted", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Accepted"}}}},
                        "400": err,
                        "401": err,
                        "403": err,
                        "413": err,
                        "503": err,
                    },
                }
            },
            PATH_TRACK_JS: {"get": {"summary": "sendBeacon tracking snippet", "responses": {"200": text("application/javascript")}}},
            PATH_HEALTHZ: {"get": {"summary": "liveness", "responses": {"200": {"description": "alive"}}}},
            PATH_READYZ: {"get": {"summary": "readiness: the store (or a fallback list), NATS when configured, and the --sync mirror "
                                  "caught up and not failing; the body says what is not ready",
                                  "responses": {"200": {"description": "ready"}, "503": {"description": "not ready"}}}},
            PATH_METRICS: {"get": {"summary": "Prometheus metrics", "responses": {"200": text("text/plain")}}},
            PATH_OPENAPI: {"get": {"summary": "this document", "responses": {"200": {"description": "OpenAPI 3.1"}}}},
        },
        "components": {
            "schemas": {
                "Error": {"type": "object", "required": ["error"], "properties": {"error": {"type": "string"}, "status": {"type": "integer"}}},
                "List": {
                    "type": "object",
                    "required": ["rec_id", "model_version", "source", "items"],
                    "properties": {
                        "user": {"type": "string"},
                        "item": {"type": "string"},
                        "segment": {"type": "string"},
                        "rec_id": {"type": "string"},
                        "model_version": {"type": "integer"},
                        "source": {"type": "string", "enum": ["personal", "segment", "popular", "similar", "fallback"]},
                        "items": {
                            "type": "array",
                            "items": {
                                "type": "object",
                                "required": ["item", "score", "reason"],
                                "properties": {"item": {"type": "string"}, "score": {"type": "number"}, "reason": {"type": "string"}},
                            },
                        },
                    },
                },
                "Accepted": {
                    "type": "object",
                    "properties": {"accepted": {"type": "integer"}, "rejected": {"type": "integer"}, "errors": {"type": "array"}},
                },
            }
        },
    }


# -- middlewares ------------------------------------------------------------------------------

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _cors_headers(cfg: SidecarConfig, request: web.Request) -> dict[str, str]:
    origin = request.headers.get("Origin")
    if not origin or not cfg.cors_origins:
        return {}
    if "*" in cfg.cors_origins:
        allow = "*"
    elif origin in cfg.cors_origins:
        allow = origin
    else:
        return {}
    return {
        "Access-Control-Allow-Origin": allow,
        "Access-Control-Allow-Methods": "GET, POST, OPTIONS",
        "Access-Control-Allow-Headers": "Authorization, Content-Type",
        "Access-Control-Max-Age": "600",
        "Vary": "Origin",
    }


@web.middleware
async def _guard(request: web.Request, handler: Handler) -> web.StreamResponse:
    """JSON errors for every failure, CORS headers, request counts and latency."""
    st = request.app[STATE]
    t0 = time.perf_counter()
    cors = _cors_headers(st.config, request)
    route = request.match_info.route.resource.canonical if request.match_info.route.resource else "unmatched"
    try:
        if request.method == "OPTIONS" and cors:
            resp: web.StreamResponse = web.Response(status=204)
        else:
            resp = await handler(request)
    except BadRequest as e:
        resp = web.json_response({"error": e.msg, "status": e.status}, status=e.status)
    except web.HTTPException as e:
        resp = web.json_response({"error": e.reason, "status": e.status}, status=e.status)
        if isinstance(e, web.HTTPMethodNotAllowed):
            resp.headers["Allow"] = ", ".join(sorted(e.allowed_methods))
    except Exception:
        log.exception("unexpected error on %s %s", request.method, request.path)
        resp = web.json_response({"error": "internal error", "status": 500}, status=500)
    resp.headers.update(cors)
    st.metrics.inc("recofast_sidecar_requests_total", route=route, status=str(resp.status))
    st.latencies.append(time.perf_counter() - t0)
    return resp


# -- background tasks -------------------------------------------------------------------------


async def _store_ctx(app: web.Application) -> AsyncIterator[None]:
    st = app[STATE]

    async def reopen() -> None:
        while True:
            if not st.store.available:
                await asyncio.to_thread(st.store.open)
            await asyncio.sleep(st.config.reopen_seconds)

    cfg = st.config
    if cfg.sync and cfg.lmdb and not st.store.available:
        # This sidecar mirrors the bucket into its own store: it writes, and reads through the
        # writer's environment (one process opens an LMDB environment once).
        st.writer = await asyncio.to_thread(ListWriter, cfg.lmdb, cfg.map_size, True, False, cfg.max_map_size)
        st.store.reader = st.writer.reader()
        st.store._owned = False
        st.store.error = None
        st.mirror = Mirror(st.writer, cfg.sync_bucket)
    if not st.store.available:
        await asyncio.to_thread(st.store.open)
    task = asyncio.create_task(reopen())
    yield
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        pass
    st.store.close()
    if st.writer is not None:
        st.writer.close()
        st.writer = None


async def _nats_ctx(app: web.Application) -> AsyncIterator[None]:
    st = app[STATE]
    cfg = st.config
    if not cfg.nats:
        yield
        return
    import nats

    async def connect() -> None:
        delay = 0.2
        while True:
            try:
                nc = await nats.connect(
                    cfg.nats, name="recofast-sidecar", max_reconnect_attempts=-1, connect_timeout=2, allow_reconnect=True
                )
            except Exception as e:  # noqa: BLE001 - keep serving lists; retry
                log.warning("cannot connect to NATS at %s (%s); retrying", cfg.nats, e)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)
                continue
            st.nc, st.js = nc, nc.jetstream()
            log.info("connected to NATS at %s", cfg.nats)
            return

    async def registry() -> None:
        await connecting
        while True:
            st.accepted = await _registered_versions(st.js)
            await asyncio.sleep(cfg.schema_refresh_seconds)

    async def mirror() -> None:
        await connecting
        if st.mirror is not None:
            try:
                await st.mirror.run(st.js)
            except Exception:
                log.exception("the list mirror stopped")
                raise

    connecting = asyncio.create_task(connect())
    if cfg.impressions:
        st.impressions = asyncio.Queue(maxsize=cfg.impression_queue)
    st.mirror_task = asyncio.create_task(mirror())
    tasks = [connecting, st.mirror_task, *(asyncio.create_task(c) for c in (_publish_impressions(st), registry()))]
    yield
    for t in tasks:
        t.cancel()
    for t in tasks:
        try:
            await t
        except asyncio.CancelledError:
            pass
        except Exception:  # noqa: BLE001 - logged where it happened
            pass
    st.mirror_task = None
    if st.mirror is not None and st.mirror.inflight is not None:
        await asyncio.gather(st.mirror.inflight, return_exceptions=True)
    if st.nc is not None:
        await _flush_impressions(st)
        try:
            await asyncio.wait_for(st.nc.drain(), 5)
        except Exception as e:  # noqa: BLE001
            log.warning("NATS drain failed: %s", e)
        st.nc = st.js = None


async def _registered_versions(js: Any) -> tuple[int, ...]:
    """The event versions this package decodes that the schema registry holds; all of this
    package's when there is no registry (or it cannot be read)."""
    try:
        kv = await js.key_value(SCHEMA_BUCKET)
        keys = await kv.keys()
    except Exception as e:  # noqa: BLE001 - no bucket, no keys, or NATS trouble: no narrowing
        log.debug("schema registry not read: %s", e)
        return ev.ACCEPTED_VERSIONS
    n = len(SCHEMA_KEY_PREFIX)
    registered = {int(k[n:]) for k in keys if k.startswith(SCHEMA_KEY_PREFIX) and k[n:].isdigit()}
    return tuple(v for v in ev.ACCEPTED_VERSIONS if v in registered)


def _take_batch(q: asyncio.Queue[dict[str, Any]], first: dict[str, Any], most: int = 100) -> list[dict[str, Any]]:
    batch = [first]
    while len(batch) < most:
        try:
            batch.append(q.get_nowait())
        except asyncio.QueueEmpty:
            break
    return batch


async def _publish_batch(st: State, batch: list[dict[str, Any]]) -> None:
    nc = st.nc
    if nc is None or not nc.is_connected:
        st.metrics.inc("recofast_sidecar_impressions_dropped_total", len(batch))
        return
    try:
        await nc.publish(IMPRESSIONS_SUBJECT, json.dumps(batch, separators=(",", ":")).encode())
        st.metrics.inc("recofast_sidecar_impressions_published_total", len(batch))
    except Exception as e:  # noqa: BLE001
        log.warning("publishing impressions failed: %s", e)
        st.metrics.inc("recofast_sidecar_impressions_dropped_total", len(batch))


async def _publish_impressions(st: State) -> None:
    """Publishes queued impressions, up to 100 records to a message (a JSON array)."""
    q = st.impressions
    if q is None:
        return
    while True:
        first = await q.get()
        await _publish_batch(st, _take_batch(q, first))


async def _flush_impressions(st: State) -> None:
    q = st.impressions
    while q is not None and not q.empty():
        await _publish_batch(st, _take_batch(q, q.get_nowait()))


# -- the app ----------------------------------------------------------------------------------


def create_app(config: SidecarConfig, reader: ListReader | None = None) -> web.Application:
    """The sidecar app. ``reader`` reuses an open :class:`ListReader` (a process that also
    writes the store must not open it twice); otherwise ``config.lmdb`` is opened read-only
    at startup and retried while missing."""
    st = State(config=config, store=Store(config.lmdb, reader), rng=random.Random(config.seed), clock=Clock(config.timezone))
    m = st.metrics
    m.counter("recofast_sidecar_requests_total", "HTTP requests by route and status.")
    m.counter("recofast_sidecar_lists_served_total", "Lists served by endpoint and source.")
    m.counter("recofast_sidecar_events_total", "Events posted, by result (accepted, rejected, unavailable).")
    m.counter("recofast_sidecar_impressions_published_total", "Impression records published to NATS.")
    m.counter("recofast_sidecar_impressions_dropped_total", "Impression records dropped (queue full or NATS down).")
    m.gauge(
        "recofast_sidecar_sync_records_applied", "Records mirrored from the list bucket into the store (--sync).",
        lambda: float(st.mirror.applied if st.mirror is not None else 0),
    )
    m.gauge(
        "recofast_sidecar_sync_failures", "Failed attempts of the list mirror to write a batch or watch the bucket (--sync).",
        lambda: float(st.mirror.failures if st.mirror is not None else 0),
    )
    m.gauge(
        "recofast_sidecar_sync_failing", "1 while the list mirror fails or has stopped (--sync); /readyz says why.",
        lambda: float(
            st.mirror is not None and (st.mirror.error is not None or (st.mirror_task is not None and st.mirror_task.done()))
        ),
    )
    m.gauge(
        "recofast_sidecar_lmdb_map_bytes", "The list store's LMDB map size in this process.",
        lambda: float(st.store.reader.env.info()["map_size"]) if st.store.reader is not None else 0.0,
    )
    m.gauge(
        "recofast_sidecar_lmdb_remaps", "Times this sidecar adopted a map its writer had grown.",
        lambda: float(st.store.reader.remaps) if st.store.reader is not None else 0.0,
    )
    m.gauge("recofast_sidecar_lmdb_available", "1 when the list store is open.", lambda: float(st.store.available))
    m.gauge("recofast_sidecar_nats_connected", "1 when connected to NATS.", lambda: float(st.nc is not None and st.nc.is_connected))
    m.gauge(
        "recofast_sidecar_impression_queue", "Impressions waiting to be published.",
        lambda: float(st.impressions.qsize() if st.impressions is not None else 0),
    )
    m.gauge(
        "recofast_sidecar_request_seconds_p99", "p99 request handling time over the last 4096 requests.",
        lambda: sorted(st.latencies)[int(0.99 * (len(st.latencies) - 1))] if st.latencies else 0.0,
    )

    app = web.Application(client_max_size=config.max_body, middlewares=[_guard])
    app[STATE] = st
    app.cleanup_ctx.append(_store_ctx)
    app.cleanup_ctx.append(_nats_ctx)
    r = app.router
    r.add_get(PATH_RECOMMENDATIONS, recommendations)
    r.add_get(PATH_SIMILAR, similar)
    r.add_get(PATH_POPULAR, popular)
    r.add_post(PATH_EVENTS, post_events)
    r.add_get(PATH_TRACK_JS, track_js)
    r.add_get(PATH_HEALTHZ, healthz)
    r.add_get(PATH_READYZ, readyz)
    r.add_get(PATH_METRICS, metrics)
    r.add_get(PATH_OPENAPI, openapi)
    return app


# -- the command ------------------------------------------------------------------------------


ENV_PREFIX = "RECOFAST_SIDECAR_"


def _coerce(name: str, value: Any, default: Any) -> Any:
    """A configuration value of the option's type (TOML values, or text from the environment)."""
    try:
        if isinstance(default, bool):
            if isinstance(value, str):
                if value.lower() not in ("1", "0", "true", "false", "yes", "no", "on", "off"):
                    raise ValueError(value)
                return value.lower() in ("1", "true", "yes", "on")
            return bool(value)
        if isinstance(default, tuple):
            return tuple(x for x in (value.split(",") if isinstance(value, str) else value) if x)
        if isinstance(default, int):
            return int(value)
        if isinstance(default, float):
            return float(value)
        if name == "seed":
            return None if value in (None, "") else int(value)
        return None if value in (None, "") else str(value)
    except (TypeError, ValueError):
        raise ValueError(f"option {name!r}: cannot use {value!r}") from None


_REMOVED_OPTIONS = {
    "similar_scan_limit": "/similar reads the neighbours the engine exports, it never scans lists",
    "similar_cache_seconds": "/similar reads the neighbours the engine exports, nothing is cached",
}


def load_config(
    path: str | os.PathLike[str] | None = None,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> SidecarConfig:
    """The defaults, then the ``[sidecar]`` table of a TOML file (the annotated
    ``sidecar/recofast-sidecar.toml`` shows every option), then ``RECOFAST_SIDECAR_<OPTION>``
    variables of ``env``, then ``overrides`` (None values are ignored).

    >>> cfg = load_config(env={"RECOFAST_SIDECAR_PORT": "9000", "RECOFAST_SIDECAR_FALLBACK_ITEMS": "a,b"})
    >>> cfg.port, cfg.fallback_items, cfg.max_k
    (9000, ('a', 'b'), 200)
    """
    cfg = SidecarConfig()
    fields = {f.name for f in dataclasses.fields(SidecarConfig)} | set(_REMOVED_OPTIONS)
    values: dict[str, Any] = {}
    if path is not None:
        with open(path, "rb") as f:
            values.update(tomllib.load(f).get("sidecar", {}))
    env = os.environ if env is None else env
    for key, raw in env.items():
        if key.startswith(ENV_PREFIX) and key[len(ENV_PREFIX) :].lower() in fields:
            values[key[len(ENV_PREFIX) :].lower()] = raw
    values.update({k: v for k, v in (overrides or {}).items() if v is not None})
    for key, value in values.items():
        if key not in fields:
            raise ValueError(f"unknown sidecar option {key!r}")
        if key in _REMOVED_OPTIONS:
            log.warning("sidecar option %r is ignored: %s", key, _REMOVED_OPTIONS[key])
            continue
        setattr(cfg, key, _coerce(key, value, getattr(cfg, key)))
    if not 1 <= cfg.partitions <= 1024:
        raise ValueError("partitions must be between 1 and 1024")
    if cfg.sync and not (cfg.nats and cfg.lmdb):
        raise ValueError("sync needs nats and lmdb")
    if not 1 <= cfg.processes <= 256:
        raise ValueError("processes must be between 1 and 256")
    if cfg.sync and cfg.processes > 1:
        raise ValueError("sync needs a single process (one writer per store)")
    if not 0.0 <= cfg.context_weight <= 10.0:
        raise ValueError("context_weight must be between 0 and 10")
    if cfg.map_size < 1 << 16 or cfg.max_map_size < cfg.map_size:
        raise ValueError("map_size must be at least 65536 and max_map_size at least map_size")
    if any(len(key) < 16 for key in cfg.producer_keys):
        raise ValueError("producer_keys must be at least 16 characters each")
    try:
        Clock(cfg.timezone)
    except (ValueError, OSError, KeyError) as e:
        raise ValueError(f"timezone {cfg.timezone!r} is not a known time zone ({type(e).__name__})") from None
    return cfg


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="recofast-sidecar",
        description="Serve recofast recommendation lists from a local LMDB store, with filters, "
        "context, diversity, exploration and fallbacks; accept events and publish them to NATS. "
        "Options come from the defaults, then --config, then RECOFAST_SIDECAR_<OPTION> variables, then these flags.",
    )
    p.add_argument("--config", metavar="FILE", help="TOML file with a [sidecar] table (see sidecar/recofast-sidecar.toml)")
    p.add_argument("--lmdb", metavar="DIR", help="the list store the engine writes (opened read-only; retried while missing)")
    p.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, help="port to listen on (default 8080)")
    p.add_argument("--nats", metavar="URL", help="NATS URL for POST /v1/events and impressions (without it, events answer 503)")
    p.add_argument("--partitions", type=int, help="publish events to recofast.events.p0..pN-1 by user (default 1)")
    p.add_argument("--fallback", metavar="IDS", help="comma-separated item ids served when no list can be read")
    p.add_argument("--cors", action="append", metavar="ORIGIN", help="allow this CORS origin (repeatable; * for any)")
    p.add_argument("--max-body", type=int, metavar="BYTES", help="largest request body (default 262144)")
    p.add_argument("--processes", type=int, metavar="N", help="server processes sharing the port (default 1)")
    p.add_argument(
        "--sync", action="store_true", default=None,
        help=f"mirror the list store from the NATS KV bucket {LISTS_BUCKET} into --lmdb (needs --nats; this sidecar then writes its own store)",
    )
    p.add_argument("--no-impressions", action="store_true", help="do not publish served lists to recofast.impressions")
    p.add_argument("--log-level", default="INFO", help="logging level (default INFO)")
    p.epilog = (
        "User tokens: set RECOFAST_SIDECAR_TOKEN_SECRET; then GET /v1/recommendations/{user} needs "
        "hex(HMAC-SHA256(secret, user)) as a Bearer token or ?token=."
    )
    return p


def config_from_args(args: argparse.Namespace, env: Mapping[str, str] | None = None) -> SidecarConfig:
    """The configuration a command line asks for (file, environment, then flags)."""
    overrides = {
        "lmdb": args.lmdb,
        "host": args.host,
        "port": args.port,
        "nats": args.nats,
        "partitions": args.partitions,
        "fallback_items": args.fallback,
        "cors_origins": tuple(args.cors) if args.cors else None,
        "max_body": args.max_body,
        "processes": args.processes,
        "sync": args.sync,
        "impressions": False if args.no_impressions else None,
    }
    try:
        cfg = load_config(args.config, env, overrides)
    except (OSError, ValueError, tomllib.TOMLDecodeError) as e:
        raise SystemExit(f"recofast-sidecar: {e}") from None
    if not cfg.lmdb:
        raise SystemExit("recofast-sidecar: give --lmdb DIR (or lmdb in the [sidecar] table)")
    return cfg


def _serve(cfg: SidecarConfig, log_level: str, reuse_port: bool, ready: Any = None) -> None:
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(process)d %(levelname)s %(name)s: %(message)s")
    app = create_app(cfg)
    if ready is not None:
        async def started(app: web.Application) -> None:
            ready.set()

        app.on_startup.append(started)
    web.run_app(app, host=cfg.host, port=cfg.port, reuse_port=reuse_port or None, print=None, access_log=None)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    cfg = config_from_args(args)
    if cfg.processes == 1:
        _serve(cfg, args.log_level, False)
        return 0
    import multiprocessing
    import signal

    ctx = multiprocessing.get_context("spawn")
    ready = [ctx.Event() for _ in range(cfg.processes)]
    procs = [ctx.Process(target=_serve, args=(cfg, args.log_level, True, ready[i]), name=f"recofast-sidecar-{i}") for i in range(cfg.processes)]
    for p in procs:
        p.start()

    def stop(signum: int, frame: object) -> None:
        deadline = time.monotonic() + 30.0
        for p, r in zip(procs, ready):
            # A child still starting would die of the interrupt in its imports: let it
            # finish starting first (up to 30 s; it then shuts down gracefully, draining NATS).
            while p.is_alive() and not r.wait(0.1) and time.monotonic() < deadline:
                pass
            if p.is_alive() and p.pid is not None:
                os.kill(p.pid, signal.SIGINT)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    for p in procs:
        p.join()
    return max((p.exitcode or 0) for p in procs)


__all__ = ["STATE", "SidecarConfig", "Store", "create_app", "load_config", "main", "openapi_document", "user_token"]


if __name__ == "__main__":
    raise SystemExit(main())
