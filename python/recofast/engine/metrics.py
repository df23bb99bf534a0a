"""The engine's Prometheus metrics, on ``prometheus_client`` (one registry per engine, so two
engines in one process do not collide).

Counters the engine keeps in its checkpoints (events applied, dead letters, ...) are read
from the engine's own counts at scrape time (:class:`_Persistent`), so they survive a
restart instead of starting again at 0. The freshness histogram takes a whole batch of
values at once (:class:`BatchHistogram`): ``prometheus_client``'s ``observe`` costs about a
microsecond a call, which at the engine's rate of events would be a tenth of a core.

>>> m = EngineMetrics(lambda: {"events_applied_total": 7})
>>> m.freshness.observe_many(np.array([0.004, 0.2, 3.0]))
>>> m.batches.inc()
>>> text = m.render().decode()
>>> "recofast_events_applied_total 7.0" in text, 'recofast_freshness_seconds_bucket{le="0.005"} 1.0' in text
(True, True)
>>> "recofast_batches_total 1.0" in text
True
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence

import numpy as np
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
FRESHNESS_BUCKETS = (0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 30.0, 300.0)
REFRESH_BUCKETS = (0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 300)

# The counters kept in checkpoints: (the engine's count, help).
PERSISTENT = {
    "events_applied_total": "Events applied to the model, ever (kept in checkpoints).",
    "events_dlq_total": "Events sent to the dead-letter subject, ever (kept in checkpoints).",
    "events_duplicate_total": "Events dropped as duplicate ids, ever (kept in checkpoints).",
    "items_upserted_total": "Catalog upserts applied, ever (kept in checkpoints).",
    "apply_errors_total": "Events or upserts sent to the DLQ because applying them raised, ever.",
    "users_expired_total": "Users expired from the model (idle or over the cap), ever.",
    "users_forgotten_total": "Users erased by a forget request, ever.",
    "item_deltas_published_total": "Item deltas this engine published for the other engines, ever.",
    "item_delta_bytes_published_total": "Bytes of the item deltas this engine published, ever.",
    "item_deltas_applied_total": "Other engines' item deltas applied, ever.",
    "item_deltas_rejected_total": "Item deltas refused as invalid, ever.",
    "item_deltas_unsent_dropped_total": "Item deltas dropped unpublished while NATS could not take them, ever.",
    "users_handed_over_total": "Users taken over with a partition from the previous owner's checkpoint, ever.",
    "events_replayed_shared_total": "Events replayed after a restart or a takeover whose item knowledge had been shared "
                                    "already (learned without sharing it again; for the users only when another engine's "
                                    "deltas carry it), ever.",
}


class _Persistent(Collector):
    """The checkpointed counters, read from the engine at scrape time."""

    def __init__(self, counts: Callable[[], dict[str, int]]) -> None:
        self._counts = counts

    def collect(self) -> Iterator[Metric]:
        counts = self._counts()
        for name, doc in PERSISTENT.items():
            yield CounterMetricFamily(f"recofast_{name}", doc, value=counts.get(name, 0))


class BatchHistogram(Collector):
    """A histogram that takes a batch of observations in one numpy call."""

    def __init__(self, name: str, doc: str, buckets: Sequence[float]) -> None:
        self.name, self.doc = name, doc
        self.bounds = np.asarray(buckets, dtype=np.float64)
        self.counts = np.zeros(len(self.bounds) + 1, dtype=np.int64)  # the last one is +Inf
        self.total = 0.0
        self._lock = threading.Lock()

    def observe_many(self, values: np.ndarray) -> None:
        if not len(values):
            return
        idx = np.searchsorted(self.bounds, values, side="left")
        add = np.bincount(idx, minlength=len(self.counts))
        with self._lock:
            self.counts += add
            self.total += float(np.sum(values))

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            cum = np.cumsum(self.counts).tolist()
            total = self.total
        buckets = [(repr(float(b)), c) for b, c in zip(self.bounds.tolist(), cum)] + [("+Inf", cum[-1])]
        yield HistogramMetricFamily(self.name, self.doc, buckets=buckets, sum_value=total)


class EngineMetrics:
    """Every metric of one engine, in a registry of its own; ``counts`` returns the engine's
    checkpointed counters."""

    def __init__(self, counts: Callable[[], dict[str, int]]) -> None:
        r = self.registry = CollectorRegistry(auto_describe=True)
        r.register(_Persistent(counts))
        self.freshness = BatchHistogram("recofast_freshness_seconds", "Event time to list commit.", FRESHNESS_BUCKETS)
        r.register(self.freshness)
        self.list_writes = Counter("recofast_list_writes", "User lists written to LMDB since start.", registry=r)
        self.batches = Counter("recofast_batches", "Batches handled since start.", registry=r)
        self.checkpoints = Counter("recofast_checkpoints", "Checkpoints written since start.", registry=r)
        self.background_errors = Counter("recofast_background_errors", "Errors in periodic work (refresh, export, checkpoint, expiry) since start.", registry=r)
        self.store_stalls = Counter("recofast_store_unavailable", "Commits the list store could not take (full map or disk) since start.", registry=r)
        self.consumer_recreated = Counter("recofast_consumer_recreated", "Times the durable consumer was found missing and recreated since start.", registry=r)
        self.drift_alerts = Counter("recofast_drift_alerts", "Drift alerts since start, by signal (hit_rate, event_mix).", ["signal"], registry=r)
        self.adaptations = Counter("recofast_adaptations", "Model adaptations (Recommender.adapt) started by drift alerts since start.", registry=r)
        self.rollbacks = Counter("recofast_rollbacks", "Rollbacks by the staleness guard since start.", registry=r)
        self.live_hit_rate = Gauge("recofast_live_hit_rate", "Live hit rate of served lists over the last staleness_window hit checks.", registry=r)
        self.batch = Histogram("recofast_batch_seconds", "Batch handling time, fetch to ack.", registry=r)
        self.learn = Histogram("recofast_learn_seconds", "learn_many time per batch.", registry=r)
        self.lists = Histogram("recofast_list_compute_seconds", "Top-N recompute time of touched users per batch.", registry=r)
        self.commit = Histogram("recofast_lmdb_commit_seconds", "LMDB commit time per batch.", registry=r)
        self.refresh = Histogram("recofast_refresh_seconds", "Periodic full refresh plus checkpoint time.", buckets=REFRESH_BUCKETS, registry=r)
        self.model_version = Gauge("recofast_model_version", "Version of the newest checkpoint the model descends from.", registry=r)
        self.stream_seq = Gauge("recofast_stream_seq", "Last applied stream sequence.", registry=r)
        self.users = Gauge("recofast_users", "Users the model knows.", registry=r)
        self.items = Gauge("recofast_items", "Items the model knows.", registry=r)
        self.pending = Gauge("recofast_pending_messages", "Messages in the stream not yet applied (checked every health_seconds).", registry=r)

    def value(self, sample: str) -> float:
        """The current value of one sample (``recofast_batches_total``), 0 when it has none."""
        return self.registry.get_sample_value(sample) or 0.0

    def render(self) -> bytes:
        """The Prometheus text exposition of every metric."""
        return generate_latest(self.registry)


__all__ = ["CONTENT_TYPE", "FRESHNESS_BUCKETS", "PERSISTENT", "BatchHistogram", "EngineMetrics"]
