"""The closed loop as the engine runs it: two durable consumers (impressions, and the event
stream read again for attribution) feeding :class:`~recofast.engine.attribution.LoopStore`,
pruning, and the ``recofast_loop_*`` Prometheus counters.

Each round drains the impressions first and then takes a batch of events, so a click is
attributed after the impression of the list it came from has been stored (a ``rec_id``
still unknown waits ``attribution_grace`` seconds for it). The SQLite work runs in a worker
thread; the event loop never waits on it. Its consumers start at the sequences the loop
database holds, apart from the engine's learning consumer, so attribution never slows
learning and a crash of either is recovered on its own.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from recofast_sidecar.protocol import events as ev
from recofast_sidecar.protocol.names import (
    CATALOG_SUBJECT,
    FORGET_SUBJECT,
    IMPRESSIONS_STREAM,
    LOOP_EVENTS_CONSUMER,
    LOOP_IMPRESSIONS_CONSUMER,
    STREAM,
)

from recofast.engine.attribution import COUNTS, EVENTS, IMPRESSIONS, LoopStore, Windows
from recofast.engine.config import EngineConfig
from recofast.engine.streams import unsubscribe_quietly

log = logging.getLogger("recofast.engine")

_HELP = {
    "lists": "Lists served (impressions of whole lists), by endpoint, source of the first item, experiment and variant.",
    "shown": "Items shown in served lists, by endpoint, the item's source, experiment and variant.",
    "clicks": "Clicks attributed to served lists.",
    "carts": "Add-to-carts attributed to served lists.",
    "purchases": "Purchases attributed to served lists (each list and item once).",
    "revenue": "Revenue (price × quantity) of purchases attributed to served lists.",
    "hit_checks": "Served lists followed by an item event of their user (the live hit rate's denominator).",
    "hits": "Served lists whose user's next item was in them (the live hit rate's numerator).",
}


def loop_db_path(cfg: EngineConfig) -> Path:
    """Where the loop database is: the option ``loop_db``, else ``<model_dir>/loop.sqlite3``."""
    return Path(cfg.loop_db) if cfg.loop_db else Path(cfg.model_dir) / "loop.sqlite3"


class LoopCollector(Collector):
    """The loop's totals as Prometheus counters (read from the loop database's ``totals``,
    which survive restarts), kept in memory and refreshed after each applied batch."""

    def __init__(self) -> None:
        self.rows: list[tuple[tuple[str, str, str, str], dict[str, float]]] = []
        self.unattributed: dict[tuple[str, str], int] = {}
        self.lag: dict[str, float] = {}

    def collect(self) -> Iterator[Metric]:
        labels = ["endpoint", "source", "experiment", "variant"]
        for c in COUNTS:
            m = CounterMetricFamily(f"recofast_loop_{c}", _HELP[c], labels=labels)
            for key, counts in self.rows:
                m.add_metric(list(key), counts[c])
            yield m
        u = CounterMetricFamily("recofast_loop_unattributed", "Clicks, add-to-carts and purchases no served list is credited with, by type and reason.",
                                labels=["type", "reason"])
        for (kind, reason), n in sorted(self.unattributed.items()):
            u.add_metric([kind, reason], n)
        yield u
        g = GaugeMetricFamily("recofast_loop_pending_messages", "Messages the closed loop has not applied yet, by stream.", labels=["stream"])
        for name, v in sorted(self.lag.items()):
            g.add_metric([name], v)
        yield g


class Loop:
    """Attribution inside the engine: ``await loop.start(js)``, then ``await loop.stop()``."""

    def __init__(self, cfg: EngineConfig, accepted: tuple[int, ...] = ev.ACCEPTED_VERSIONS) -> None:
        self.cfg = cfg
        self.accepted = accepted
        self.window = ev.TimeWindow(cfg.event_earliest, cfg.event_max_future)
        self.store = LoopStore(
            loop_db_path(cfg),
            Windows(click=cfg.click_window, cart=cfg.cart_window, purchase=cfg.purchase_window, grace=cfg.attribution_grace),
            keep_hours=cfg.loop_keep_hours, max_impressions=cfg.loop_max_impressions, keep_days=cfg.loop_keep_days,
        )
        self.collector = LoopCollector()
        self.errors = 0
        self.problem: str | None = None
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._imp_sub: Any = None
        self._ev_sub: Any = None
        self._js: Any = None
        self._next_prune = 0.0
        self._next_lag = 0.0
        self.on_hits: Callable[[list[int]], None] | None = None
        """Called (in the event loop) with each batch's new hit checks, in order."""

    async def start(self, js: Any) -> None:
        from recofast.engine.streams import bind_durable

        self._js = js
        self._imp_sub = await bind_durable(js, IMPRESSIONS_STREAM, LOOP_IMPRESSIONS_CONSUMER, self.store.seq(IMPRESSIONS))
        self._ev_sub = await bind_durable(js, STREAM, LOOP_EVENTS_CONSUMER, self.store.seq(EVENTS))
        await asyncio.to_thread(self._refresh_collector)
        self._task = asyncio.create_task(self.run())

    async def stop(self) -> None:
        """Stops after the round in flight (its commit and ack complete), then closes the database."""
        self._stopping.set()
        if self._task is not None:
            try:
                await asyncio.wait_for(self._task, 30)
            except (asyncio.TimeoutError, asyncio.CancelledError):
                self._task.cancel()
            except Exception:  # noqa: BLE001 - logged in run()
                pass
        for sub in (self._imp_sub, self._ev_sub):
            await unsubscribe_quietly(sub)
        await asyncio.to_thread(self.store.close)

    async def run(self) -> None:
        while not self._stopping.is_set():
            try:
                await self.step()
                self.problem = None
            except Exception as e:  # noqa: BLE001 - attribution must never stop the engine
                self.errors += 1
                self.problem = f"{type(e).__name__}: {e}"
                log.exception("the closed loop failed a round (%s); it retries", self.problem)
                try:
                    await asyncio.wait_for(self._stopping.wait(), 1.0)
                except asyncio.TimeoutError:
                    pass

    async def _fetch(self, sub: Any, n: int, timeout: float) -> list[Any]:
        import nats.errors

        try:
            return await sub.fetch(n, timeout=timeout)
        except (nats.errors.TimeoutError, asyncio.TimeoutError):
            return []

    async def step(self) -> int:
        """One round: every impression waiting, then one batch of events. Returns the messages applied."""
        done = 0
        for _ in range(50):  # drained, but a flood of impressions does not starve the events
            msgs = await self._fetch(self._imp_sub, 500, 0.02)
            if not msgs:
                break
            await asyncio.to_thread(self.store.apply_impressions, [(m.metadata.sequence.stream, m.data) for m in msgs])
            await msgs[-1].ack()
            done += len(msgs)
        msgs = await self._fetch(self._ev_sub, self.cfg.batch_size, self.cfg.fetch_timeout)
        if msgs:
            batch = [(m.metadata.sequence.stream, m.subject, m.data) for m in msgs]
            await asyncio.to_thread(
                self.store.apply_events, batch, None, self.accepted, self.window, FORGET_SUBJECT, (CATALOG_SUBJECT,)
            )
            await msgs[-1].ack()
            done += len(msgs)
            hits = self.store.take_hits()
            if hits and self.on_hits is not None:
                self.on_hits(hits)
        else:
            await asyncio.to_thread(self.store.retry_pending)
        now = time.monotonic()
        if now >= self._next_prune:
            self._next_prune = now + 60.0
            await asyncio.to_thread(self.store.prune)
        if done or now >= self._next_lag:
            await asyncio.to_thread(self._refresh_collector)
        if now >= self._next_lag:
            self._next_lag = now + 5.0
            await self._lag()
        return done

    def _refresh_collector(self) -> None:
        self.collector.rows = self.store.totals()
        self.collector.unattributed = self.store.unattributed()

    async def _lag(self) -> None:
        for name, stream, durable in (("impressions", IMPRESSIONS_STREAM, LOOP_IMPRESSIONS_CONSUMER), ("events", STREAM, LOOP_EVENTS_CONSUMER)):
            try:
                info = await self._js.consumer_info(stream, durable)
                self.collector.lag[name] = float((info.num_pending or 0) + (info.num_ack_pending or 0))
            except Exception as e:  # noqa: BLE001 - NATS away, or the consumer was deleted
                log.debug("loop consumer %s: %s", durable, e)
                if "not found" in str(e).lower():
                    from recofast.engine.streams import bind_durable

                    seq = self.store.seq(IMPRESSIONS if name == "impressions" else EVENTS)
                    sub = await bind_durable(self._js, stream, durable, seq)
                    if name == "impressions":
                        self._imp_sub = sub
                    else:
                        self._ev_sub = sub


__all__ = ["Loop", "LoopCollector", "loop_db_path"]
