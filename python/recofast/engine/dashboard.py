"""The engine's dashboard and demo shop: pages and one JSON data endpoint on the engine's
HTTP app (:func:`add_routes`, called by :func:`recofast.engine.service.create_app`).

- ``GET /dashboard``: the live dashboard (polls ``/dashboard/data`` every 1.5 s; charts by
  Chart.js, vendored in ``static/``).
- ``GET /dashboard/data``: everything the page plots, as JSON (:func:`snapshot`).
- ``GET /shop``: a demo shop: pick a shopper, see its list with the reasons, click items.
- ``GET /dashboard/static/{name}``: the pages' scripts and styles (no token needed: nothing
  secret in them).

The pages talk to the edge sidecar straight from the browser (its URL in ``?sidecar=``,
default port 8080 of the page's host): the dashboard reads its ``/metrics`` for the request
latency, the shop its ``/v1/recommendations`` and ``/v1/track.js``. So the sidecar must
allow the engine's origin by CORS (option ``cors_origins``; ``recofast up`` sets it).

Access: with the engine option ``admin_token`` set, every route here but the static files
needs ``Authorization: Bearer <token>`` or ``?token=<token>``; without it the routes are open
only while the engine's HTTP server is bound to a loopback address (``http_host``), and
answer 403 otherwise.

The event mix (events by type) is counted by a core NATS subscription to the event subjects,
started when a dashboard asks for data and stopped after :data:`MIX_IDLE_SECONDS` without a
request, so an unwatched engine does not decode its events twice.

>>> tuple(round(x, 4) for x in wilson(30, 1000))
(0.0211, 0.0425)
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import logging
import math
import time
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec

if TYPE_CHECKING:
    from aiohttp import web

    from recofast.engine.service import Engine

log = logging.getLogger("recofast.engine")

PATH_DASHBOARD = "/dashboard"
PATH_DASHBOARD_DATA = "/dashboard/data"
PATH_DASHBOARD_STATIC = "/dashboard/static"
PATH_SHOP = "/shop"
STATIC = Path(__file__).with_name("static")
MIX_IDLE_SECONDS = 30.0
"""The event mix subscription stops this long after the last data request."""
CACHE_SECONDS = 1.0
"""The loop report and the checkpoint listing are read at most once a second."""
TRENDING_N = 10


def wilson(k: float, n: float, z: float = 1.96) -> tuple[float | None, float | None]:
    """The Wilson score interval of ``k`` successes in ``n`` trials (None, None when n is 0).
    Items shown are treated as independent trials: for a rate per source this is a rough
    interval; the experiment variants carry the per-user intervals of the loop report."""
    if n <= 0:
        return None, None
    p = k / n
    d = 1 + z * z / n
    c = (p + z * z / (2 * n)) / d
    h = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / d
    return max(0.0, c - h), min(1.0, c + h)


def is_loopback(host: str) -> bool:
    """Whether ``host`` (an address or ``localhost``) only accepts local connections.

    >>> is_loopback("127.0.0.1"), is_loopback("::1"), is_loopback("localhost"), is_loopback("0.0.0.0")
    (True, True, True, False)
    """
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class _Typed(msgspec.Struct):
    type: str = ""


_mix_decoder = msgspec.json.Decoder(list[_Typed] | _Typed)


class EventMix:
    """Events by type seen on the event subjects, counted while someone watches."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.sub: Any = None
        self.last_request = 0.0
        self._task: asyncio.Task[None] | None = None

    def _on_msg(self, data: bytes) -> None:
        try:
            got = _mix_decoder.decode(data)
        except (msgspec.DecodeError, msgspec.ValidationError):
            self.counts["invalid"] += 1
            return
        for e in got if isinstance(got, list) else (got,):
            self.counts[e.type or "invalid"] += 1

    async def watch(self, nc: Any) -> None:
        """Called on each data request: subscribes when not subscribed."""
        from recofast_sidecar.protocol.names import EVENTS_SUBJECTS

        self.last_request = time.monotonic()
        if self.sub is not None or nc is None or nc.is_closed:
            return

        async def cb(msg: Any) -> None:
            if not msg.subject.endswith((".catalog", ".forget")):
                self._on_msg(msg.data)

        self.sub = await nc.subscribe(EVENTS_SUBJECTS, cb=cb)
        self._task = asyncio.create_task(self._idle())

    async def _idle(self) -> None:
        while time.monotonic() - self.last_request < MIX_IDLE_SECONDS:
            await asyncio.sleep(1.0)
        await self.close()

    async def close(self) -> None:
        sub, self.sub = self.sub, None
        if sub is not None:
            try:
                await sub.unsubscribe()
            except Exception as e:  # noqa: BLE001 - the connection is closing anyway
                log.debug("dashboard event mix: %s", e)


