"""The engine's periodic round, in steps between batches: every known user's list, the
popular and trending lists per segment, the context records the sidecar re-ranks with, the
neighbours of items that changed, and then a checkpoint. Stepping keeps batches flowing (and
lists fresh) while a large shop is refreshed."""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

from recofast_sidecar.protocol import codec

if TYPE_CHECKING:
    from recofast.engine.service import Engine


class Refresher:
    """The state of the round (where it is) and of what the sidecar was last given (the
    context keys exported, the items whose neighbours changed since)."""

    def __init__(self, engine: Engine) -> None:
        self.e = engine
        self.users: list[str] | None = None  # the round's users (None: no round under way)
        self.pos = 0
        self.t0 = 0.0
        self.items: list[str] = []
        self.item_pos = 0
        self.exported_ctx: set[str] = set()  # context keys with an affinity list in LMDB
        self.similar_dirty: dict[str, None] = {}  # items whose neighbours changed, oldest first

    def items_changed(self, items: Iterable[str | None]) -> None:
        """Notes items whose neighbours may have changed (bounded: the oldest half is dropped
        past four rounds' worth)."""
        dirty = self.similar_dirty
        for i in items:
            if i is not None:
                dirty[i] = None
        if len(dirty) > 4 * max(1, self.e.cfg.similar_per_round):
            for k in list(itertools.islice(dirty, len(dirty) // 2)):
                del dirty[k]

    def context_commit(self, now: float) -> codec.Commit:
        """The context records for the sidecar: each context key's affinity list (keys no
        longer exported are written empty) and the fresh items."""
        v = self.e.model_version
        aff = self.e.model.context_affinities(top=self.e.cfg.context_top)
        recs = {k: codec.list_record(pairs, v, now) for k, pairs in aff.items()}
        for k in self.exported_ctx - recs.keys():
            recs[k] = codec.ListRecord(items=[], scores=[], model_version=v, time=now)
        self.exported_ctx = set(aff)
        fresh = self.e.model.fresh_items()[: codec.MAX_LIST_LEN]
        return codec.Commit(affinities=recs, fresh=codec.ListRecord(items=fresh, scores=[0.0] * len(fresh), model_version=v, time=now))

    def step(self) -> bool:
        """One step of the periodic work (runs in a worker thread, between batches): the
        next ``refresh_chunk`` users' lists; then the segment lists; the context records;
        the neighbours of items that changed; then a checkpoint. Returns True when the round
        is complete. Stepping keeps batches flowing (and lists fresh) while a large shop is
        refreshed."""
        assert self.e.writer is not None
        if self.users is None:
            self.t0 = time.perf_counter()
            self.e.model.refresh()
            self.users = list(self.e.users)
            self.pos = 0
            self.items = list(itertools.islice(self.similar_dirty, max(0, self.e.cfg.similar_per_round)))
            self.item_pos = 0
        pos = self.pos
        n = len(self.users)
        if pos < n:
            part = [u for u in self.users[pos : pos + self.e.cfg.refresh_chunk] if u in self.e.users]
            lists = self.e.recommend_lists(part) if part else []
            stamp = time.time()
            self.e.commit(codec.Commit(user_lists={u: codec.list_record(p, self.e.model_version, stamp) for u, p in zip(part, lists)}))
            self.e.metrics.list_writes.inc(len(part))
            self.pos = min(pos + self.e.cfg.refresh_chunk, n)
            return False
        if pos < n + 1:  # the segment lists, as one step
            self.write_segments(everything=True)
            self.pos = n + 1
            return False
        if pos == n + 1:  # context affinities and fresh items for the sidecar, as one step
            if self.e.cfg.context_top > 0:
                self.e.commit(self.context_commit(time.time()))
            self.pos = n + 2
            return False
        if self.item_pos < len(self.items):  # neighbours of changed items
            part = self.items[self.item_pos : self.item_pos + self.e.cfg.refresh_chunk]
            self.e.commit(self.similar_commit(part))
            self.item_pos += len(part)
            return False
        self.e.checkpoint()
        self.users = None
        self.e.metrics.refresh.observe(time.perf_counter() - self.t0)
        return True

    def similar_commit(self, items: Sequence[str]) -> codec.Commit:
        """Each item's neighbours (``similar_items``) for the sidecar's ``/similar``."""
        stamp = time.time()
        out = {}
        k = self.e.cfg.similar_top
        for i in items:
            self.similar_dirty.pop(i, None)
            if k > 0:
                out[i] = codec.list_record(self.e.model.similar_items(i, k=k), self.e.model_version, stamp)
        return codec.Commit(similar=out)

    def write_segments(self, everything: bool = False) -> int:
        """Writes the popular and trending lists of the segments that changed (all of them
        with ``everything``); returns how many segments were written."""
        dirty = self.e.popularity.take_dirty()
        only = None if everything else dirty
        if only is not None and not only:
            return 0
        try:
            self.e.commit(codec.Commit(segments=self.e.popularity.lists(self.e.cfg.popular_n, self.e.model_version, time.time(), only)))
        except BaseException:
            self.e.popularity.dirty |= dirty
            raise
        return len(self.e.popularity.pop) if only is None else len(only)

    def run_all(self) -> None:
        """The whole periodic round at once: every user's list, segment lists, a checkpoint."""
        while not self.step():
            pass

    def run_for(self, budget: float) -> bool:
        """Refresh steps for up to ``budget`` seconds; True when the round completed."""
        deadline = time.perf_counter() + budget
        while True:
            if self.step():
                return True
            if time.perf_counter() >= deadline:
                return False


__all__ = ["Refresher"]
