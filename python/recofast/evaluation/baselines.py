"""The peers recofast is evaluated against, each behind one interface (:class:`Baseline`):
popularity (all-time and recent), item-kNN over a co-occurrence window, River's FunkMF, and
implicit's ALS refit once a day of event time; and recofast itself (:class:`RecofastModel`),
with or without context."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import numpy as np

from recofast.recommender import Recommender


class Baseline:
    """What the harness needs of a model."""

    name = "?"

    def recommend(self, user: str, k: int, seen: set[str]) -> Sequence[str]:
        raise NotImplementedError

    def learn(self, user: str, item: str, event: str, ts: float) -> None:
        raise NotImplementedError

    def recommend_ctx(self, user: str, k: int, seen: set[str], ctx: dict[str, Any] | None, ts: float | None = None) -> Sequence[str]:
        """:meth:`recommend` in a context (ignored unless the model uses context)."""
        return self.recommend(user, k, seen)

    def learn_ctx(self, user: str, item: str, event: str, ts: float, ctx: dict[str, Any] | None) -> None:
        self.learn(user, item, event, ts)

    def search(self, user: str, query: str, ts: float) -> None:
        """A search event (most models ignore it)."""

    def add_items(self, items: list[str], texts: list[str]) -> None:
        """Items entering the catalogue, with their text (most models ignore it)."""


class ItemIndex:
    """Dense indices for item ids, shared by the numpy baselines."""

    def __init__(self) -> None:
        self.index: dict[str, int] = {}
        self.ids: list[str] = []

    def get(self, item: str) -> int:
        i = self.index.get(item)
        if i is None:
            i = self.index[item] = len(self.ids)
            self.ids.append(item)
        return i


def _top_excluding(scores: np.ndarray, k: int, exclude: list[int]) -> list[int]:
    """Indices of the k best scores (ties to the lower index), skipping `exclude`."""
    n = len(scores)
    if n == 0:
        return []
    m = min(n, k + len(exclude))
    if m < n:
        cand = np.argpartition(-scores, m - 1)[:m]
    else:
        cand = np.arange(n)
    order = cand[np.lexsort((cand, -scores[cand]))]
    ex = set(exclude)
    return [int(i) for i in order if i not in ex][:k]


class Pop(Baseline):
    """All-time popularity."""

    name = "pop"

    def __init__(self, items: ItemIndex) -> None:
        self.items = items
        self.counts = np.zeros(1024, dtype=np.float64)

    def _bump(self, i: int, w: float) -> None:
        if i >= len(self.counts):
            self.counts = np.concatenate([self.counts, np.zeros(len(self.counts))])
        self.counts[i] += w

    def recommend(self, user, k, seen):
        n = len(self.items.ids)
        ex = [self.items.index[s] for s in seen if s in self.items.index]
        return [self.items.ids[i] for i in _top_excluding(self.counts[:n], k, ex)]

    def learn(self, user, item, event, ts):
        self._bump(self.items.get(item), 1.0)


class RecentPop(Pop):
    """Popularity with exponential decay in event time (half-life in days)."""

    name = "recentpop"

    def __init__(self, items: ItemIndex, half_life_days: float = 7.0) -> None:
        super().__init__(items)
        self.rate = math.log(2) / (half_life_days * 86400.0)
        self.t0: float | None = None

    def learn(self, user, item, event, ts):
        if self.t0 is None:
            self.t0 = ts
        x = (ts - self.t0) * self.rate
        if x > 600:  # renormalise before exp() overflows
            self.counts *= math.exp(-x)
            self.t0 = ts
            x = 0.0
        self._bump(self.items.get(item), math.exp(x))


class RecofastModel(Baseline):
    """recofast's Recommender; with ``use_context`` it learns and recommends with each
    event's context and takes searches as intent."""

    def __init__(self, name: str, rec: Recommender, use_context: bool = True, explore: int = 0) -> None:
        self.name = name
        self.rec = rec
        self.use_context = use_context
        self.explore = explore

    def recommend(self, user, k, seen):
        return [i for i, _ in self.rec.recommend(user, k, exclude_seen=True, explore=self.explore)]

    def recommend_ctx(self, user, k, seen, ctx, ts=None):
        c = ctx if self.use_context else None
        return [i for i, _ in self.rec.recommend(user, k, exclude_seen=True, context=c, explore=self.explore, ts=ts)]

    def learn(self, user, item, event, ts):
        self.rec.learn_one(user, item, event, ts)

    def learn_ctx(self, user, item, event, ts, ctx):
        self.rec.learn_one(user, item, event, ts, context=ctx if self.use_context else None)

    def search(self, user, query, ts):
        if self.use_context:
            self.rec.search(user, query, ts)

    def add_items(self, items, texts):
        self.rec.set_item_text(items, texts)


