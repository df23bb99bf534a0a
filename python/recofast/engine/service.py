"""The engine service (``recofast serve``): NATS JetStream in, learning, LMDB lists out,
checkpoints, and no event lost or applied twice.

One loop, in order, so the model, the counters and the stream position always agree:

1. fetch a batch from the durable pull consumer ``recofast-engine``;
2. in a worker thread (the event loop never blocks): skip messages whose stream sequence
   is at or below the applied sequence, decode and validate (bad → DLQ list), drop
   duplicate event ids, enrich, ``learn_many`` (GIL released), recompute the top-N of the
   touched users, and commit lists + item metadata + meta (model version, last sequence)
   to LMDB in one transaction;
3. publish the rejected events to ``recofast.dlq`` with the reason in a header;
4. ack the batch (ack policy *all*: acking the last message acks all before it);
5. every ``refresh_seconds``: recompute every user's list, popular and trending lists per
   segment, and write a checkpoint (model, dedupe window, popularity, stream sequence,
   counters).

What counts: an event is *applied* when it is valid and not a duplicate; it is then
counted in ``events_applied_total`` and touches its user's list. Every type with an item
goes to ``learn_many`` (``impression`` has weight 0 there and so teaches the factors
nothing, but is counted by the model too), with its enriched context (device, hour,
weekday, country, region, weather, and the event's ``context.intent``; ``unknown``
placeholders are left out); a ``search`` with a query goes to ``Recommender.search`` in its
place in the batch, so it sets the shopper's session intent for the events after it.

The periodic refresh also exports what the sidecar needs to apply context without the
model: each context key's top ``context_top`` items by affinity, and the fresh items (the
exploration pool), in the LMDB ``context`` database (see :mod:`recofast_sidecar.protocol.codec`).

Exactly once: on start the engine loads the newest good checkpoint and re-creates its
consumer to start at the checkpoint's sequence + 1, so the events after the checkpoint are
learned again by a model that has not seen them; messages at or below the applied sequence
are never learned; duplicate ids are dropped by the stream (``Nats-Msg-Id`` within its
duplicate window) and by the engine (the last ``dedupe_window`` ids, kept in the checkpoint).
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lmdb
import msgspec
import numpy as np
from recofast_sidecar.protocol import codec, liststore
from recofast_sidecar.protocol import events as ev
from recofast_sidecar.protocol.names import (
    ALERTS_SUBJECT,
    CATALOG_SUBJECT,
    CONSUMER,
    FORGET_SUBJECT,
    FORGOTTEN_SUBJECT,
    STREAM,
)
from recofast_sidecar.protocol.experiments import assign, weights_key
from recofast_sidecar.protocol.experiments import load as load_experiments
from recofast_sidecar.protocol.settings import SharedSettings

from recofast.engine.aggregates import Dedupe, Popularity
from recofast.engine.checkpoints import CheckpointStore
from recofast.engine.config import EngineConfig
from recofast.engine.enrich import (
    EnrichedBatch,
    Enricher,
    HttpWeatherProvider,
    StaticWeatherProvider,
    context_columns,
)
from recofast.engine.erasure import Tombstones, decode_forget, encode_forget
from recofast.engine.loop import Loop
from recofast.engine.metrics import CONTENT_TYPE, EngineMetrics
from recofast.engine.mirror import ListMirror
from recofast.engine.monitor import Alert, LiveMonitor, StalenessGuard
from recofast.engine.refresh import Refresher
from recofast.explain import reason_text
from recofast.engine.streams import bind_consumer, ensure_streams, publish_dlq
from recofast.errors import StoreUnavailable
from recofast.recommender import Recommender

log = logging.getLogger("recofast.engine")
#: Seconds a taking-over engine waits for the previous owner's checkpoint from the object store.
HANDOVER_TIMEOUT = 300.0

STATE_FORMAT = 2
TIMELINE_LEN = 1_000
"""Entries kept in :attr:`Engine.timeline`."""






@dataclass
class BatchResult:
    dlq: list[tuple[int, int, str, bytes]] = field(default_factory=list)
    applied: int = 0
    skipped_msgs: int = 0
    errors: int = 0  # units sent to the DLQ because applying them raised
    forgotten: list[str] = field(default_factory=list)


# What one decoded message part is: an event, a catalog upsert, or a forget request.
EVENT, UPSERT, FORGET = 0, 1, 2


@dataclass
class Unit:
    """One decoded part of a message, with where it came from (for the DLQ)."""

    seq: int
    index: int
    kind: int
    obj: Any


RESOURCE_ERRORS: tuple[type[BaseException], ...] = (liststore.StoreFullError, lmdb.MapFullError, lmdb.DiskError, lmdb.MapResizedError, OSError)




class Engine:
    """The engine's state and its loop. Use as ``async with Engine(cfg) as e: await e.run()``."""

    def __init__(self, cfg: EngineConfig) -> None:
        self.cfg = cfg
        self.store = CheckpointStore(cfg.model_dir, cfg.checkpoint_keep)
        self.accepted = ev.ACCEPTED_VERSIONS
        weather = None
        if cfg.weather == "static":
            weather = StaticWeatherProvider(cfg.weather_table)
        elif cfg.weather == "http":
            weather = HttpWeatherProvider(cfg.weather_url, ttl=cfg.weather_ttl)
        elif cfg.weather != "none":
            raise ValueError(f"unknown weather provider {cfg.weather!r}; expected none, static or http")
        self.enricher = Enricher(cfg.timezone, weather)
        self.dedupe = Dedupe(cfg.dedupe_window)
        self.popularity = Popularity(cfg.trending_half_life)
        self.model: Recommender = Recommender(**cfg.model)
        self.model_version = 0
        self.applied_seq = 0
        # Partitioned consumption (recofast.engine.partitions): the partitions owned, and
        # each one's position (last applied stream sequence) and events applied through it.
        from recofast.engine.partitions import parse_partitions

        self.fixed_parts = parse_partitions(cfg.partitions)
        self.partitioned = bool(self.fixed_parts) or cfg.lease_partitions > 0
        self.part_seq: dict[int, int] = {}
        self.part_applied: dict[int, int] = {}
        self._cur_part: int | None = None
        self.feeds: Any = None
        self.leases: Any = None
        self._cp_parts: dict[int, tuple[int, int]] = {}  # positions of the last checkpoint
        # What partitioned engines share (recofast.engine.share): item deltas (the stream
        # sequence of the last one applied is checkpointed) and checkpoints in the object store.
        self.share: Any = None
        self.objects: Any = None
        self.delta_seq = 0
        self.delta_included: tuple[str, int] = ("", 0)
        self._handovers: dict[int, asyncio.Task[None]] = {}
        self._positions_task: asyncio.Task[None] | None = None
        self._positions_again = False
        # Partitions resumed from a position whose next events were already shared as item
        # deltas: p -> the last such stream sequence (see _apply_covered).
        self._covered: dict[int, int] = {}
        self._shared_upto: dict[int, int] = {}  # see _shared_positions
        self.engine_id = cfg.engine_id or f"{os.uname().nodename}-{os.getpid()}"
        self.counters = {
            "events_applied_total": 0,
            "events_dlq_total": 0,
            "events_duplicate_total": 0,
            "items_upserted_total": 0,
            "messages_applied_total": 0,
            "apply_errors_total": 0,
            "events_forgotten_total": 0,
            "users_forgotten_total": 0,
            "users_expired_total": 0,
            "item_deltas_published_total": 0,
            "item_delta_bytes_published_total": 0,
            "item_deltas_applied_total": 0,
            "item_deltas_rejected_total": 0,
            "item_deltas_unsent_dropped_total": 0,
            "users_handed_over_total": 0,
            "events_replayed_shared_total": 0,
        }
        self.window = ev.TimeWindow(cfg.event_earliest, cfg.event_max_future)
        self.tombstones = Tombstones(cfg.model_dir)
        self._erase_pending: set[str] = set()  # forgotten users still in older checkpoints
        self._last_progress = time.monotonic()
        self._next_segments = 0.0
        self._next_expire = 0.0
        self._next_health = 0.0
        self.problem: str | None = None  # why the engine is unhealthy (None: it is fine)
        self._batch_started: float | None = None
        self.store_problem: str | None = None
        self.pending = 0  # messages in the stream the engine has not applied (last check)
        self.background_errors = 0
        self.freshness: deque[float] = deque(maxlen=200_000)
        self.stopping = asyncio.Event()
        self.ready = asyncio.Event()
        self._lock_cm = None
        self.writer: liststore.ListWriter | None = None
        self.reader: liststore.ListReader | None = None
        self.nc = None
        self.js = None
        self.sub = None
        self._next_periodic = 0.0
        self.users: dict[str, None] = {}  # every user seen, in first-seen order (for refreshes)
        self.mirror = ListMirror() if cfg.publish_lists else None
        self._shared: SharedSettings | None = None
        self._titles: dict[str, str] = {}
        self.metrics = EngineMetrics(lambda: self.counters)
        self.refresher = Refresher(self)
        self.experiments = cfg.experiments
        self.loop: Loop | None = None
        self._config_mtime = self._mtime()
        self._next_config = 0.0
        # Drift and staleness (recofast.engine.monitor): the loop hands over its hit checks,
        # the batches their event types; watch() reads both between batches.
        self.timeline: deque[dict[str, Any]] = deque(maxlen=TIMELINE_LEN)
        """Drift alerts, adaptations, rollbacks and checkpoints, newest last: dicts with
        ``ts`` (epoch seconds), ``kind`` (drift, adapt, rollback, checkpoint), ``detail``, ..."""
        self.monitor = LiveMonitor(cfg.drift_delta, cfg.drift_mix_delta, cfg.drift_min_observations, cfg.drift_cooldown)
        self.guard = StalenessGuard(cfg.staleness_ratio, cfg.staleness_seconds, cfg.staleness_window,
                                    cfg.staleness_baseline_half_life, cfg.drift_min_observations)
        self.alerts_published = 0
        self._hits_in: list[int] = []
        self._types_in: list[list[str]] = []
        self._cp_checks = [0, 0]  # hit checks since the last checkpoint, and hits among them

    # -- metrics ----------------------------------------------------------------------------

    def _sync_gauges(self) -> None:
        self.metrics.model_version.set(self.model_version)
        self.metrics.stream_seq.set(self.applied_seq)

    # -- state ----------------------------------------------------------------------------

    def load_state(self) -> None:
        cp = self.store.load_latest()
        if cp is None:
            log.info("no checkpoint in %s: starting a new model", self.cfg.model_dir)
            return
        assert cp.model is not None
        self.model = cp.model
        self.users = dict.fromkeys(self.model.user_factors()[0])
        self.model_version = cp.version
        self.applied_seq = int(cp.manifest.get("stream_seq", 0))
        self.part_seq = {int(k): int(v) for k, v in cp.manifest.get("partition_seq", {}).items()}
        self.part_applied = {int(k): int(v) for k, v in cp.manifest.get("partition_applied", {}).items()}
        self._cp_parts = {p: (s, self.part_applied.get(p, 0)) for p, s in self.part_seq.items()}
        self.delta_seq = int(cp.manifest.get("delta_seq", 0))
        inc = cp.manifest.get("share_included")
        self.delta_included = (str(inc[0]), int(inc[1])) if isinstance(inc, list) and len(inc) == 2 else ("", 0)
        for k in self.counters:
            self.counters[k] = int(cp.manifest.get(k, 0))
        self.tombstone_check(cp)
        if cp.state:
            st = msgspec.msgpack.decode(cp.state)
            if st.get("format") != STATE_FORMAT:
                raise ValueError(f"checkpoint v{cp.version}: unknown state format {st.get('format')}")
            self.dedupe.load(st["dedupe"])
            self.popularity.load(st["popularity"])
        log.info(
            "loaded checkpoint v%06d: stream seq %d, %d events applied",
            cp.version, self.applied_seq, self.counters["events_applied_total"],
        )  # fmt: skip

    def tombstone_check(self, cp: Any) -> None:
        """A checkpoint written before a forget was applied may still hold the user (the
        engine died before cleaning it): the tombstones' users are forgotten again."""
        if self.tombstones and cp.model is not None:
            # The ids are not stored, so forget by membership: every user the model knows
            # whose hash is a tombstone.
            ids = [u for u in self.model.user_factors()[0] if u in self.tombstones]
            if ids:
                self.model.forget(ids)
                self._erase_pending.update(ids)
                for u in ids:
                    self.users.pop(u, None)
                log.info("checkpoint v%06d held %d forgotten user(s): forgotten again", cp.version, len(ids))

    def shared_settings(self) -> SharedSettings:
        """What the edges take from the engine, written into every meta record: the shop's
        time zone and the model's context weight (``w_ctx``)."""
        w = float(self.model.options().get("w_ctx", SharedSettings().context_weight))
        if self._shared is None or self._shared.context_weight != w or self._shared.experiments != self.experiments:
            self._shared = SharedSettings(timezone=self.cfg.timezone, context_weight=w, experiments=self.experiments)
        return self._shared

    def recommend_lists(self, users: Sequence[str]) -> list[list[tuple[str, float]]] | list[list[tuple[str, float, str]]]:
        """The top-N lists of ``users``, each scored with the weights of the user's
        experiment variant (the model's own weights for users in none); with the
        ``reasons`` option each item comes with its reason in words."""
        if not self.experiments:
            return self._lists(users, None)
        groups: dict[tuple[tuple[str, float], ...], list[int]] = {}
        for i, u in enumerate(users):
            a = assign(self.experiments, u)
            groups.setdefault(weights_key(a[1] if a is not None else None), []).append(i)
        out: list[list[tuple[str, float]]] = [[] for _ in users]
        for key, idx in groups.items():
            part = [users[i] for i in idx]
            got = self._lists(part, dict(key) if key else None)
            for i, lst in zip(idx, got):
                out[i] = lst  # type: ignore[assignment]
        return out

    def _lists(self, users: Sequence[str], weights: dict[str, float] | None) -> list[list[Any]]:
        if not self.cfg.reasons:
            return self.model.recommend_many(users, k=self.cfg.top_n, weights=weights)  # type: ignore[return-value]
        got = self.model.recommend_many_explained(users, k=self.cfg.top_n, weights=weights)
        return [[(i, s, reason_text(r, self._title)) for i, s, r in lst] for lst in got]

    def _title(self, item: str) -> str | None:
        """An item's title for its reasons (from the list store; a bounded cache)."""
        t = self._titles.get(item)
        if t is None:
            rec = self.reader.item(item) if self.reader is not None else None
            t = rec.title if rec is not None else ""
            if len(self._titles) >= 100_000:
                self._titles.clear()
            self._titles[item] = t
        return t or None

    # -- experiments ------------------------------------------------------------------------

    def _mtime(self) -> float | None:
        try:
            return os.stat(self.cfg.config_file).st_mtime if self.cfg.config_file else None
        except OSError:
            return None

    def reload_experiments(self) -> bool:
        """Reads the experiments of ``config_file`` again when the file has changed (an
        invalid file is logged and the running experiments stay); True when they changed.
        The edges follow through the meta record, without a restart."""
        m = self._mtime()
        if m is None or m == self._config_mtime:
            return False
        self._config_mtime = m
        try:
            exps = load_experiments(self.cfg.config_file)
        except ValueError as e:
            log.error("experiments not changed: %s", e)
            return False
        if exps == self.experiments:
            return False
        self.experiments = exps
        log.info("experiments now: %s", ", ".join(e.name for e in exps) or "none")
        assert self.writer is not None
        self.commit(codec.Commit(meta=codec.MetaRecord(self.model_version, self.applied_seq, time.time(), self.shared_settings())))
        # Lists are rewritten with the new variants' scoring in the next refresh round.
        self._next_periodic = 0.0
        return True

    def _state_bytes(self) -> bytes:
        return msgspec.msgpack.encode({"format": STATE_FORMAT, "dedupe": self.dedupe.dump(), "popularity": self.popularity.dump()})

    def checkpoint(self, extra: dict[str, Any] | None = None) -> int:
        """Writes a checkpoint of the current state (call between batches only). Its manifest
        holds the live hit rate over the hit checks since the previous checkpoint
        (``hit_rate``, None without any; ``hit_checks``), what the staleness guard ranks
        checkpoints by."""
        checks, hits = self._cp_checks
        m = {"stream_seq": self.applied_seq, **self.counters, "time": time.time(),
             "hit_checks": checks, "hit_rate": hits / checks if checks else None, **(extra or {})}
        if self.partitioned:
            m["partition_seq"] = {str(p): s for p, s in self.part_seq.items()}
            m["partition_applied"] = {str(p): n for p, n in self.part_applied.items()}
            m["delta_seq"] = self.share.applied_seq if self.share is not None else self.delta_seq
            # What the model gathered goes out right after; the checkpoint has it, so its deltas
            # are not applied again when the engine restarts from it (recofast.engine.share).
            m["share_included"] = list(self.share.stash()) if self.share is not None else list(self.delta_included)
        cp = self.store.save(self.model, m, self._state_bytes())
        self._cp_checks = [0, 0]
        self._cp_parts = {p: (s, self.part_applied.get(p, 0)) for p, s in self.part_seq.items()}
        self.mark("checkpoint", f"checkpoint v{cp.version:06d} at stream seq {self.applied_seq}", version=cp.version,
                  hit_rate=m["hit_rate"], hit_checks=checks)
        self.model_version = cp.version
        assert self.writer is not None
        self.commit(codec.Commit(meta=codec.MetaRecord(cp.version, self.applied_seq, time.time(), self.shared_settings())))
        self.writer.sync()
        self.metrics.checkpoints.inc()
        log.info("checkpoint v%06d at stream seq %d", cp.version, self.applied_seq)
        if self._erase_pending:  # an erasure that failed earlier is retried with each checkpoint
            self.erase_from_checkpoints()
        return cp.version

    # -- one batch --------------------------------------------------------------------------

    def apply(self, msgs: Sequence[Any]) -> BatchResult:
        """Applies a batch of JetStream messages (runs in a worker thread).

        Messages are decoded into units (events, catalog upserts, forget requests; invalid
        ones go to the DLQ list with their reason). The units are applied together; when that
        raises, the batch is bisected until the offending units are found, which go to the
        DLQ with the exception as the reason while the rest is applied. Only a store that
        cannot take the commit (:data:`RESOURCE_ERRORS`) stops the batch: it raises
        :class:`StoreUnavailable`, nothing is acked, and the caller retries it."""
        res = BatchResult()
        units: list[Unit] = []
        part = self._cur_part
        floor = self.applied_seq if part is None else self.part_seq.get(part, 0)
        last_seq = floor
        window, now = self.window, time.time()
        for m in msgs:
            seq = m.metadata.sequence.stream
            if seq <= floor:
                res.skipped_msgs += 1
                continue
            last_seq = max(last_seq, seq)
            if m.subject == CATALOG_SUBJECT:
                ok_u, bad = ev.decode_item_upserts(m.data, self.accepted, window, now)
                units.extend(Unit(seq, i, UPSERT, u) for i, u in enumerate(ok_u))
            elif m.subject == FORGET_SUBJECT:
                bad = []
                try:
                    units.append(Unit(seq, 0, FORGET, decode_forget(m.data).user))
                except ValueError as e:
                    bad = [ev.Rejected(0, str(e), bytes(m.data))]
            else:
                ok, bad = ev.decode_events(m.data, self.accepted, window, now)
                units.extend(Unit(seq, i, EVENT, e) for i, e in enumerate(ok))
            for r in bad:
                res.dlq.append((seq, r.index, r.reason, r.raw))
        if last_seq == floor:
            return res
        units = self._drop_forgotten(units)
        self._apply_guarded(units, res, last_seq)
        # Only now is the batch applied: advance the position and the counters together.
        if part is None:
            self.applied_seq = last_seq
        else:
            self.part_seq[part] = last_seq
            self.part_applied[part] = self.part_applied.get(part, 0) + res.applied
            self.applied_seq = max(self.applied_seq, last_seq)
        self.counters["events_dlq_total"] += len(res.dlq)
        self.counters["messages_applied_total"] += len(msgs) - res.skipped_msgs
        self.counters["apply_errors_total"] += res.errors
        self._last_progress = time.monotonic()
        return res

    def _drop_forgotten(self, units: list[Unit]) -> list[Unit]:
        """Drops the events of forgotten users, in stream order: a forget request in the
        batch applies to the events after it (those before it are learned and then forgotten)."""
        tomb = self.tombstones
        if not tomb and not any(u.kind == FORGET for u in units):
            return units
        out = []
        pending: set[str] = set()
        for u in units:
            if u.kind == FORGET:
                pending.add(u.obj)
            elif u.kind == EVENT and (u.obj.user in pending or u.obj.user in tomb):
                self.counters["events_forgotten_total"] += 1
                continue
            out.append(u)
        return out

    def _apply_guarded(self, units: list[Unit], res: BatchResult, last_seq: int) -> None:
        """Applies ``units``; on an error, bisects them to isolate the offenders."""
        if not units:
            return
        try:
            self._apply_units(units, res, last_seq)
            return
        except RESOURCE_ERRORS as e:
            raise StoreUnavailable(f"{type(e).__name__}: {e}") from e
        except StoreUnavailable:
            raise
        except Exception as e:  # noqa: BLE001 - isolate it, whatever it is
            if len(units) == 1:
                u = units[0]
                reason = f"error while applying: {type(e).__name__}: {e}"
                log.warning("stream seq %d part %d sent to the DLQ: %s", u.seq, u.index, reason)
                raw = ev.encode(u.obj) if u.kind != FORGET else encode_forget(u.obj)
                res.dlq.append((u.seq, u.index, reason[:1000], raw))
                res.errors += 1
                return
        mid = len(units) // 2
        self._apply_guarded(units[:mid], res, units[mid - 1].seq)
        self._apply_guarded(units[mid:], res, last_seq)

    def _apply_units(self, units: list[Unit], res: BatchResult, last_seq: int) -> None:
        """Learns a run of units and commits its lists. Python-side state (dedupe window,
        popularity, counters) changes only after the commit, so a failed attempt can be
        made again; the model may have learned part of a failed attempt twice."""
        events = [u.obj for u in units if u.kind == EVENT]
        upserts = [u.obj for u in units if u.kind == UPSERT]
        forgets = list(dict.fromkeys(u.obj for u in units if u.kind == FORGET))
        first_event = next((k for k, u in enumerate(units) if u.kind == EVENT), len(units))
        early = {u.obj.item for u in units[:first_event] if u.kind == UPSERT}
        unique = self.dedupe.filter(events)
        try:
            now = time.time()
            b = self.enricher.enrich(unique, now)
            # Catalog text feeds the model's content signal (a new item is recommendable at
            # once, a search finds it), in stream order around the events: upserts published
            # before the batch's events first, the others after them, all before the lists.
            items = self._merge_upserts(upserts)
            self._set_text({i: r for i, r in items.items() if i in early})
            # Learn: every event with an item, in context; searches set the session intent.
            t0 = time.perf_counter()
            if unique:
                self._learn(unique, b, now)
            t1 = time.perf_counter()
            self._set_text({i: r for i, r in items.items() if i not in early})
            if forgets:
                self.model.forget(forgets)
            touched = [u for u in dict.fromkeys(b.users) if u not in forgets]
            lists = self.recommend_lists(touched) if touched else []
            t2 = time.perf_counter()
            stamp = time.time()
            commit = codec.Commit(
                user_lists={u: codec.list_record(pairs, self.model_version, stamp) for u, pairs in zip(touched, lists)},
                items=items,
                meta=codec.MetaRecord(self.model_version, last_seq, stamp, self.shared_settings()),
                delete_users=forgets,
            )
            assert self.writer is not None
            self.commit(commit)
        except BaseException:
            self.dedupe.discard([e.id for e in unique])
            raise
        done = time.time()
        t3 = time.perf_counter()
        for user in forgets:
            self._forget_applied(user)
        res.forgotten.extend(forgets)
        self.popularity.add(b, now)
        self.users.update(dict.fromkeys(touched))
        self.refresher.items_changed(b.items)
        res.applied += len(unique)
        self.metrics.learn.observe(t1 - t0)
        self.metrics.lists.observe(t2 - t1)
        self.metrics.commit.observe(t3 - t2)
        self.metrics.list_writes.inc(len(touched))
        has_ts = [i for i, e in enumerate(unique) if e.ts is not None]
        if has_ts:
            fresh = done - b.ts[has_ts]
            self.metrics.freshness.observe_many(fresh)
            self.freshness.extend(fresh.tolist())
        if self.cfg.drift_detection and unique:
            if len(self._types_in) < 10_000:  # read by watch() after every batch
                self._types_in.append(list(b.types))
        self.counters["events_applied_total"] += len(unique)
        self.counters["events_duplicate_total"] += len(events) - len(unique)
        self.counters["items_upserted_total"] += len(upserts)

    def _forget_applied(self, user: str) -> None:
        """Book-keeping of an applied forget request (the model and LMDB are done)."""
        self.tombstones.add(user)
        self.users.pop(user, None)
        self.dedupe.drop_containing(user)
        self._erase_pending.add(user)
        self.counters["users_forgotten_total"] += 1
        log.info("forgot a user (%d forgotten in all)", len(self.tombstones))

    def _set_text(self, items: dict[str, codec.ItemRecord]) -> None:
        for i in items:
            self._titles.pop(i, None)
        texts = {i: " ".join(x for x in (r.category, r.title, r.text) if x) for i, r in items.items()}
        texts = {i: t for i, t in texts.items() if t}
        if texts:
            self.model.set_item_text(list(texts), list(texts.values()))

    def _learn(self, unique: Sequence[ev.Event], b: EnrichedBatch, now: float) -> None:
        """Learns a batch in order: runs of item events go to ``learn_many`` with their
        context columns; each search with a query goes to ``search`` between the runs.
        Event times count at most up to the engine's clock (the model's trending and
        session clocks never run ahead of it)."""
        cols = context_columns(unique, b)
        np.minimum(b.ts, now, out=b.ts)
        n = len(b.users)
        searches = [i for i, t in enumerate(b.types) if t == "search" and unique[i].query]
        start = 0
        for s in [*searches, n]:
            if s > start:
                self._learn_run(b, cols, start, s)
            if s < n:
                self.model.search(b.users[s], unique[s].query, float(b.ts[s]))  # type: ignore[arg-type]
            start = s  # a search that also names an item is learned in the next run

    def _learn_run(self, b: EnrichedBatch, cols: dict[str, Any], lo: int, hi: int) -> None:
        items = b.items
        if lo == 0 and hi == len(items) and None not in items:
            self.model.learn_many(b.users, items, events=b.types, ts=b.ts, context=cols)
            return
        idx = [i for i in range(lo, hi) if items[i] is not None]
        if not idx:
            return
        ctx = {f: (col[idx] if isinstance(col, np.ndarray) else [col[i] for i in idx]) for f, col in cols.items()}
        self.model.learn_many(
            [b.users[i] for i in idx], [items[i] for i in idx], events=[b.types[i] for i in idx], ts=b.ts[idx], context=ctx
        )

    def _merge_upserts(self, upserts: Sequence[ev.ItemUpsert]) -> dict[str, codec.ItemRecord]:
        out: dict[str, codec.ItemRecord] = {}
        assert self.reader is not None
        for u in upserts:
            old = out.get(u.item) or self.reader.item(u.item) or codec.ItemRecord()  # type: ignore[arg-type]
            ts = ev._seconds(u.ts)
            out[u.item] = codec.ItemRecord(  # type: ignore[index]
                category=old.category if u.category is None else u.category,
                title=old.title if u.title is None else u.title,
                text=old.text if u.text is None else u.text,
                price=old.price if u.price is None else u.price,
                in_stock=old.in_stock if u.in_stock is None else u.in_stock,
                updated=time.time() if ts is None else ts,
            )
        return out

    def commit(self, c: codec.Commit) -> None:
        """Writes to LMDB and, with ``publish_lists``, queues the same records for the bucket."""
        assert self.writer is not None
        self.writer.commit(c)
        if self.mirror is not None:
            self.mirror.add(c)

    def refresh_all(self) -> None:
        """The whole periodic round at once: every user's list, segment lists, a checkpoint."""
        self.refresher.run_all()

    def expire(self) -> list[str]:
        """Expires idle users (and retires items, prunes context keys) in the model, and
        deletes the expired users' lists."""
        gone = self.model.expire()
        if gone:
            for u in gone:
                self.users.pop(u, None)
            self.commit(codec.Commit(delete_users=list(gone)))
            self.counters["users_expired_total"] += len(gone)
        return gone

    # -- NATS -------------------------------------------------------------------------------

    async def _bind_consumer(self) -> None:
        if not self.partitioned:
            self.sub = await bind_consumer(self.js, self.applied_seq)
            return
        from recofast.engine.partitions import SHARED, Feeds, Leases

        self.feeds = Feeds(self.js, self.cfg.batch_size, self.cfg.fetch_timeout, self.engine_id)
        await self.feeds.add(SHARED, self.part_seq.get(SHARED, 0))  # catalogue and forget requests: every engine
        if self.cfg.share_items and self.share is None:
            from recofast.engine.share import ItemShare

            self.share = ItemShare(self.js, self.engine_id, lambda: self.model, self.counters, seconds=self.cfg.share_seconds,
                                   max_items=self.cfg.share_max_items, replicas=self.cfg.stream_replicas,
                                   max_age=self.cfg.share_max_age, max_bytes=self.cfg.share_max_bytes,
                                   max_payload=self.nc.max_payload,
                                   positions=self._shared_positions)
            await self.share.start(self.delta_seq, self.delta_included)
        if self.fixed_parts:
            for p in self.fixed_parts:
                self.part_seq.setdefault(p, 0)
                await self._cover(p)
                await self.feeds.add(p, self.part_seq.get(p, 0))
            log.info("consuming partitions %s", ",".join(map(str, self.fixed_parts)))
            return
        if self.cfg.checkpoint_objects:
            from recofast.engine.share import CheckpointObjects

            self.objects = CheckpointObjects(self.js, self.engine_id, self.cfg.stream_replicas)
        self.leases = Leases(self.js, self.engine_id, self.cfg.lease_partitions, self.cfg.lease_ttl,
                             self.cfg.stream_replicas, self._claimed, self._lost)
        await self.leases.start()

    async def _claimed(self, p: int) -> None:
        """A lease was claimed: the partition resumes at its last checkpointed position
        (whoever wrote it), with the events applied through it. When another engine wrote
        it, the partition's users come first from the checkpoint the position names (in the
        object store), in a task of its own so the leases are renewed meanwhile."""
        pos = await self.leases.position_entry(p)
        seq, applied = int(pos.get("seq", 0)), int(pos.get("applied", 0))
        self.part_seq[p], self.part_applied[p] = seq, applied
        self._cp_parts[p] = (seq, applied)
        await self._cover(p)
        obj = pos.get("object")
        if self.objects is not None and obj and pos.get("engine") != self.engine_id:
            self._handovers[p] = asyncio.create_task(self._take_over(p, seq, str(obj)))
            return
        await self.feeds.add(p, seq)
        log.info("partition %d resumes after stream seq %d (%d events applied before)", p, seq, applied)

    def _shared_positions(self) -> dict[int, int]:
        """What a take of deltas covers: each owned partition's last applied sequence, and
        the last one of each partition this engine owned earlier in this run (so a
        partition it lost keeps its mark until the new owner's deltas pass it)."""
        owned = set(self.owned_partitions())
        for p, q in list(self.part_seq.items()):
            if p in owned:
                self._shared_upto[p] = max(q, self._shared_upto.get(p, 0))
        return dict(self._shared_upto)

    async def _cover(self, p: int) -> None:
        """Notes how far the events of partition ``p`` after its position were already shared
        as item deltas (by this engine before it restarted, or by another that had the
        partition): see :meth:`_apply_covered`."""
        if self.share is None:
            return
        from recofast_sidecar.protocol.names import STREAM

        try:
            last = int((await self.js.stream_info(STREAM)).state.last_seq)
        except Exception as e:  # noqa: BLE001 - replayed as new events
            log.warning("partition %d: cannot read the stream's last sequence (%s)", p, e)
            return
        seq = await self.share.covered(p, last)
        if seq > self.part_seq.get(p, 0):
            self._covered[p] = seq
            log.info("partition %d: events up to stream seq %d were shared already; replayed for their users only", p, seq)

    async def _apply_covered(self, p: int, msgs: list[Any]) -> list[Any] | None:
        """Applies the head of a batch of partition ``p`` whose item knowledge is already
        shared, as deltas this engine applies (another engine's, or its own previous run's
        after its checkpoint): for the users only, and not shared again. Returns the rest of
        the batch (None: stopping)."""
        seq = self._covered[p]
        n = 0
        while n < len(msgs) and msgs[n].metadata.sequence.stream <= seq:
            n += 1
        if n < len(msgs) or msgs[-1].metadata.sequence.stream >= seq:
            del self._covered[p]
        if n:
            before = self.counters["events_applied_total"]
            self.model.set_replay(share=False, items=False)
            try:
                done = await self.handle(msgs[:n])
            finally:
                self.model.set_replay()
            self.counters["events_replayed_shared_total"] += self.counters["events_applied_total"] - before
            if done is None:
                return None
        return msgs[n:]

    async def _take_over(self, p: int, seq: int, obj: str) -> None:
        """Takes partition ``p``'s users from checkpoint object ``obj``, then consumes it."""
        try:
            path = await asyncio.wait_for(self.objects.fetch(obj, Path(self.cfg.model_dir) / ".handover"), HANDOVER_TIMEOUT)
            try:
                users = await asyncio.to_thread(self._import_partition, path, p)
            finally:
                path.unlink(missing_ok=True)
            for u in users:
                self.users.setdefault(u, None)
            log.info("partition %d: %d users taken over from %s", p, len(users), obj)
        except asyncio.CancelledError:
            raise  # the entry stays: a stopping engine writes no position for this partition
        except Exception as e:  # noqa: BLE001 - its users start afresh; the events still replay from the position
            self.background_errors += 1
            log.error("partition %d: users not taken over from %s (%s: %s); they start afresh", p, obj, type(e).__name__, e)
        if self.leases is None or p not in self.leases.owned:
            self._handovers.pop(p, None)
            return
        try:
            await self.feeds.add(p, seq)
            log.info("partition %d resumes after stream seq %d", p, seq)
        except Exception as e:  # noqa: BLE001 - give the lease up: this engine or another claims it again
            self.background_errors += 1
            log.error("partition %d: cannot consume it (%s: %s); giving its lease up", p, type(e).__name__, e)
            self._handovers.pop(p, None)
            await self.leases.release(p)
            await self._lost(p)
            return
        self._handovers.pop(p, None)

    def _import_partition(self, path: Path, p: int) -> list[str]:
        """The users of partition ``p`` in the snapshot at ``path`` (forgotten ones left
        out), copied into the model (runs in a thread); returns them."""
        from recofast.engine.publish import partition_of

        other = Recommender.load(path)
        n_parts = self.cfg.lease_partitions
        users = [u for u in other.user_factors()[0] if partition_of(u, n_parts) == p and u not in self.tombstones]
        self.counters["users_handed_over_total"] += self.model.import_users(other, users)
        return users

    async def _put_positions(self) -> None:
        """The partitions' positions of the last checkpoint, after its model is in the object
        store (the positions name it, for whoever takes a partition over). The checkpoint's
        version and positions are read together first: a checkpoint taken during the upload
        is written the next time."""
        version = self.model_version
        # A partition whose users are still being taken over keeps its previous owner's
        # position (and object) until this engine has checkpointed them.
        parts = {p: v for p, v in self._cp_parts.items() if p not in self._handovers}
        extra: dict[str, Any] = {"version": version}
        if self.objects is not None and version:
            from recofast.engine.checkpoints import MODEL_FILE

            extra["object"] = await self.objects.upload(version, self.store.path(version) / MODEL_FILE)
        await self.leases.put_positions(parts, extra)

    def _positions_later(self) -> None:
        """Uploads the last checkpoint and writes its positions in a task of its own, so the
        engine goes on consuming while a large model goes to the object store (one at a time;
        checkpoints taken meanwhile are written by the next round)."""
        if self._positions_task is not None and not self._positions_task.done():
            self._positions_again = True
            return

        async def rounds() -> None:
            while True:
                self._positions_again = False
                try:
                    await self._put_positions()
                except Exception as e:  # noqa: BLE001 - written again after the next checkpoint
                    log.warning("writing partition positions: %s", e)
                if not self._positions_again:
                    return

        self._positions_task = asyncio.create_task(rounds())

    async def _positions_settled(self) -> None:
        """Stops the background round (before positions are written directly: an older
        round must not write after them)."""
        t, self._positions_task = self._positions_task, None
        if t is not None and not t.done():
            t.cancel()
            await asyncio.gather(t, return_exceptions=True)

    async def _flush_deltas(self) -> None:
        """Publishes the item deltas waiting (those the checkpoint just took), before a
        partition leaves this engine or the engine stops."""
        if self.share is not None:
            try:
                await self.share.publish()
            except Exception as e:  # noqa: BLE001 - the others miss these events' item knowledge
                log.warning("item deltas: the last ones were not published (%s)", e)

    async def _release(self, parts: list[int]) -> None:
        """Hands partitions over to another engine (more engines are live than when they
        were claimed): stops consuming them, checkpoints, writes their positions, drops the
        leases; the next owner resumes right after."""
        for p in parts:
            await self.feeds.remove(p)
        try:
            await asyncio.to_thread(self.checkpoint)
            await self._flush_deltas()  # before the next owner resumes after these events
            await self._positions_settled()
            await self._put_positions()
        except Exception as e:  # noqa: BLE001 - keep them, and try again at the next tick
            log.error("handing over partitions %s: %s", parts, e)
            self.leases.releasing.difference_update(parts)
            for p in parts:
                await self.feeds.add(p, self.part_seq.get(p, 0))
            return
        for p in parts:
            await self.leases.release(p)
            await self._lost(p)

    async def _lost(self, p: int) -> None:
        t = self._handovers.pop(p, None)
        if t is not None:
            t.cancel()
            await asyncio.gather(t, return_exceptions=True)
        await self.feeds.remove(p)
        self.part_seq.pop(p, None)
        self.part_applied.pop(p, None)
        self._cp_parts.pop(p, None)
        self._covered.pop(p, None)

    def owned_partitions(self) -> tuple[int, ...]:
        if self.leases is not None:
            return tuple(sorted(self.leases.owned))
        return self.fixed_parts

    async def handle(self, msgs: Sequence[Any]) -> BatchResult | None:
        """Applies a batch, publishes its rejects, acks it. While the list store cannot take
        the commit, retries every ``store_retry_seconds`` (nothing is fetched meanwhile and
        nothing is lost); returns None if a stop is requested before it could."""
        t0 = time.perf_counter()
        while True:
            self._batch_started = time.monotonic()
            try:
                res = await asyncio.to_thread(self.apply, msgs)
                break
            except StoreUnavailable as e:
                self.metrics.store_stalls.inc()
                if self.store_problem is None:
                    log.error("the list store cannot take commits (%s): fetching stops until it can", e)
                self.store_problem = f"list store unavailable: {e}"
                try:
                    await asyncio.wait_for(self.stopping.wait(), self.cfg.store_retry_seconds)
                    return None  # stopping: the batch is not acked, so it is delivered again
                except asyncio.TimeoutError:
                    continue
            finally:
                self._batch_started = None
        if self.store_problem is not None:
            log.info("the list store takes commits again")
            self.store_problem = None
        if res.dlq:
            await publish_dlq(self.js, res.dlq)
        await msgs[-1].ack()
        if res.forgotten:
            await self._after_forget(res.forgotten)
        self._sync_gauges()
        self.metrics.batches.inc()
        self.metrics.batch.observe(time.perf_counter() - t0)
        return res

    async def _after_forget(self, users: list[str]) -> None:
        """Finishes erasure: the kept checkpoints are rewritten without the users, the KV
        bucket's keys are gone (the commit's ``delete_users`` reach the bucket through the
        list publisher), and a confirmation goes to ``recofast.forgotten``."""
        try:
            await asyncio.to_thread(self.erase_from_checkpoints)
        except Exception as e:  # noqa: BLE001 - retried at the next checkpoint
            self.background_errors += 1
            self.metrics.background_errors.inc()
            log.error("erasing forgotten users from checkpoints: %s", e)
        if self.mirror is not None:
            await self.mirror.flushed()
        for u in users:
            try:
                await self.nc.publish(FORGOTTEN_SUBJECT, encode_forget(u))
            except Exception as e:  # noqa: BLE001
                log.warning("confirming a forget request: %s", e)

    def erase_from_checkpoints(self) -> int:
        """Rewrites the kept checkpoints without the users forgotten since (runs in a thread)."""
        if not self._erase_pending:
            return 0
        users = sorted(self._erase_pending)

        def clean(state: bytes) -> bytes:
            if not state:
                return state
            st = msgspec.msgpack.decode(state)
            gens = st.get("dedupe")
            if gens:
                st["dedupe"] = [[i for i in g if not any(u in i for u in users)] for g in gens]
            return msgspec.msgpack.encode(st)

        n = self.store.erase_users(users, clean)
        self._erase_pending.difference_update(users)
        return n

    async def periodic(self, busy: bool = False) -> None:
        """The periodic work, paced by the clock: segment lists that changed (every
        ``segment_seconds``), expiry (every ``expire_seconds``), and the refresh round (due
        ``refresh_seconds`` after the last one completed), stepped for ``refresh_budget``
        seconds while events wait and for longer when the stream is idle. An error here is
        logged and counted, and the engine goes on."""
        now = time.monotonic()
        try:
            if self.cfg.config_file and now >= self._next_config:
                self._next_config = now + 1.0
                await asyncio.to_thread(self.reload_experiments)
            if now >= self._next_segments:
                self._next_segments = now + self.cfg.segment_seconds
                if self.popularity.dirty:
                    await asyncio.to_thread(self.refresher.write_segments)
            if self.cfg.expire_seconds > 0 and now >= self._next_expire:
                self._next_expire = now + self.cfg.expire_seconds
                if await asyncio.to_thread(self.expire):
                    self._sync_gauges()
            if self.refresher.users is not None or now >= self._next_periodic:
                budget = self.cfg.refresh_budget if busy else max(self.cfg.refresh_budget, self.cfg.fetch_timeout)
                if await asyncio.to_thread(self.refresher.run_for, budget):
                    self.metrics.users.set(self.model.n_users)
                    self.metrics.items.set(self.model.n_items)
                    self._sync_gauges()
                    self._next_periodic = time.monotonic() + self.cfg.refresh_seconds
        except RESOURCE_ERRORS as e:
            self._background_failed("periodic work: the list store", e)
        except Exception as e:  # noqa: BLE001 - never stop the engine for periodic work
            self._background_failed("periodic work", e)

    def _background_failed(self, what: str, e: BaseException) -> None:
        self.background_errors += 1
        self.metrics.background_errors.inc()
        log.exception("%s failed (%s: %s); the engine goes on and retries", what, type(e).__name__, e)
        # Start the round again later; a partial round is harmless (lists are complete records).
        self.refresher.users = None
        self._next_periodic = time.monotonic() + min(self.cfg.refresh_seconds, 10.0)

    async def check_health(self) -> None:
        """Every ``health_seconds``: the durable consumer still exists (recreated at the
        applied sequence if not), and the engine makes progress while messages are pending."""
        from nats.js.errors import NotFoundError

        now = time.monotonic()
        if now < self._next_health:
            return
        self._next_health = now + self.cfg.health_seconds
        try:
            if self.feeds is not None:
                from recofast.engine.partitions import durable

                pending = 0
                for p in list(self.feeds.subs):
                    info = await self.js.consumer_info(STREAM, durable(p, self.engine_id))
                    pending += int(info.num_pending or 0) + int(info.num_ack_pending or 0)
                self.pending = pending
                self._last_progress = time.monotonic() if not pending else self._last_progress
                return
            info = await self.js.consumer_info(STREAM, CONSUMER)
            self.pending = int(info.num_pending or 0) + int(info.num_ack_pending or 0)
        except NotFoundError:
            log.error("durable consumer %s is gone: recreating it at stream seq %d", CONSUMER, self.applied_seq + 1)
            self.metrics.consumer_recreated.inc()
            try:
                await self._bind_consumer()
            except Exception as e:  # noqa: BLE001
                log.error("recreating the consumer failed: %s", e)
            return
        except Exception as e:  # noqa: BLE001 - NATS away: the reconnect logic handles it
            log.warning("consumer check: %s", e)
            return
        self.metrics.pending.set(self.pending)
        idle = time.monotonic() - self._last_progress
        if self.pending and idle > self.cfg.stall_seconds:
            self.problem = f"no progress for {idle:.0f} s with {self.pending} messages pending"
            log.error("engine stalled: %s", self.problem)
        else:
            if not self.pending:
                self._last_progress = time.monotonic()
            self.problem = None

    def health(self) -> tuple[bool, str]:
        """(healthy, status) for ``/healthz``."""
        if not self.ready.is_set():
            return False, "starting"
        if self.nc is None or not self.nc.is_connected:
            return False, "NATS disconnected"
        if self.store_problem:
            return False, self.store_problem
        if self.problem:
            return False, self.problem
        if self._batch_started is not None:
            running = time.monotonic() - self._batch_started
            if running > self.cfg.stall_seconds:
                return False, f"stalled: a batch has been applying for {running:.0f} s"
        return True, "ok"

    # -- lifecycle ----------------------------------------------------------------------------

    async def __aenter__(self) -> Engine:
        self._lock_cm = self.store.lock()
        self._lock_cm.__enter__()
        try:
            await self._start()
        except BaseException as e:
            await self.__aexit__(type(e), e, None)  # release the lock, LMDB and NATS
            raise
        return self

    async def _start(self) -> None:
        import nats

        await asyncio.to_thread(self.load_state)
        self.writer = liststore.ListWriter(
            self.cfg.lmdb, map_size=self.cfg.lmdb_map_size, sync=self.cfg.lmdb_sync, max_map_size=self.cfg.lmdb_max_map_size
        )
        self.reader = self.writer.reader()
        self.refresher.exported_ctx = set(self.reader.affinity_keys())
        meta = self.reader.meta()
        if meta is not None and meta.last_seq > self.applied_seq:
            log.info("LMDB is at stream seq %d, the checkpoint at %d: replaying the difference", meta.last_seq, self.applied_seq)
        self.nc = await nats.connect(self.cfg.nats, name="recofast-engine", max_reconnect_attempts=-1, reconnect_time_wait=0.5)
        self.js = self.nc.jetstream()
        await ensure_streams(self.js, self.cfg)
        from recofast.engine.streams import register_versions

        await register_versions(self.js, self.accepted)
        await self._bind_consumer()
        if self.cfg.attribution:
            if self.partitioned:
                log.warning("this engine owns partitions and runs the closed loop (attribution = true): run it in one "
                            "engine only; the loop's consumers are shared by name, so two would each see part of it")
            self.loop = Loop(self.cfg, self.accepted)
            self.loop.on_hits = self._take_hits
            await self.loop.start(self.js)
            self.metrics.registry.register(self.loop.collector)
        if isinstance(self.enricher.weather_provider, HttpWeatherProvider):
            await self.enricher.weather_provider.start()
        self._next_periodic = time.monotonic() + self.cfg.refresh_seconds
        if self.mirror is not None:
            self.mirror.start(self.js)
        self._sync_gauges()
        self.ready.set()

    async def __aexit__(self, *exc: object) -> None:
        try:
            if self.writer is not None and exc[0] is None:
                try:
                    await asyncio.to_thread(self.checkpoint)  # a graceful stop leaves nothing to replay
                except Exception as e:  # noqa: BLE001 - the stream still holds what is not in a checkpoint
                    log.error("final checkpoint failed (%s); the next start replays from the previous one", e)
                await self._flush_deltas()  # what the last events did to items, before the engine leaves
        finally:
            if self.loop is not None:
                try:
                    await self.loop.stop()
                except Exception as e:  # noqa: BLE001 - what it had not committed is counted after the restart
                    log.warning("stopping the closed loop: %s", e)
                self.loop = None
            if self.mirror is not None:
                await self.mirror.stop()
            if isinstance(self.enricher.weather_provider, HttpWeatherProvider):
                await self.enricher.weather_provider.close()
            if self.feeds is not None:
                await self.feeds.close()
            if self.share is not None:
                await self.share.close()
            for t in list(self._handovers.values()):
                t.cancel()
            await asyncio.gather(*self._handovers.values(), return_exceptions=True)
            if self.leases is not None:
                await self._positions_settled()
                if exc[0] is None:
                    try:  # the final checkpoint's positions, then the leases go
                        await self._put_positions()
                    except Exception as e:  # noqa: BLE001
                        log.warning("writing partition positions: %s", e)
                await self.leases.close(release=exc[0] is None)
            if self.nc is not None and not self.nc.is_closed:
                try:
                    if self.sub is not None:
                        # Every fetched message is acked; a pull subscription with no
                        # request in flight would otherwise hold drain() to its timeout.
                        await self.sub.unsubscribe()
                    await self.nc.drain()
                except Exception as e:  # noqa: BLE001
                    log.warning("NATS drain: %s", e)
            if self.writer is not None:
                self.writer.close()
                self.writer = None
            if self._lock_cm is not None:
                self._lock_cm.__exit__(None, None, None)
                self._lock_cm = None

    def request_stop(self) -> None:
        self.stopping.set()

    async def run(self) -> None:
        """Consumes until :meth:`request_stop`."""
        import nats.errors

        while not self.stopping.is_set():
            timeout = 0.01 if self.refresher.users is not None else self.cfg.fetch_timeout
            if self.feeds is not None:
                await self._run_partitioned(timeout)
                continue
            try:
                msgs = await self.sub.fetch(self.cfg.batch_size, timeout=timeout)
            except (nats.errors.TimeoutError, asyncio.TimeoutError):
                msgs = []
            except nats.errors.Error as e:  # e.g. while the client reconnects: wait, then fetch again
                log.warning("fetch failed (%s); retrying", e)
                await asyncio.sleep(0.5)
                msgs = []
            if msgs and await self.handle(msgs) is None:
                break  # stopping while the store was unavailable
            await self.periodic(busy=bool(msgs))
            await self.watch()
            await self.check_health()

    async def _run_partitioned(self, timeout: float) -> None:
        got = await self.feeds.next(timeout)
        msgs: list[Any] = []
        if got is not None:
            p, msgs, done = got
            try:
                if msgs and (self.leases is None or p in self.leases.owned or p < 0):
                    self._cur_part = p
                    try:
                        rest = await self._apply_covered(p, msgs) if p in self._covered else msgs
                        if rest is None or (rest and await self.handle(rest) is None):
                            self.stopping.set()
                    finally:
                        self._cur_part = None
            finally:
                done.set()
        going = self.leases.releasing - self._handovers.keys() if self.leases is not None else set()
        if going:
            await self._release(sorted(going))  # one being taken over waits
        before = dict(self._cp_parts)
        await self.periodic(busy=bool(msgs))
        if self.share is not None:
            await self.share.tick(time.monotonic())
        if self.leases is not None and self._cp_parts != before:
            self._positions_later()
        await self.watch()
        await self.check_health()

    def snapshot_counts(self) -> dict[str, int]:
        return {"stream_seq": self.applied_seq, "model_version": self.model_version, **self.counters}

    # -- drift and staleness ------------------------------------------------------------------

    def mark(self, kind: str, detail: str, **extra: Any) -> dict[str, Any]:
        """Adds an entry to :attr:`timeline` (and returns it)."""
        entry = {"ts": time.time(), "kind": kind, "detail": detail, **extra}
        self.timeline.append(entry)
        return entry

    def _take_hits(self, hits: list[int]) -> None:
        """The loop's hit checks, kept until :meth:`watch` reads them (at most 100,000: while
        the engine cannot get to them, the oldest go)."""
        self._hits_in.extend(hits)
        if len(self._hits_in) > 100_000:
            del self._hits_in[: len(self._hits_in) - 100_000]

    async def watch(self) -> None:
        """Between batches: feeds the hit checks and event types gathered since the last call
        to the drift detectors and the staleness guard, and acts on what they say (adapts,
        alerts, rolls back). An error here is logged and counted; the engine goes on."""
        hits, self._hits_in[:] = list(self._hits_in), []
        types, self._types_in[:] = list(self._types_in), []
        if not hits and not types:
            return
        try:
            now = time.time()
            if hits:
                self._cp_checks[0] += len(hits)
                self._cp_checks[1] += sum(hits)
            alerts: list[Alert] = []
            if self.cfg.drift_detection:
                for t in types:
                    alerts.extend(self.monitor.events(t, now))
                alerts.extend(self.monitor.hit_many(hits, now))
            for a in alerts:
                await self._on_alert(a)
            if hits:
                stale = self.guard.update(hits, now)
                if self.guard.live is not None:
                    self.metrics.live_hit_rate.set(self.guard.live)
                if stale and self.cfg.staleness_guard:
                    await self._rollback_stale()
                elif stale:
                    self.guard.below_since = now  # off: noticed, nothing done; ask again after staleness_seconds
        except RESOURCE_ERRORS as e:
            self._background_failed("drift and staleness: the list store", e)
        except Exception as e:  # noqa: BLE001 - monitoring must never stop the engine
            self._background_failed("drift and staleness", e)

    async def _on_alert(self, a: Alert) -> None:
        adapt = self.cfg.drift_adapt and (a.signal == "hit_rate" or self.cfg.drift_adapt_on_mix)
        self.metrics.drift_alerts.labels(signal=a.signal).inc()
        log.warning("drift: %s", a.detail)
        self.mark("drift", a.detail, signal=a.signal, before=a.before, after=a.after)
        if adapt:
            c = self.cfg
            self.model.adapt(c.adapt_lr_boost, c.adapt_recency_decay, c.adapt_events)
            self.metrics.adaptations.inc()
            self.mark("adapt", f"adapting for {c.adapt_events} events: learning rate x{c.adapt_lr_boost:g}, recency decay {c.adapt_recency_decay:g}",
                      signal=a.signal)
        await self.alert({"kind": "drift", "signal": a.signal, "detail": a.detail, "index": a.index,
                          "before": a.before, "after": a.after, "adapted": adapt, "model_version": self.model_version, **a.extra})

    async def alert(self, body: dict[str, Any]) -> None:
        """Publishes an alert on ``recofast.alerts`` (JSON, core NATS; lost when nobody listens)."""
        msg = {"v": 1, "ts": time.time(), **body}
        try:
            await self.nc.publish(ALERTS_SUBJECT, msgspec.json.encode(msg))
            self.alerts_published += 1
        except Exception as e:  # noqa: BLE001 - NATS away: the log and the timeline still say it
            log.warning("publishing an alert: %s", e)

    def best_checkpoint(self, before: float) -> tuple[int, float] | None:
        """The kept checkpoint written before ``before`` (epoch seconds) with the highest hit
        rate over at least ``staleness_min_checks`` hit checks: (version, hit rate)."""
        best: tuple[float, int] | None = None
        for v in self.store.versions():
            try:
                m = self.store.read_manifest(v)
            except Exception:  # noqa: BLE001 - a bad manifest is no candidate
                continue
            rate, n = m.get("hit_rate"), int(m.get("hit_checks") or 0)
            if rate is None or n < self.cfg.staleness_min_checks or float(m.get("time", 0)) >= before:
                continue
            if best is None or rate > best[0]:
                best = (float(rate), v)
        return None if best is None else (best[1], best[0])

    def rollback_to(self, version: int, why: str) -> int:
        """Loads the model of checkpoint ``version`` into the running engine (runs in a thread,
        between batches). The stream position, counters, dedupe window and popularity stay
        where they are: the events learned since ``version`` are lost to the model (no replay),
        which is the point. Writes a checkpoint (``model_from``, ``rolled_back_from``) and
        starts a refresh round so every list is rewritten by the restored model."""
        cp = self.store.load(version)
        assert cp.model is not None
        old = self.model_version
        self.model = cp.model
        if self.share is not None:
            self.model.share_items(self.cfg.share_max_items)
        self.refresher.users = None  # a round under way restarts with the restored model
        new = self.checkpoint({"model_from": version, "rolled_back_from": old, "rollback_reason": why})
        self._next_periodic = 0.0
        return new

    async def _rollback_stale(self) -> None:
        g = self.guard
        since = g.below_since if g.below_since is not None else time.time()
        live, base = g.live, g.baseline
        why = (f"live hit rate {live:.3f} below {self.cfg.staleness_ratio:g} x its baseline {base:.3f}"
               f" for {time.time() - since:.0f} s")
        found = await asyncio.to_thread(self.best_checkpoint, since)
        if found is None:
            log.error("staleness: %s, and no kept checkpoint from before has a hit rate to roll back to", why)
            self.mark("rollback", f"{why}; no checkpoint to roll back to", done=False)
            await self.alert({"kind": "rollback", "signal": "hit_rate", "detail": f"{why}; no checkpoint to roll back to", "done": False})
            g.below_since = time.time()  # ask again after staleness_seconds
            return
        version, rate = found
        old = self.model_version
        new = await asyncio.to_thread(self.rollback_to, version, why)
        detail = f"{why}: rolled back to the model of v{version:06d} (hit rate {rate:.3f}), now v{new:06d}"
        log.error("staleness: %s", detail)
        self.metrics.rollbacks.inc()
        self.mark("rollback", detail, model_from=version, rolled_back_from=old, version=new, done=True)
        await self.alert({"kind": "rollback", "signal": "hit_rate", "detail": detail, "model_from": version,
                          "rolled_back_from": old, "model_version": new, "done": True})
        g.reset()
        self.monitor.reset()
        self._sync_gauges()