class _Cache:
    def __init__(self) -> None:
        self.at: dict[str, float] = {}
        self.value: dict[str, Any] = {}

    async def get(self, key: str, fn: Any, *args: Any) -> Any:
        if time.monotonic() - self.at.get(key, -1e9) > CACHE_SECONDS:
            try:
                self.value[key] = await asyncio.to_thread(fn, *args)
            except Exception as e:  # noqa: BLE001 - a panel says what it could not read
                self.value[key] = {"error": f"{type(e).__name__}: {e}"}
            self.at[key] = time.monotonic()
        return self.value[key]


def _histogram(h: Any) -> dict[str, Any]:
    """Cumulative bucket counts of a :class:`~recofast.engine.metrics.BatchHistogram`."""
    with h._lock:
        counts = h.counts.cumsum().tolist()
    return {"le": [*h.bounds.tolist(), "+Inf"], "counts": counts}


def _loop_rows(e: Engine) -> list[dict[str, Any]]:
    """The loop's in-memory totals, one row per (endpoint, source, experiment, variant)."""
    if e.loop is None:
        return []
    return [{"endpoint": k[0], "source": k[1], "experiment": k[2], "variant": k[3], **c} for k, c in e.loop.collector.rows]


def _by(rows: list[dict[str, Any]], dim: str) -> list[dict[str, Any]]:
    from recofast.engine.attribution import COUNTS

    acc: dict[str, dict[str, float]] = {}
    for r in rows:
        a = acc.setdefault(str(r[dim]), dict.fromkeys(COUNTS, 0.0))
        for c in COUNTS:
            a[c] += float(r.get(c, 0.0))
    out = []
    for key, c in sorted(acc.items()):
        shown = c["shown"]
        ctr_lo, ctr_hi = wilson(c["clicks"], shown)
        conv_lo, conv_hi = wilson(c["purchases"], shown)
        out.append({dim: key, **c, "ctr": c["clicks"] / shown if shown else None, "ctr_lo": ctr_lo, "ctr_hi": ctr_hi,
                    "conversion": c["purchases"] / shown if shown else None, "conversion_lo": conv_lo,
                    "conversion_hi": conv_hi, "rpm": 1000 * c["revenue"] / shown if shown else None})
    return out


def _experiments(e: Engine) -> list[dict[str, Any]]:
    from recofast.engine.service import _loop_report

    if e.loop is None:
        return []
    return list(_loop_report(e, ["experiment", "variant"], None, []).get("experiments", []))


def _checkpoints(e: Engine) -> list[dict[str, Any]]:
    return list(e.store.listing())


def _trending(e: Engine) -> list[dict[str, Any]]:
    if e.reader is None:
        return []
    rec = e.reader.segment("trending", "all")
    if rec is None:
        return []
    out = []
    for item, score in list(zip(rec.items, rec.scores))[:TRENDING_N]:
        meta = e.reader.item(item)
        out.append({"item": item, "score": score, "category": getattr(meta, "category", None)})
    return out


def timeline(e: Engine, checkpoints: Any) -> list[dict[str, Any]]:
    """The engine's timeline (``Engine.timeline``: drift alarms, adaptations, rollbacks,
    checkpoints), newest last; checkpoints from the checkpoint store when the engine's
    timeline does not mark them."""
    marks = [dict(m) for m in list(getattr(e, "timeline", []) or [])]
    if not any(m.get("kind") == "checkpoint" for m in marks) and isinstance(checkpoints, list):
        for c in checkpoints:
            if c.get("time") is None:
                continue
            if c.get("rolled_back_from") is not None:
                marks.append({"ts": c["time"], "kind": "rollback", "detail": f"v{c['version']} from v{c['rolled_back_from']}"})
            else:
                marks.append({"ts": c["time"], "kind": "checkpoint",
                              "detail": f"v{c['version']} at stream seq {c.get('stream_seq')}"})
    return sorted(marks, key=lambda m: float(m.get("ts") or 0.0))


