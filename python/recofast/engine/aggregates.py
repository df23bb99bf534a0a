"""What the engine aggregates beside the model, kept in its checkpoints: the window of recent
event ids (:class:`Dedupe`) and popular and trending items per segment (:class:`Popularity`)."""

from __future__ import annotations

import heapq
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
from recofast_sidecar.protocol import codec
from recofast_sidecar.protocol import events as ev
from recofast_sidecar.protocol.context import segment_variants

from recofast.engine.enrich import EnrichedBatch

# How much an event counts towards popular and trending lists.
POPULARITY_WEIGHTS = {"view": 1.0, "click": 1.0, "add_to_cart": 2.0, "purchase": 3.0}


class Dedupe:
    """Remembers the last ``window`` event ids (two generations of sets)."""

    def __init__(self, window: int) -> None:
        self.half = max(1, window // 2)
        self.cur: set[str] = set()
        self.prev: set[str] = set()

    def filter(self, events: Sequence[ev.Event]) -> list[ev.Event]:
        ids = [e.id for e in events]
        new = set(ids)
        cur, prev = self.cur, self.prev
        # Fast path (the usual batch): no id seen before or twice, and no generation turns
        # over within the batch; the same answer as the loop below, in set operations.
        if len(new) == len(ids) and len(cur) + len(ids) < self.half and new.isdisjoint(cur) and new.isdisjoint(prev):
            cur |= new
            return list(events)
        out = []
        cur, prev = self.cur, self.prev
        for e in events:
            i = e.id
            if i in cur or i in prev:
                continue
            cur.add(i)
            out.append(e)
            if len(cur) >= self.half:
                self.prev, self.cur = cur, set()
                cur, prev = self.cur, self.prev
        return out

    def discard(self, ids: Sequence[str]) -> None:
        """Forgets ``ids`` (a batch that failed is applied again, not dropped as duplicates)."""
        for i in ids:
            self.cur.discard(i)
            self.prev.discard(i)

    def drop_containing(self, text: str) -> None:
        """Forgets every id that contains ``text`` (erasure: ids may embed a user id)."""
        self.cur = {i for i in self.cur if text not in i}
        self.prev = {i for i in self.prev if text not in i}

    def dump(self) -> list[list[str]]:
        return [list(self.prev), list(self.cur)]

    def load(self, gens: list[list[str]]) -> None:
        self.prev, self.cur = set(gens[0]), set(gens[1])


class Popularity:
    """Popular (all-time weighted counts) and trending (exponentially decayed, in forward-
    decay form) scores of items per segment. A segment is the full context key
    (``country=GB|device=mobile|hour=evening``), each of its parts (``country=GB``, ...),
    and ``all``; each is kept aggregated as events arrive, so the lists are a top-n away.

    Event times count at most up to ``now`` (the engine's clock), so a future-dated event
    cannot move the decay base and lead the trending list for good. Bounded: at most
    ``max_segments`` segments (new ones past that are not tracked, ``all`` and the parts of
    known segments still are) and ``max_items`` items a segment (the weakest half is dropped
    when a table outgrows it)."""

    def __init__(self, half_life: float, max_segments: int = 10_000, max_items: int = 20_000) -> None:
        self.half_life = half_life
        self.max_segments = max_segments
        self.max_items = max_items
        self.pop: dict[str, dict[str, float]] = {}
        self.trend: dict[str, dict[str, float]] = {}
        self.base: float | None = None  # trend values are scaled to 2**((t - base) / half_life)
        self.latest = 0.0
        self.dirty: set[str] = set()  # segments changed since their lists were last written
        self._variants: dict[str, tuple[str, ...]] = {}

    def _segments_of(self, seg: str) -> tuple[str, ...]:
        v = self._variants.get(seg)
        if v is None:
            if len(self._variants) > 4 * self.max_segments:
                self._variants.clear()
            v = self._variants[seg] = segment_variants(seg)
        return v

    def add(self, b: EnrichedBatch, now: float | None = None) -> None:
        w = np.array([POPULARITY_WEIGHTS.get(t, 0.0) for t in b.types])
        if not len(w) or not w.any():
            return
        now = time.time() if now is None else now
        ts = np.minimum(b.ts, now)
        if self.base is None:
            self.base = float(ts.min())
        tmax = float(ts.max())
        self.latest = max(self.latest, tmax)
        if (tmax - self.base) / self.half_life > 400:  # keep the scale away from overflow
            scale = 2.0 ** ((self.base - tmax) / self.half_life)
            self.trend = {s: {i: v * scale for i, v in t.items() if v * scale > 1e-12} for s, t in self.trend.items()}
            self.base = tmax
        decay = w * np.exp2(np.clip((ts - self.base) / self.half_life, -1000, 1000))
        # Sum the batch per segment and item first, then add each segment's sums to every
        # variant of the segment (one table lookup per variant, not per item and variant).
        by_seg: dict[str, tuple[dict[str, float], dict[str, float]]] = {}
        for seg, item, wi, di in zip(b.segment, b.items, w.tolist(), decay.tolist()):
            if wi and item is not None:
                sums = by_seg.get(seg)
                if sums is None:
                    sums = by_seg[seg] = ({}, {})
                sw, sd = sums
                sw[item] = sw.get(item, 0.0) + wi
                sd[item] = sd.get(item, 0.0) + di
        pop, trend, dirty = self.pop, self.trend, self.dirty
        grown: set[str] = set()
        for seg, (sw, sd) in by_seg.items():
            for s in self._segments_of(seg):
                t = pop.get(s)
                if t is None:
                    if len(pop) >= self.max_segments:
                        continue
                    t = pop[s] = {}
                    trend[s] = {}
                tt = trend[s]
                get = t.get
                for item, wi in sw.items():
                    t[item] = get(item, 0.0) + wi
                get = tt.get
                for item, di in sd.items():
                    tt[item] = get(item, 0.0) + di
                dirty.add(s)
                if len(t) > self.max_items:
                    grown.add(s)
        for s in grown:
            for table in (pop, trend):
                keep = heapq.nlargest(self.max_items // 2, table[s].items(), key=lambda kv: kv[1])
                table[s] = dict(keep)

    def lists(self, n: int, version: int, now: float, only: set[str] | None = None) -> dict[str, codec.ListRecord]:
        """Top-``n`` popular and trending lists of every segment (or of those in ``only``)."""
        out: dict[str, codec.ListRecord] = {}
        scale = 2.0 ** ((self.base - self.latest) / self.half_life) if self.base is not None else 1.0
        for kind, tables, mult in (("popular", self.pop, 1.0), ("trending", self.trend, scale)):
            for s in tables if only is None else only:
                table = tables.get(s)
                if table is None:
                    continue
                top = heapq.nlargest(n, table.items(), key=lambda kv: kv[1])
                out[codec.segment_key(kind, s)] = codec.ListRecord(
                    items=[i for i, _ in top], scores=[float(v * mult) for _, v in top], model_version=version, time=now
                )
        return out

    def take_dirty(self) -> set[str]:
        d, self.dirty = self.dirty, set()
        return d

    def dump(self) -> dict[str, Any]:
        return {"pop": self.pop, "trend": self.trend, "base": self.base, "latest": self.latest}

    def load(self, d: dict[str, Any]) -> None:
        self.pop, self.trend = d["pop"], d["trend"]
        self.base, self.latest = d["base"], d["latest"]
        self.dirty = set(self.pop)


__all__ = ["POPULARITY_WEIGHTS", "Dedupe", "Popularity"]
