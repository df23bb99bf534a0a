"""The routes of the sidecar, one function each (registered by :func:`recofast_sidecar.app.create_app`).

- ``GET /v1/recommendations/{user_id}``: the user's list, filtered (stock, category, price,
  exclusions), re-ranked for the request's context (device, country, hour, weather, intent)
  by the affinities the engine exports, diversified (MMR over categories), with an optional
  exploration slot (new items first); when the user has no list, the popular list of the
  context's segment, then of the whole shop, then a static fallback list. It never answers
  5xx for want of data.
- ``GET /v1/items/{item_id}/similar``, ``GET /v1/popular``,
- ``POST /v1/events`` (validated with :mod:`recofast_sidecar.protocol.events`, published to NATS),
- ``GET /v1/track.js``, ``/healthz``, ``/readyz``, ``/metrics``, ``/openapi.json``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import logging
import math
import time
import zlib
from collections.abc import Iterable, Iterator
from importlib import resources
from typing import Any

import msgspec
from aiohttp import web

from recofast_sidecar import __version__
from recofast_sidecar.app import STATE, State
from recofast_sidecar.metrics import CONTENT_TYPE
from recofast_sidecar.openapi import RankedList, Scored, openapi_document
from recofast_sidecar.params import (
    BadRequest,
    ListParams,
    check_user_token,
    given_token,
    ident,
    is_producer,
    k_param,
    parse_context,
    parse_filters,
    segment_param,
    token_is,
)
from recofast_sidecar.protocol import events as ev
from recofast_sidecar.protocol.codec import CodecError, ListView
from recofast_sidecar.protocol.experiments import Experiment, Variant
from recofast_sidecar.protocol.feedback import Impression, source_of
from recofast_sidecar.protocol.names import (
    DLQ_REASON_HEADER,
    DLQ_SOURCE_HEADER,
    DLQ_SUBJECT,
    EVENTS_SUBJECT_PREFIX,
    MSG_ID_HEADER,
    PRODUCER_KEY_HEADER,
)
from recofast_sidecar.rerank import (
    Candidate,
    Filters,
    context_rerank,
    explore_slot,
    mmr,
)

log = logging.getLogger("recofast.sidecar")

TRACK_JS = resources.files("recofast_sidecar").joinpath("static/track.js").read_text(encoding="utf-8")
"""The ``/v1/track.js`` snippet (the package file ``static/track.js``)."""


# -- lists ------------------------------------------------------------------------------------


_new = tuple.__new__  # a Candidate without NamedTuple's Python-level __new__


def _cands(rec: ListView | None, reason: str) -> Iterator[Candidate]:
    """The list's items as candidates, decoded only as far as they are read (a truncated
    record ends where it breaks)."""
    if rec is not None:
        try:
            for pair in rec:
                yield _new(Candidate, (*pair, reason))
        except (CodecError, UnicodeDecodeError):
            return


def _finite(score: float) -> float:
    """A score as JSON can carry it (a NaN or infinite score in the store becomes 0)."""
    return round(score, 6) if math.isfinite(score) else 0.0


def _segment(st: State, kind: str, seg: str, reason: str) -> list[Candidate]:
    """A segment's list as candidates, decoded once per store generation (every request of
    the segment reads the same list)."""
    store = st.store
    return store.memo(("segment", kind, seg, reason), lambda: list(_cands(store.segment(kind, seg), reason)))  # type: ignore[no-any-return]


def _fallback(st: State) -> list[Candidate]:
    return [Candidate(i, 0.0, "fallback") for i in st.config.fallback_items]


_ENCODE = msgspec.json.Encoder().encode
_REC_ID = b'"rec_id":"'


class _Answer:
    """A list answer encoded but for its ``rec_id`` (``head + rec_id + tail`` is the body),
    with what its impression needs: whatever a request adds is added by :func:`_send`."""

    __slots__ = ("head", "tail", "ids", "sources", "source", "version", "exp", "var", "chosen", "gen", "settings", "why")

    def __init__(self, source: str, version: int, items: list[Candidate], assigned: tuple[Experiment, Variant] | None,
                 whose: dict[str, str], why: dict[str, str] | None = None) -> None:
        exp, var = assigned if assigned is not None else (None, None)
        self.exp = exp.name if exp is not None else None
        self.var = var.name if var is not None else None
        self.why = why or {}
        words = self.why
        self.sources = [source_of(c.reason) for c in items]
        body = _ENCODE(RankedList(
            **whose, rec_id="", model_version=version, source=source,  # type: ignore[arg-type]
            items=[Scored(c.item, _finite(c.score), (words.get(c.item) or c.reason) if c.reason == "personal" else c.reason, src)
                   for c, src in zip(items, self.sources)],
            experiment=self.exp, variant=self.var,
        ))
        # The first `"rec_id":"` is the key: the fields before it are strings, whose quotes are escaped.
        i = body.index(_REC_ID) + len(_REC_ID)
        self.head, self.tail = body[:i], body[i:]
        self.ids = [c.item for c in items]
        self.source, self.version, self.chosen = source, version, items
        self.gen: int | None = None
        self.settings = 0


def _send(st: State, endpoint: str, a: _Answer, *, who: str | None = None, explore: float = 0.0, explored: bool = False,
          item: str | None = None, segment: str | None = None) -> web.Response:
    """The answer with a new ``rec_id``; its impression is queued (with whose list it is, the
    experiment variant, and the exploration rate and draw), and the items counted as exposed."""
    rec_id = st.rec_id()
    ids = a.ids
    if len(st.exposure) > 1_000_000:  # exposure is relative: start over rather than grow
        st.exposure.clear()
    st.exposure.update(ids)
    st.metrics.lists(endpoint, a.source)
    if ids and st.impressions is not None:
        st.impressions.put(Impression(
            rec_id=rec_id, ts=int(time.time() * 1000), endpoint=endpoint, source=a.source, items=ids,  # type: ignore[arg-type]
            sources=a.sources, user=who, item=item, segment=segment,  # type: ignore[arg-type]
            model_version=a.version, experiment=a.exp, variant=a.var, explore=explore, explored=explored,
        ))
    return web.Response(body=b"".join((a.head, rec_id.encode(), a.tail)), content_type="application/json", charset="utf-8")


def _answer_list(st: State, endpoint: str, source: str, model_version: int, items: list[Candidate], *,
                 who: str | None = None, assigned: tuple[Experiment, Variant] | None = None,
                 explore: float = 0.0, explored: bool = False, **whose: str) -> web.Response:
    """The list answer (:class:`~recofast_sidecar.openapi.RankedList`) with a new ``rec_id``
    (see :func:`_send`)."""
    a = _Answer(source, model_version, items, assigned, whose)
    return _send(st, endpoint, a, who=who, explore=explore, explored=explored, item=whose.get("item"), segment=whose.get("segment"))


def _with_variant(flt: Filters, v: Variant) -> Filters:
    cats = v.serving.exclude_categories
    if not cats:
        return flt
    return dataclasses.replace(flt, exclude_categories=flt.exclude_categories | {c.casefold() for c in cats})


class _Plan:
    """What a user's request is served with once its experiment variant has had its say."""

    __slots__ = ("k", "flt", "diversity", "explore", "w", "popular_only", "assigned", "segs")

    def __init__(self, st: State, p: ListParams, user: str, w: float) -> None:
        self.k, self.flt, self.diversity, self.explore, self.w = p.k, p.flt, p.diversity, p.explore, w
        self.popular_only = False
        # The user's experiment variant sets its serving options over the request's.
        self.assigned = assigned = st.variant(user)
        if assigned is not None:
            sv = assigned[1].serving
            self.diversity = sv.diversity if sv.diversity is not None else self.diversity
            self.explore = sv.explore if sv.explore is not None else self.explore
            self.w = sv.context_weight if sv.context_weight is not None else w
            self.k = min(self.k, sv.top_n) if sv.top_n is not None else self.k
            self.flt = _with_variant(self.flt, assigned[1])
            self.popular_only = assigned[1].popular
        self.segs = p.ctx.segments()