def create_app(engine: Engine):  # noqa: ANN201
    """The engine's HTTP app: ``/healthz`` (JSON, 503 until the engine is consuming; with
    the partitions it owns when it owns some),
    Prometheus ``/metrics``, the closed loop's ``/v1/loop``, and the dashboard and the demo
    shop (:mod:`recofast.engine.dashboard`: ``/dashboard``, ``/dashboard/data``, ``/shop``;
    ``/`` leads to the dashboard)."""
    from aiohttp import web
    from recofast_sidecar.protocol.names import PATH_HEALTHZ, PATH_LOOP, PATH_METRICS

    key = web.AppKey("engine", Engine)

    async def healthz(request: web.Request) -> web.Response:
        e = request.app[key]
        ok, status = e.health()
        body = {"status": status, "pending": e.pending, **e.snapshot_counts()}
        if e.feeds is not None:
            body["partitions"] = list(e.owned_partitions())
        if e.loop is not None:
            body["loop"] = e.loop.problem or "ok"
        return web.json_response(body, status=200 if ok else 503)

    async def metrics(request: web.Request) -> web.Response:
        return web.Response(body=request.app[key].metrics.render(), headers={"Content-Type": CONTENT_TYPE})

    async def loop_json(request: web.Request) -> web.Response:
        e = request.app[key]
        if e.loop is None:
            return web.json_response({"error": "attribution is off (option attribution)", "status": 404}, status=404)
        q = request.query
        try:
            minutes = float(q["minutes"]) if "minutes" in q else None
            if minutes is not None and not (0 < minutes < 1e7):
                raise ValueError("`minutes` must be positive")
            by = [d for d in q.get("by", "endpoint,source").split(",") if d]
            ips = [float(x) for x in q.getall("ips", [])]
            if any(not 0.0 <= x <= 1.0 for x in ips) or len(ips) > 10:
                raise ValueError("`ips` takes up to 10 exploration rates between 0 and 1")
        except ValueError as err:
            return web.json_response({"error": str(err), "status": 400}, status=400)
        try:
            body = await asyncio.to_thread(_loop_report, e, by, minutes, ips)
        except ValueError as err:
            return web.json_response({"error": str(err), "status": 400}, status=400)
        return web.json_response(body)

    app = web.Application()
    app[key] = engine
    app.router.add_get(PATH_HEALTHZ, healthz)
    app.router.add_get(PATH_METRICS, metrics)
    app.router.add_get(PATH_LOOP, loop_json)
    from recofast.engine import dashboard

    dashboard.add_routes(app, engine)
    return app


