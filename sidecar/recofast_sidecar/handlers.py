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
import uuid
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
    check_user_token,
    fraction,
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


def _fallback(st: State) -> list[Candidate]:
    return [Candidate(i, 0.0, "fallback") for i in st.config.fallback_items]


_ENCODE = msgspec.json.Encoder().encode


def _answer_list(st: State, endpoint: str, source: str, model_version: int, items: list[Candidate], *,
                 who: str | None = None, assigned: tuple[Experiment, Variant] | None = None,
                 explore: float = 0.0, explored: bool = False, **whose: str) -> web.Response:
    """The list answer (:class:`~recofast_sidecar.openapi.RankedList`) with a new ``rec_id``;
    its impression is queued (with whose list it is, the experiment variant, and the
    exploration rate and draw), and the items counted as exposed."""
    rec_id = uuid.uuid4().hex
    ids = [c.item for c in items]
    if len(st.exposure) > 1_000_000:  # exposure is relative: start over rather than grow
        st.exposure.clear()
    st.exposure.update(ids)
    st.metrics.lists(endpoint, source)
    exp, var = assigned if assigned is not None else (None, None)
    if ids and st.impressions is not None:
        st.impressions.put(Impression(
            rec_id=rec_id, ts=int(time.time() * 1000), endpoint=endpoint, source=source, items=ids,  # type: ignore[arg-type]
            sources=[source_of(c.reason) for c in items], user=who, item=whose.get("item"), segment=whose.get("segment"),
            model_version=model_version, experiment=exp.name if exp is not None else None,
            variant=var.name if var is not None else None, explore=explore, explored=explored,
        ))
    body = RankedList(
        **whose, rec_id=rec_id, model_version=model_version, source=source,  # type: ignore[arg-type]
        items=[Scored(c.item, _finite(c.score), c.reason) for c in items],
        experiment=exp.name if exp is not None else None, variant=var.name if var is not None else None,
    )
    return web.Response(body=_ENCODE(body), content_type="application/json", charset="utf-8")


def _with_variant(flt: Filters, v: Variant) -> Filters:
    cats = v.serving.exclude_categories
    if not cats:
        return flt
    return dataclasses.replace(flt, exclude_categories=flt.exclude_categories | {c.casefold() for c in cats})


async def recommendations(request: web.Request) -> web.Response:
    st = request.app[STATE]
    cfg = st.config
    user = ident(request.match_info["user_id"], "user id")
    q = request.query
    k = k_param(q, cfg.max_k)
    ctx = parse_context(q)
    flt = parse_filters(q)
    diversity = fraction(q, "diversity")
    explore = fraction(q, "explore")
    check_user_token(cfg.token_secret, given_token(request.headers, q), user)

    store = st.store
    with store.request():
        w, clock = st.serving()
        # The user's experiment variant sets its serving options over the request's.
        assigned = st.variant(user)
        popular_only = False
        if assigned is not None:
            sv = assigned[1].serving
            diversity = sv.diversity if sv.diversity is not None else diversity
            explore = sv.explore if sv.explore is not None else explore
            w = sv.context_weight if sv.context_weight is not None else w
            k = min(k, sv.top_n) if sv.top_n is not None else k
            flt = _with_variant(flt, assigned[1])
            popular_only = assigned[1].popular
        personal = None if popular_only else store.user_list(user)
        segs = ctx.segments()
        # Context re-rank of the personal list by the affinities the engine exported.
        affs = store.affinities(ctx.keys(clock.now())) if w and personal is not None and len(personal) > 1 else []

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
            yield "fallback", _fallback(st)

        want = wide if diversity > 0 else k
        ok, meta, first = store.select(sources(), flt, want)
        source = first or "fallback"
        chosen = mmr(ok, meta, k, diversity) if diversity > 0 else ok[:k]
        # The exploration draw is logged with its rate (the list's propensity), so another
        # rate can be evaluated from the logs.
        explored = explore > 0 and st.rng.random() < explore
        if explored:
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
    return _answer_list(st, "recommendations", source, version, chosen, who=user, assigned=assigned,
                        explore=explore, explored=explored, user=user)


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