async def snapshot(e: Engine, mix: EventMix, cache: _Cache) -> dict[str, Any]:
    """What the dashboard plots: counters (cumulative; the page plots their rates), the
    freshness histogram, the closed loop by source and by experiment variant, checkpoints,
    the timeline and the trending items."""
    await mix.watch(e.nc)
    rows = _loop_rows(e)
    checkpoints = await cache.get("checkpoints", _checkpoints, e)
    counts = e.snapshot_counts()
    return {
        "time": time.time(),
        "counts": counts,
        "events_by_type": dict(mix.counts),
        "pending": e.pending,
        "health": e.health()[1],
        "freshness": _histogram(e.metrics.freshness),
        "loop": None if e.loop is None else {
            "total": _by([{**r, "all": "all"} for r in rows], "all")[0] if rows else None,
            "by_source": _by(rows, "source"),
            "by_variant": _by([{**r, "ev": f"{r['experiment']}/{r['variant']}"} for r in rows if r["experiment"]], "ev"),
            "experiments": await cache.get("experiments", _experiments, e),
            "problem": e.loop.problem,
        },
        "model_version": e.model_version,
        "checkpoints": checkpoints,
        "timeline": timeline(e, checkpoints),
        "trending": await cache.get("trending", _trending, e),
    }


def add_routes(app: web.Application, engine: Engine) -> None:
    """Adds the dashboard's and the shop's routes to the engine's app."""
    from aiohttp import web

    cfg = engine.cfg
    token = getattr(cfg, "admin_token", "") or ""
    host = getattr(cfg, "http_host", "127.0.0.1")
    mix, cache = EventMix(), _Cache()

    def allowed(request: web.Request) -> web.Response | None:
        if not token:
            if is_loopback(host):
                return None
            return web.json_response({"error": "set the engine option admin_token to serve the dashboard on "
                                      f"{host}", "status": 403}, status=403)
        auth = request.headers.get("Authorization", "")
        given = auth[7:] if auth.startswith("Bearer ") else request.query.get("token", "")
        if hmac.compare_digest(given.encode(), token.encode()):
            return None
        return web.json_response({"error": "admin token required (Authorization: Bearer or ?token=)", "status": 401},
                                 status=401, headers={"WWW-Authenticate": "Bearer"})

    def page(name: str) -> Any:
        async def handler(request: web.Request) -> web.StreamResponse:
            denied = allowed(request)
            if denied is not None:
                return denied
            return web.FileResponse(STATIC / name, headers={"Cache-Control": "no-store"})
        return handler

    async def data(request: web.Request) -> web.Response:
        denied = allowed(request)
        if denied is not None:
            return denied
        body = await snapshot(engine, mix, cache)
        return web.json_response(body, dumps=lambda o: msgspec.json.encode(o).decode(), headers={"Cache-Control": "no-store"})

    async def root(request: web.Request) -> web.Response:
        raise web.HTTPFound(PATH_DASHBOARD + (f"?{request.query_string}" if request.query_string else ""))

    async def stop_mix(app: web.Application) -> Any:
        yield
        await mix.close()

    app.cleanup_ctx.append(stop_mix)
    app.router.add_get("/", root)
    app.router.add_get(PATH_DASHBOARD, page("dashboard.html"))
    app.router.add_get(PATH_DASHBOARD_DATA, data)
    app.router.add_get(PATH_SHOP, page("shop.html"))
    app.router.add_static(PATH_DASHBOARD_STATIC, STATIC)


__all__ = ["PATH_DASHBOARD", "PATH_DASHBOARD_DATA", "PATH_SHOP", "EventMix", "add_routes", "is_loopback", "snapshot",
           "timeline", "wilson"]