def _loop_report(e: Engine, by: list[str], minutes: float | None, ips: list[float]) -> dict[str, Any]:
    from recofast.engine import report
    from recofast.engine.attribution import connect_readonly

    db = connect_readonly(e.loop.store.path)  # type: ignore[union-attr]
    try:
        out = report.loop_report(db, e.experiments, by, minutes)
        if ips:
            out["ips"] = [report.ips_report(db, t, hours=None if minutes is None else minutes / 60) for t in ips]
        return out
    finally:
        db.close()


async def serve(cfg: EngineConfig, install_signals: bool = True) -> dict[str, int]:
    """Runs the engine until SIGTERM/SIGINT (or :meth:`Engine.request_stop`); starts an
    embedded nats-server first when ``cfg.nats`` is empty. Returns the final counts."""
    from recofast.engine.natsserver import NatsServer

    embedded = None
    if not cfg.nats:
        embedded = NatsServer(cfg.nats_data_dir, port=-1)
        url = await asyncio.to_thread(embedded.start)
        (embedded.data_dir / "url").write_text(url + "\n")
        log.info("embedded nats-server at %s (data in %s)", url, cfg.nats_data_dir)
        cfg = cfg.replace(nats=url)
    runner = None
    engine = Engine(cfg)
    if install_signals:  # before the (possibly long) start, so an early SIGTERM is graceful too
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, engine.request_stop)
    try:
        async with engine:
            if cfg.http_port:
                from aiohttp import web

                runner = web.AppRunner(create_app(engine), access_log=None)
                await runner.setup()
                await web.TCPSite(runner, cfg.http_host, cfg.http_port).start()
            log.info("engine ready: stream seq %d, model v%06d, pid %d", engine.applied_seq, engine.model_version, os.getpid())
            await engine.run()
        return engine.snapshot_counts()
    finally:
        if runner is not None:
            await runner.cleanup()
        if embedded is not None:
            await asyncio.to_thread(embedded.stop)


# -- CLI ------------------------------------------------------------------------------------