def _personal_answer(st: State, user: str, p: ListParams, plan: _Plan, now: tuple[int, int]) -> _Answer:
    """The user's list before the exploration draw: the personal list re-ranked for the
    context, filtered, diversified; the segments' popular lists, then the fallback, after it."""
    store = st.store
    k, flt, diversity, w, segs = plan.k, plan.flt, plan.diversity, plan.w, plan.segs
    personal = None if plan.popular_only else store.user_list(user)
    # Context re-rank of the personal list by the affinities the engine exported.
    affs = store.affinities(p.ctx.keys(now)) if w and personal is not None and len(personal) > 1 else []

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
            yield ("segment" if seg != "all" else "popular"), _segment(st, "popular", seg, f"popular in {seg}")
        yield "fallback", _fallback(st)

    want = wide if diversity > 0 else k
    ok, meta, first = store.select(sources(), flt, want)
    source = first or "fallback"
    chosen = mmr(ok, meta, k, diversity) if diversity > 0 else ok[:k]
    version = personal.model_version if source == "personal" and personal is not None else store.meta_version()
    # The engine's reason of each item of the personal list, in words (read only when used).
    why = personal.reasons() if personal is not None and any(c.reason == "personal" for c in chosen) else None
    return _Answer(source, version, chosen, plan.assigned, {"user": user}, why)


