"""The sidecar app: :func:`create_app`, its state, the middleware (JSON errors, CORS, request
metrics) and the background work (the store, NATS, the schema registry, impressions, the
``--sync`` mirror), set up and torn down in ``cleanup_ctx``.

>>> app = create_app(SidecarConfig(lmdb=None, fallback_items=("mug",)))
>>> sorted(r.resource.canonical for r in app.router.routes() if r.method == "GET")[:3]
['/', '/healthz', '/metrics']
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import random
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from recofast_sidecar.config import SidecarConfig
from recofast_sidecar.impressions import Impressions
from recofast_sidecar.metrics import Metrics, multiprocess_dir
from recofast_sidecar.params import BadRequest, Clock, ParamCache
from recofast_sidecar.protocol import events as ev
from recofast_sidecar.protocol.liststore import ListReader, ListWriter
from recofast_sidecar.protocol.names import (
    PATH_EVENTS,
    PATH_HEALTHZ,
    PATH_METRICS,
    PATH_OPENAPI,
    PATH_POPULAR,
    PATH_READYZ,
    PATH_RECOMMENDATIONS,
    PATH_ROOT,
    PATH_SIMILAR,
    PATH_TRACK_JS,
    SCHEMA_BUCKET,
    SCHEMA_KEY_PREFIX,
)
from recofast_sidecar.protocol.experiments import Experiment, Variant, assign
from recofast_sidecar.protocol.settings import SharedSettings
from recofast_sidecar.store import Store
from recofast_sidecar.sync import Mirror

log = logging.getLogger("recofast.sidecar")


@dataclass
class State:
    config: SidecarConfig
    store: Store
    metrics: Metrics = field(default_factory=Metrics)
    nc: Any = None  # nats.aio.client.Client once connected
    js: Any = None
    impressions: Impressions | None = None
    exposure: Counter[str] = field(default_factory=Counter)
    rng: random.Random = field(default_factory=random.Random)
    accepted: tuple[int, ...] = ev.ACCEPTED_VERSIONS
    """Event versions posted events may have: this package's, narrowed to the registry's."""
    writer: ListWriter | None = None
    mirror: Mirror | None = None
    mirror_task: asyncio.Task[None] | None = None
    clock: Clock = field(default_factory=lambda: Clock("UTC"))
    """The clock of the shop's time zone (the option ``timezone``, else the engine's)."""
    context_weight: float = SharedSettings().context_weight
    """The weight of the context re-rank (the option ``context_weight``, else the engine's)."""
    experiments: tuple[Experiment, ...] = ()
    """The running experiments, as the engine wrote them in the meta record."""
    settings_version: int = 0
    """Counts changes of the serving settings (context weight, clock, experiments): an answer
    cached under other settings is not served."""
    params: ParamCache = field(default_factory=ParamCache)
    """List requests' parameters, parsed once per distinct query string."""
    answers: dict[Any, Any] = field(default_factory=dict)
    """Encoded answers (without their ``rec_id``) by user, parameters and hour, each with the
    store generation and settings version it was computed under (at most :attr:`MAX_ANSWERS`)."""
    _shared: Any = field(default=False, repr=False)  # the engine's settings last applied (False: none yet)
    _ids: str = field(default="", repr=False)  # random hex digits, 32 to a rec_id
    _ids_at: int = field(default=0, repr=False)

    MAX_ANSWERS = 10_000

    def rec_id(self) -> str:
        """A new ``rec_id``: 128 random bits in hex (``os.urandom``, drawn 128 ids at a time)."""
        i = self._ids_at
        if i >= len(self._ids):
            self._ids, i = os.urandom(16 * 128).hex(), 0
        self._ids_at = i + 32
        return self._ids[i : i + 32]

    def cache_answer(self, key: Any, value: Any) -> None:
        """Keeps an answer (the oldest one is dropped when :attr:`MAX_ANSWERS` are kept)."""
        a = self.answers
        if key not in a and len(a) >= self.MAX_ANSWERS:
            del a[next(iter(a))]
        a[key] = value

    def serving(self) -> tuple[float, Clock]:
        """The context weight and the clock to serve with now: the sidecar's options where
        they are set, else what the engine wrote in the store's meta record (re-read at most
        once a second), else the defaults of :class:`SharedSettings`."""
        shared = self.store.shared()
        if shared is not self._shared:
            self._shared = shared
            self._apply(shared)
        return self.context_weight, self.clock

    def variant(self, user: str) -> tuple[Experiment, Variant] | None:
        """The experiment and variant the user is in (None: in none); call after :meth:`serving`."""
        return assign(self.experiments, user) if self.experiments else None

    def _apply(self, shared: SharedSettings | None) -> None:
        cfg, base = self.config, shared or _DEFAULT_SHARED
        w = cfg.context_weight if cfg.context_weight is not None else base.context_weight
        if not (math.isfinite(w) and 0.0 <= w <= 10.0):
            log.warning("the engine's context_weight %r is not between 0 and 10; using %g", w, _DEFAULT_SHARED.context_weight)
            w = _DEFAULT_SHARED.context_weight
        tz = cfg.timezone or base.timezone
        if tz != self.clock.timezone:
            try:
                self.clock = Clock(tz)
                self.settings_version += 1
            except (ValueError, OSError, KeyError):
                log.warning("the engine's time zone %r is not known here; keeping %s", tz, self.clock.timezone)
        if w != self.context_weight:
            log.info("context re-rank weight %g (%s)", w, "option" if cfg.context_weight is not None else "the engine's")
            self.settings_version += 1
        self.context_weight = w
        exps = base.experiments
        if exps != self.experiments:
            log.info("experiments: %s", ", ".join(f"{e.name} ({', '.join(v.name for v in e.variants)})" for e in exps) or "none")
            self.experiments = exps
            self.settings_version += 1


_DEFAULT_SHARED = SharedSettings()
STATE = web.AppKey("state", State)


# -- middleware -------------------------------------------------------------------------------

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
    st.metrics.request(route, resp.status, time.perf_counter() - t0)
    return resp


# -- background work --------------------------------------------------------------------------


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
        st.store.adopt(st.writer.reader())
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
            st.nc, st.js = nc, nc.jetstream(domain=cfg.jetstream_domain or None)
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
        st.impressions = Impressions(cfg.impression_queue, lambda: st.js if st.nc is not None and st.nc.is_connected else None,
                                     st.metrics.impressions, cfg.publish_timeout)
    st.mirror_task = asyncio.create_task(mirror())
    tasks = [connecting, st.mirror_task, asyncio.create_task(registry())]
    if st.impressions is not None:
        tasks.append(asyncio.create_task(st.impressions.run()))
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
        if st.impressions is not None:
            await st.impressions.flush()
        try:
            await asyncio.wait_for(st.nc.drain(), 5)
        except Exception as e:  # noqa: BLE001
            log.warning("NATS drain failed: %s", e)
        st.nc = st.js = None


# -- the app ----------------------------------------------------------------------------------


def _register_gauges(st: State) -> None:
    m = st.metrics
    m.gauge(
        "recofast_sidecar_sync_records_applied", "Records mirrored from the list bucket into the store (--sync).",
        lambda: float(st.mirror.applied if st.mirror is not None else 0), "livemax",
    )
    m.gauge(
        "recofast_sidecar_sync_failures", "Failed attempts of the list mirror to write a batch or watch the bucket (--sync).",
        lambda: float(st.mirror.failures if st.mirror is not None else 0), "livemax",
    )
    m.gauge(
        "recofast_sidecar_sync_failing", "1 while the list mirror fails or has stopped (--sync); /readyz says why.",
        lambda: float(
            st.mirror is not None and (st.mirror.error is not None or (st.mirror_task is not None and st.mirror_task.done()))
        ),
        "livemax",
    )
    m.gauge("recofast_sidecar_lmdb_map_bytes", "The list store's LMDB map size (the largest of the processes').",
            lambda: float(st.store.map_size()), "livemax")
    m.gauge("recofast_sidecar_lmdb_remaps", "Times this sidecar adopted a map its writer had grown.", lambda: float(st.store.remaps()), "livesum")
    m.gauge("recofast_sidecar_lmdb_available", "1 when the list store is open (in every process).", lambda: float(st.store.available), "livemin")
    m.gauge("recofast_sidecar_nats_connected", "1 when connected to NATS (every process).",
            lambda: float(st.nc is not None and st.nc.is_connected), "livemin")
    m.gauge(
        "recofast_sidecar_impression_queue", "Impressions waiting to be published.",
        lambda: float(st.impressions.qsize() if st.impressions is not None else 0), "livesum",
    )


async def _metrics_ctx(app: web.Application) -> AsyncIterator[None]:
    """With several processes, each sets its gauges every second, so the one that answers
    ``/metrics`` renders fresh values of all."""
    st = app[STATE]
    if multiprocess_dir() is None:
        yield
        return

    async def update() -> None:
        while True:
            st.metrics.update()
            await asyncio.sleep(1.0)

    task = asyncio.create_task(update())
    yield
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        pass


def create_app(config: SidecarConfig, reader: ListReader | None = None) -> web.Application:
    """The sidecar app. ``reader`` reuses an open :class:`ListReader` (a process that also
    writes the store must not open it twice); otherwise ``config.lmdb`` is opened read-only
    at startup and retried while missing."""
    from recofast_sidecar import handlers  # they import this module's STATE

    st = State(config=config, store=Store(config.lmdb, reader), rng=random.Random(config.seed), clock=Clock(config.timezone or "UTC"))
    st.serving()  # the options' values until the store is read
    _register_gauges(st)
    app = web.Application(client_max_size=config.max_body, middlewares=[_guard])
    app[STATE] = st
    app.cleanup_ctx.append(_store_ctx)
    app.cleanup_ctx.append(_nats_ctx)
    app.cleanup_ctx.append(_metrics_ctx)
    r = app.router
    r.add_get(PATH_RECOMMENDATIONS, handlers.recommendations)
    r.add_get(PATH_SIMILAR, handlers.similar)
    r.add_get(PATH_POPULAR, handlers.popular)
    r.add_post(PATH_EVENTS, handlers.post_events)
    r.add_get(PATH_TRACK_JS, handlers.track_js)
    r.add_get(PATH_ROOT, handlers.root)
    r.add_get(PATH_HEALTHZ, handlers.healthz)
    r.add_get(PATH_READYZ, handlers.readyz)
    r.add_get(PATH_METRICS, handlers.metrics)
    r.add_get(PATH_OPENAPI, handlers.openapi)
    return app


__all__ = ["STATE", "State", "create_app"]
