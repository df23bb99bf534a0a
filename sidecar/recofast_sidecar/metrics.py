"""The sidecar's metrics, on ``prometheus_client``: counters, gauges read from the app's state,
and the request latency as a histogram.

Each app has its own :class:`~prometheus_client.CollectorRegistry` (several apps in one
process do not share counts). Under ``recofast-sidecar --processes N`` the supervisor sets
``PROMETHEUS_MULTIPROC_DIR`` to a temporary folder before the server processes start: each
process writes its values there and ``/metrics``, whichever process answers it, renders all
of them aggregated (counters and the histogram summed; gauges summed, or the minimum or
maximum over the live processes, as each gauge says).

>>> m = Metrics()
>>> m.gauge("demo_open", "1 when open.", lambda: 1.0, "livemin")
>>> m.request("/v1/popular", 200, 0.002)
>>> m.events("accepted", 3)
>>> text = m.render().decode()
>>> 'recofast_sidecar_requests_total{route="/v1/popular",status="200"} 1.0' in text, "demo_open 1.0" in text
(True, True)
>>> 'recofast_sidecar_events_total{result="accepted"} 3.0' in text
True
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
"""The variable that puts prometheus_client in multiprocess mode (read when it is imported)."""
CONTENT_TYPE = "text/plain"
LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


def multiprocess_dir() -> str | None:
    """The folder of the processes' metric files when this process is one of several."""
    return os.environ.get(MULTIPROC_ENV) or None


class Metrics:
    """The metrics of one app. The request path calls :meth:`request`, :meth:`lists` and
    :meth:`events` (label sets are looked up once, then kept); gauges are read from their
    functions by :meth:`update`, before each render and, with several processes, every
    second (so the other processes' values are fresh too)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self._requests = Counter("recofast_sidecar_requests", "HTTP requests by route and status.", ["route", "status"], registry=r)
        self._lists = Counter("recofast_sidecar_lists_served", "Lists served by endpoint and source.", ["endpoint", "source"], registry=r)
        self._events = Counter(
            "recofast_sidecar_events", "Events posted, by result (accepted, rejected, forbidden, unavailable).", ["result"], registry=r
        )
        self._impressions = {
            "published": Counter("recofast_sidecar_impressions_published", "Impression records published to NATS.", registry=r),
            "dropped": Counter("recofast_sidecar_impressions_dropped", "Impression records dropped (queue full or NATS down).", registry=r),
        }
        self._latency = Histogram(
            "recofast_sidecar_request_seconds", "Request handling time in seconds (the middleware's view: parsing, store, answer).",
            buckets=LATENCY_BUCKETS, registry=r,
        )
        self._children: dict[tuple[Any, ...], Any] = {}
        self._gauges: list[tuple[Gauge, Callable[[], float]]] = []

    def gauge(self, name: str, doc: str, fn: Callable[[], float], multiprocess_mode: str = "livesum") -> None:
        """A gauge whose value is ``fn()``; ``multiprocess_mode`` says how the processes'
        values aggregate (``livesum``, ``livemin``, ``livemax``, ...)."""
        g = Gauge(name, doc, registry=self.registry, multiprocess_mode=multiprocess_mode)  # type: ignore[arg-type]
        self._gauges.append((g, fn))

    def _child(self, metric: Any, *labels: str) -> Any:
        key = (id(metric), *labels)
        child = self._children.get(key)
        if child is None:
            if len(self._children) > 10_000:  # label values come from a bounded set; a guard all the same
                self._children.clear()
            child = self._children[key] = metric.labels(*labels)
        return child

    def request(self, route: str, status: int, seconds: float) -> None:
        self._child(self._requests, route, str(status)).inc()
        self._latency.observe(seconds)

    def lists(self, endpoint: str, source: str) -> None:
        self._child(self._lists, endpoint, source).inc()

    def events(self, result: str, n: int) -> None:
        if n:
            self._child(self._events, result).inc(n)

    def impressions(self, what: str, n: int) -> None:
        """``published`` or ``dropped`` impression records."""
        if n:
            self._impressions[what].inc(n)

    def update(self) -> None:
        """Sets every gauge from its function."""
        for g, fn in self._gauges:
            try:
                g.set(fn())
            except Exception:  # noqa: BLE001 - a gauge never breaks /metrics
                pass

    def render(self) -> bytes:
        """The Prometheus text format: this app's metrics, or with several processes all of
        theirs, aggregated."""
        self.update()
        path = multiprocess_dir()
        if path is None:
            return generate_latest(self.registry)
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, path)
        return generate_latest(registry)


__all__ = ["CONTENT_TYPE", "MULTIPROC_ENV", "Metrics", "multiprocess_dir"]