class ItemKNN(Baseline):
    """Plain co-occurrence item-kNN, exact and independent of recofast's code.

    Two items co-occur when one user interacted with both within `window` consecutive
    distinct items (user-level co-occurrence); similarity is the cosine
    c(h, j) / sqrt(n_h * n_j); a user's score for j sums the similarities from their last
    `window` items, with equal weights. Counts live in a dense matrix (catalogues of up to
    `max_items` items)."""

    name = "itemknn"

    def __init__(self, items: ItemIndex, window: int = 2, max_items: int = 20_000) -> None:
        self.items = items
        self.window = window
        self.max_items = max_items
        self.c = np.zeros((256, 256), dtype=np.float32)
        self.n = np.zeros(256, dtype=np.float32)
        self.recent: dict[str, list[int]] = defaultdict(list)

    def _grow(self, size: int) -> None:
        if size > self.max_items:
            raise ValueError(f"itemknn keeps a dense co-occurrence matrix and supports up to {self.max_items:,} items; "
                             "leave it out of --model for larger catalogues")
        cap = len(self.n)
        while cap < size:
            cap *= 2
        if cap != len(self.n):
            c = np.zeros((cap, cap), dtype=np.float32)
            c[: len(self.n), : len(self.n)] = self.c
            self.c = c
            self.n = np.concatenate([self.n, np.zeros(cap - len(self.n), dtype=np.float32)])

    def recommend(self, user, k, seen):
        hist = self.recent.get(user)
        n = len(self.items.ids)
        if not hist:
            return []
        h = np.asarray(hist)
        inv = 1.0 / np.sqrt(np.maximum(self.n[:n], 1.0))
        scores = (self.c[h, :n] * inv[h, None]).sum(axis=0) * inv
        ex = [self.items.index[s] for s in seen if s in self.items.index]
        return [self.items.ids[i] for i in _top_excluding(scores, k, ex)]

    def learn(self, user, item, event, ts):
        i = self.items.get(item)
        self._grow(len(self.items.ids))
        hist = self.recent[user]
        if i in hist:
            hist.remove(i)  # a repeat inside the window forms no new pairs
        else:
            if hist:
                h = np.asarray(hist)
                self.c[i, h] += 1.0
                self.c[h, i] += 1.0
            self.n[i] += 1.0
        hist.insert(0, i)
        del hist[self.window:]


class RiverFunkMF(Baseline):
    """River's FunkMF, fed each positive event and `negatives` sampled negatives (y = 0).

    Scoring all items through `predict_one` would take hours, so the harness mirrors the
    latent vectors River keeps into a numpy matrix after each update (same numbers)."""

    name = "river"

    def __init__(self, items: ItemIndex, n_factors: int = 10, negatives: int = 2, seed: int = 42) -> None:
        from river import optim, reco

        self.model = reco.FunkMF(n_factors=n_factors, optimizer=optim.SGD(0.05), l2=0.001, seed=seed)
        self.items = items
        self.negatives = negatives
        self.rng = np.random.default_rng(seed)
        self.mat = np.zeros((1024, n_factors), dtype=np.float64)
        self.known: set[str] = set()

    def _sync(self, item: str) -> None:
        i = self.items.get(item)
        if i >= len(self.mat):
            self.mat = np.concatenate([self.mat, np.zeros_like(self.mat)])
        self.mat[i] = self.model.i_latents[item]

    def recommend(self, user, k, seen):
        n = len(self.items.ids)
        u = self.model.u_latents[user]
        scores = self.mat[:n] @ u
        ex = [self.items.index[s] for s in seen if s in self.items.index]
        return [self.items.ids[i] for i in _top_excluding(scores, k, ex)]

    def learn(self, user, item, event, ts):
        self.model.learn_one(user, item, 1.0)
        self._sync(item)
        n = len(self.items.ids)
        if n > 1:
            for j in self.rng.integers(0, n, self.negatives):
                other = self.items.ids[j]
                if other != item:
                    self.model.learn_one(user, other, 0.0)
                    self._sync(other)


class ALSDaily(Baseline):
    """The batch peer: `implicit`'s ALS retrained on all history once per day of event
    time. Users first seen since the last training get the popularity list."""

    name = "als-daily"

    def __init__(self, items: ItemIndex, factors: int = 64, iterations: int = 15, regularization: float = 0.01, alpha: float = 1.0, seed: int = 42) -> None:
        self.items = items
        self.factors, self.iterations, self.reg, self.alpha, self.seed = factors, iterations, regularization, alpha, seed
        self.rows: list[int] = []
        self.cols: list[int] = []
        self.users: dict[str, int] = {}
        self.day: int | None = None
        self.user_factors: np.ndarray | None = None
        self.item_factors: np.ndarray | None = None
        self.trained_users = 0
        self.pop = Pop(items)
        self.trainings = 0

    def _train(self) -> None:
        import scipy.sparse as sp
        from implicit.cpu.als import AlternatingLeastSquares
        from threadpoolctl import threadpool_limits

        n_u, n_i = len(self.users), len(self.items.ids)
        m = sp.csr_matrix(
            (np.full(len(self.rows), self.alpha, dtype=np.float32), (self.rows, self.cols)), shape=(n_u, n_i)
        )
        m.sum_duplicates()
        # implicit wants BLAS single-threaded (it parallelises itself); it checks at creation.
        with threadpool_limits(1, "blas"):
            model = AlternatingLeastSquares(
                factors=self.factors, regularization=self.reg, iterations=self.iterations, random_state=self.seed
            )
            model.fit(m, show_progress=False)
        self.user_factors = np.asarray(model.user_factors)
        self.item_factors = np.asarray(model.item_factors)
        self.trained_users = n_u
        self.trainings += 1

    def recommend(self, user, k, seen):
        u = self.users.get(user)
        if self.user_factors is None or u is None or u >= self.trained_users:
            return self.pop.recommend(user, k, seen)
        scores = self.item_factors @ self.user_factors[u]
        ex = [self.items.index[s] for s in seen if s in self.items.index]
        return [self.items.ids[i] for i in _top_excluding(scores, k, ex) if i < len(self.items.ids)]

    def learn(self, user, item, event, ts):
        day = int(ts // 86400)
        if self.day is not None and day != self.day:
            self._train()
        self.day = day
        u = self.users.setdefault(user, len(self.users))
        self.rows.append(u)
        self.cols.append(self.items.get(item))
        self.pop.learn(user, item, event, ts)


__all__ = ["ALSDaily", "Baseline", "ItemIndex", "ItemKNN", "Pop", "RecentPop", "RecofastModel", "RiverFunkMF"]