def _explore_pool(st: State, flt: Filters, segs: list[str], have: set[str]) -> list[Candidate]:
    """The candidates of an exploration slot: new items (the engine's fresh list) that pass
    the filters and are not in the list; trending ones when no new item is left to show.
    The filtered fresh list is kept for the store generation."""
    store = st.store
    most = 1000 + st.config.max_k  # as many as any list can remove, beyond the 1000 taken
    every = store.memo(("fresh pool", flt), lambda: store.select(
        [("fresh", (Candidate(i, 0.0, "fresh") for i in store.fresh()))], flt, most)[0])
    pool = [c for c in every if c.item not in have][:1000]
    if not pool:
        trending = ((kind, _segment(st, "trending", seg, "trending")) for kind, seg in (("t", segs[0]), ("t", "all")))
        pool, _, _ = store.select(trending, flt, 1000)
    return pool  # type: ignore[no-any-return]


async def recommendations(request: web.Request) -> web.Response:
    st = request.app[STATE]
    cfg = st.config
    user = ident(request.match_info["user_id"], "user id")
    q = request.query
    p = st.params.get(request.query_string, q, cfg.max_k)
    check_user_token(cfg.token_secret, given_token(request.headers, q), user)

    store = st.store
    with store.request():
        w, clock = st.serving()
        now = clock.now()
        plan = _Plan(st, p, user, w)
        # The answer before the exploration draw is a function of the user, the parameters,
        # the hour (when the request gives none), the store's commit and the settings: it is
        # computed once for them. The draw and the rec_id are every request's own.
        key = (user, p.serial, now if p.ctx.hour is None else None)
        gen = store.generation
        a = st.answers.get(key)
        if a is None or a.gen != gen or a.settings != st.settings_version or gen is None:
            a = _personal_answer(st, user, p, plan, now)
            if gen is not None:
                a.gen, a.settings = gen, st.settings_version
                st.cache_answer(key, a)
        explore = plan.explore
        # The exploration draw is logged with its rate (the list's propensity), so another
        # rate can be evaluated from the logs.
        explored = explore > 0 and st.rng.random() < explore
        if explored:
            # The slot goes to a new item (the engine's fresh list); to a trending one when no
            # new item is left to show.
            pool = _explore_pool(st, plan.flt, plan.segs, set(a.ids))
            chosen = explore_slot(a.chosen, pool, st.exposure, 1.0, st.rng, plan.k)
            if chosen is not a.chosen:
                a = _Answer(a.source, a.version, chosen, plan.assigned, {"user": user}, a.why)
    return _send(st, "recommendations", a, who=user, explore=explore, explored=explored)


def _asker(request: web.Request) -> str | None:
    """``?user=``: who asked for a list of another endpoint (so it can be attributed)."""
    raw = request.query.get("user")
    return ident(raw, "user id") if raw is not None else None


async def similar(request: web.Request) -> web.Response:
    st = request.app[STATE]
    item = ident(request.match_info["item_id"], "item id")
    q = request.query
    k = k_param(q, st.config.max_k)
    ctx = parse_context(q)
    flt = parse_filters(q)
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
            yield "fallback", _fallback(st)

        chosen, _, first = store.select(sources(), flt, k)
        source = first or ("popular" if store.available else "fallback")
        version = neighbours.model_version if source == "similar" and neighbours is not None else store.meta_version()
    return _answer_list(st, "similar", source, version, chosen, who=_asker(request), item=item)


async def popular(request: web.Request) -> web.Response:
    st = request.app[STATE]
    q = request.query
    k = k_param(q, st.config.max_k)
    seg, kind = segment_param(q)
    flt = parse_filters(q)
    with st.store.request():
        rec = st.store.segment(kind, seg)
        chosen, _, first = st.store.select([("popular", _cands(rec, f"{kind} in {seg}")), ("fallback", _fallback(st))], flt, k)
    source = first or "fallback"
    version = rec.model_version if rec is not None else 0
    return _answer_list(st, "popular", source, version, chosen, who=_asker(request), segment=seg, kind=kind)


# -- events -----------------------------------------------------------------------------------


def _events_token(request: web.Request) -> str | None:
    """Who may post these events: None when anyone may post for any user (no token secret,
    or a valid producer key), else the user token every event's user must match. 401 without
    credentials, 403 with a wrong producer key; read before the body is."""
    cfg = request.app[STATE].config
    if not cfg.token_secret:
        return None
    key = request.headers.get(PRODUCER_KEY_HEADER)
    if key is not None:
        if cfg.producer_keys and is_producer(key, cfg.producer_keys):
            return None
        raise BadRequest("the producer key is not valid", 403)
    tok = given_token(request.headers, request.query)
    if not tok:
        raise BadRequest("posting events needs the shopper's user token (or a producer key)", 401)
    return tok


class _Envelope(msgspec.Struct):
    """``{"events": [...]}``: the array's bytes as they came (empty when there is no key)."""

    events: msgspec.Raw = msgspec.Raw()


class _Who(msgspec.Struct):
    user: Any = None


_ENVELOPE = msgspec.json.Decoder(_Envelope)
_WHO = msgspec.json.Decoder(_Who)
_RAWS = msgspec.json.Decoder(list[msgspec.Raw])
_NOT_JSON = "the body is not JSON (or nested too deeply)"


def _payload(body: bytes) -> bytes:
    """The events of a body: an event, an array, or ``{"events": [...]}`` (its array)."""
    if body.lstrip()[:1] != b"{":
        return body
    try:
        events = _ENVELOPE.decode(body).events
    except (msgspec.DecodeError, msgspec.ValidationError, RecursionError):
        raise BadRequest(_NOT_JSON) from None
    if not len(events):
        return body
    raw = bytes(events)
    if raw.lstrip()[:1] != b"[":
        raise BadRequest("`events` must be an array")
    return raw


def _decode_body(body: bytes, accepted: tuple[int, ...], most: int) -> tuple[list[ev.Event], list[ev.Rejected]]:
    """The body's events, decoded once by :func:`~recofast_sidecar.protocol.events.decode_events`
    when all are valid; when some are not, the body is checked to be JSON and counted."""
    payload = _payload(body)
    try:
        ok, bad = ev.decode_events(payload, accepted)
        n = len(ok)
        if bad:  # something did not decode: is it JSON at all, and how many events are there?
            if payload.lstrip()[:1] == b"[":
                n = len(_RAWS.decode(payload))
            else:
                msgspec.json.decode(payload)
                n = 1
    except (msgspec.DecodeError, msgspec.ValidationError, RecursionError):
        raise BadRequest(_NOT_JSON) from None
    if not n:
        raise BadRequest("no events")
    if n > most:
        raise BadRequest(f"at most {most} events per request", 413)
    return ok, bad


def _check_event_users(secret: str, tok: str, ok: list[ev.Event], bad: list[ev.Rejected]) -> None:
    """403 unless every event of the body (valid or not) is for the token's user."""
    users = {e.user for e in ok}
    for r in bad:
        try:
            u = _WHO.decode(r.raw).user
        except (msgspec.DecodeError, msgspec.ValidationError):
            continue  # not an object, or a number no user id is: no user
        if isinstance(u, str) or (isinstance(u, int) and not isinstance(u, bool)):
            users.add(str(u))
    for u in users:
        if not token_is(secret, tok, str(u)):
            raise BadRequest("the user token does not belong to the user of every event", 403)


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
    ok, bad = _decode_body(await request.read(), st.accepted, cfg.max_events)
    if tok is not None:
        try:
            _check_event_users(cfg.token_secret or "", tok, ok, bad)
        except BadRequest:
            st.metrics.events("forbidden", len(ok) + len(bad))
            raise
    st.metrics.events("rejected", len(bad))
    rejected = [{"index": r.index, "reason": r.reason} for r in bad]
    if not ok:
        return web.json_response(
            {"error": "no valid events", "status": 400, "accepted": 0, "rejected": len(bad), "errors": rejected}, status=400
        )
    if st.js is None or st.nc is None or not st.nc.is_connected:
        st.metrics.events("unavailable", len(ok))
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
            else:  # packed: one JSON array, each event encoded once
                msg_id = "pack-" + hashlib.blake2b("\n".join(e.id for e in evs).encode(), digest_size=12).hexdigest()
                data = ev.encode(evs)
            await st.js.publish(subject, data, headers={MSG_ID_HEADER: msg_id}, timeout=cfg.publish_timeout)
    except Exception as e:  # noqa: BLE001 - any NATS failure is "unavailable", not a crash
        log.warning("publishing events failed: %s", e)
        st.metrics.events("unavailable", len(ok))
        return web.json_response({"error": f"publishing to NATS failed: {type(e).__name__}", "status": 503}, status=503)
    st.metrics.events("accepted", len(ok))
    return web.json_response({"accepted": len(ok), "rejected": len(bad), "errors": rejected}, status=202)


# -- the rest ---------------------------------------------------------------------------------


async def root(request: web.Request) -> web.Response:
    """``/``: a redirect to the option ``dashboard_url`` when it is set, else 404."""
    url = request.app[STATE].config.dashboard_url
    if url is None:
        raise web.HTTPNotFound()
    return web.Response(status=302, headers={"Location": url})


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
    return web.Response(body=request.app[STATE].metrics.render(), content_type=CONTENT_TYPE, charset="utf-8")


async def openapi(request: web.Request) -> web.Response:
    return web.json_response(openapi_document())


__all__ = ["healthz", "metrics", "openapi", "popular", "post_events", "readyz", "recommendations", "similar", "track_js"]
