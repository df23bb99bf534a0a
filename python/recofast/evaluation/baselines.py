"""The peers recofast is evaluated against, each behind one interface (:class:`Baseline`):
popularity (all-time and recent), item-kNN over a co-occurrence window, River's FunkMF,
implicit's ALS refit once a day of event time, EASE refit once a day of event time and
session-based kNN (V-SKNN); and recofast itself (:class:`RecofastModel`), with or without
context."""

from __future__ import annotations

import math
from collections import OrderedDict, defaultdict
from collections.abc import Sequence
from typing import Any

import numpy as np

from recofast.recommender import Recommender

#: Event types that are tests (and join the user's seen items); impressions and removals
#: are learned but are not something the shopper chose.
TEST_TYPES = frozenset({"view", "add_to_cart", "purchase", "click"})


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


class PartitionedRecofast(Baseline):
    """recofast as a cluster runs it: ``engines`` models, each owning the users of its
    partitions (``crc32(user) % partitions``, shared out as the engines' leases do), each
    learning its own users' events only; every ``share_every`` events each engine's item
    delta (:meth:`Recommender.take_item_delta`) is applied by the others, as the engines
    do through NATS at their cadence. ``share_every=0``: no sharing (each engine alone)."""

    def __init__(self, name: str, make: Any, engines: int = 2, partitions: int = 4, share_every: int = 2000,
                 use_context: bool = True) -> None:
        import zlib

        if engines < 1 or partitions < engines or share_every < 0:
            raise ValueError(f"need 1 ≤ engines ≤ partitions and share_every ≥ 0, got {engines}, {partitions}, {share_every}")
        self.name = name
        self.recs: list[Recommender] = [make() for _ in range(engines)]
        if share_every:
            for r in self.recs:
                r.share_items()
        # Partition p belongs to engine p % engines (a fair share, as the leases give).
        self.owner = [p % engines for p in range(partitions)]
        self.partitions = partitions
        self.share_every = share_every
        self.use_context = use_context
        self._crc = zlib.crc32
        self._n = 0
        self.delta_bytes = 0

    def _rec(self, user: str) -> Recommender:
        return self.recs[self.owner[self._crc(user.encode()) % self.partitions]]

    def recommend(self, user, k, seen):
        return [i for i, _ in self._rec(user).recommend(user, k, exclude_seen=True)]

    def recommend_ctx(self, user, k, seen, ctx, ts=None):
        c = ctx if self.use_context else None
        return [i for i, _ in self._rec(user).recommend(user, k, exclude_seen=True, context=c, ts=ts)]

    def learn(self, user, item, event, ts):
        self.learn_ctx(user, item, event, ts, None)

    def learn_ctx(self, user, item, event, ts, ctx):
        self._rec(user).learn_one(user, item, event, ts, context=ctx if self.use_context else None)
        self._n += 1
        if self.share_every and self._n % self.share_every == 0:
            self.exchange()

    def exchange(self) -> None:
        """Each engine's delta, applied by every other engine."""
        for a, ra in enumerate(self.recs):
            for d in ra.take_item_delta():
                self.delta_bytes += len(d)
                for b, rb in enumerate(self.recs):
                    if b != a:
                        rb.apply_item_delta(d)

    def search(self, user, query, ts):
        if self.use_context:
            self._rec(user).search(user, query, ts)

    def add_items(self, items, texts):
        for r in self.recs:
            r.set_item_text(items, texts)


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


class EASE(Baseline):
    """EASE (Steck 2019, "Embarrassingly shallow autoencoders for sparse data"), exact: the
    closed form B = I − P·diagMat(1/diag(P)), P = (XᵀX + λI)⁻¹, over the `max_items` most
    popular items (by distinct users), refit on all history at the first event of each new
    day of event time. X is binary (user × item: has the user taken it). Scoring is
    user-free, as in the paper: a user's scores are their binary history row times B, with
    the history as it is at the request (all of it, or their latest `history` distinct
    items when `history` > 0), so users first seen since the last fit are scored too. A
    user whose history holds none of the fitted items, and every user before the first
    fit, gets the popularity list. Impressions and removals are not learned. Memory: B is
    `max_items`² floats, the score sums of the `cache_users` latest users `max_items`
    floats each; the histories are the users' distinct items, like the harness's own seen
    sets.

    >>> m = EASE(ItemIndex(), max_items=10, lam=0.5)
    >>> log = [("a", "x"), ("a", "y"), ("b", "x"), ("b", "y"), ("c", "z"), ("c", "w"), ("f", "z"), ("g", "z"), ("d", "x")]
    >>> for u, i in log:
    ...     m.learn(u, i, "purchase", 0.0)
    >>> m.learn("e", "w", "purchase", 86400.0)  # a new day: fit on the history so far
    >>> list(m.recommend("d", 1, {"x"})), list(m.pop.recommend("d", 1, {"x"}))
    (['y'], ['z'])
    """

    name = "ease"

    def __init__(self, items: ItemIndex, max_items: int = 2_000, lam: float = 500.0, history: int = 0,
                 cache_users: int = 2_048) -> None:
        if max_items <= 0 or lam <= 0 or history < 0:
            raise ValueError(f"ease needs max_items > 0, lam > 0 and history ≥ 0, got {max_items}, {lam}, {history}")
        self.items = items
        self.max_items, self.lam, self.history = max_items, lam, history
        self.hist: dict[str, dict[int, None]] = {}  # user -> distinct items, oldest first
        self.day: int | None = None
        self.dirty = False  # history changed since the last fit
        self.b: np.ndarray | None = None
        self.col = np.zeros(0, dtype=np.int64)  # item index -> column of B, or -1
        self.cols = np.zeros(0, dtype=np.int64)  # column of B -> item index
        self.pop = Pop(items)
        self.fits = 0
        self.fit_seconds = 0.0  # all of the fits
        self.gram_seconds = 0.0  # of which building XᵀX
        self.cache_users = cache_users
        self.cache: OrderedDict[str, tuple[int, set[int], np.ndarray]] = OrderedDict()  # user -> (fit, rows, Σ B[rows])

    def gram(self) -> tuple[np.ndarray, np.ndarray]:
        """The fitted items (most popular first, ties to the lower index) and XᵀX over them."""
        import scipy.sparse as sp

        n = len(self.items.ids)
        lens = np.fromiter((len(h) for h in self.hist.values()), dtype=np.int64, count=len(self.hist))
        flat = np.fromiter((i for h in self.hist.values() for i in h), dtype=np.int64, count=int(lens.sum()))
        counts = np.bincount(flat, minlength=n).astype(np.float64)
        top = np.nonzero(counts)[0]
        top = top[np.lexsort((top, -counts[top]))][: self.max_items]
        col = np.full(n, -1, dtype=np.int64)
        col[top] = np.arange(len(top))
        rows = np.repeat(np.arange(len(lens)), lens)
        c = col[flat]
        keep = c >= 0
        x = sp.csr_matrix((np.ones(int(keep.sum())), (rows[keep], c[keep])), shape=(len(lens), len(top)))
        return top, (x.T @ x).toarray()

    def fit(self) -> None:
        import time

        t0 = time.perf_counter()
        top, g = self.gram()
        self.gram_seconds += time.perf_counter() - t0
        g[np.diag_indices_from(g)] += self.lam
        p = np.linalg.inv(g)
        b = p / (-np.diag(p))  # B_ij = −P_ij / P_jj
        b[np.diag_indices_from(b)] = 0.0
        col = np.full(len(self.items.ids), -1, dtype=np.int64)
        col[top] = np.arange(len(top))
        self.b, self.col, self.cols = b, col, top
        self.dirty = False
        self.fits += 1
        self.fit_seconds += time.perf_counter() - t0

    def scores(self, user: str) -> np.ndarray | None:
        """The user's scores over the fitted items (column order), None without any."""
        h = self.hist.get(user)
        if self.b is None or not h:
            return None
        recent = list(h)[-self.history:] if self.history > 0 else list(h)
        idx = np.asarray(recent, dtype=np.int64)
        rows = self.col[idx[idx < len(self.col)]]
        rows = rows[rows >= 0]
        if not len(rows):
            return None
        # Consecutive requests of a user mostly differ by an item or two: update their cached
        # row sum by the rows that came and went (at most `cache_users` users are cached).
        now = set(rows.tolist())
        hit = self.cache.get(user)
        if hit is not None and hit[0] == self.fits:
            _, before, total = hit
            came, went = now - before, before - now
            if len(came) + len(went) < len(now):
                total = total.copy()
                if came:
                    total += self.b[list(came)].sum(axis=0)
                if went:
                    total -= self.b[list(went)].sum(axis=0)
                self._remember(user, now, total)
                return total
        total = self.b[rows].sum(axis=0)
        self._remember(user, now, total)
        return total

    def _remember(self, user: str, rows: set[int], total: np.ndarray) -> None:
        self.cache[user] = (self.fits, rows, total)
        self.cache.move_to_end(user)
        while len(self.cache) > self.cache_users:
            self.cache.popitem(last=False)

    def recommend(self, user, k, seen):
        s = self.scores(user)
        if s is None:
            return self.pop.recommend(user, k, seen)
        ex = [int(self.col[i]) for i in (self.items.index.get(x) for x in seen)
              if i is not None and i < len(self.col) and self.col[i] >= 0]
        return [self.items.ids[self.cols[c]] for c in _top_excluding(s, k, ex)]

    def learn(self, user, item, event, ts):
        day = int(ts // 86400)
        if self.day is not None and day != self.day and self.dirty:
            self.fit()
        self.day = day
        if event not in TEST_TYPES:
            return
        i = self.items.get(item)
        h = self.hist.setdefault(user, {})
        h.pop(i, None)
        h[i] = None
        self.dirty = True
        self.pop.learn(user, item, event, ts)


class SessionKNN(Baseline):
    """Session-based kNN, V-SKNN (Ludewig & Jannach 2018, "Evaluation of session-based
    recommendation algorithms"), exact for its definition:

    - A user's current session is their events since the last gap of more than `gap`
      seconds between two of their events; its distinct items, oldest first (a repeat moves
      an item to the end), at most the latest `window` of them (`window` 0: all).
    - Candidates: the sessions that share an item with it (other users' sessions, ongoing
      ones included, and the user's own earlier ones), of which the `sample` most recently
      updated are compared.
    - With the current session's items i = 1..L weighted w_i = i / L (V-SKNN's linear
      decay: the latest weighs 1), a candidate s scores sim(s) = Σ_{i ∈ s} w_i / sqrt(L·|s|)
      (the decay-weighted dot product, cosine-normalised); the `k` most similar (ties to the
      more recently updated) vote for each of their items with their similarity.

    Memory is bounded: the latest `max_sessions` sessions are kept (a new one replaces the
    oldest), and each item indexes at most `sample` sessions, its most recently updated;
    per user only the id and time of their current session. Impressions and removals are
    not learned.

    >>> m = SessionKNN(ItemIndex(), gap=1800, k=10, sample=100)
    >>> for u, i, t in [("a", "x", 0), ("a", "y", 10), ("b", "x", 20), ("b", "z", 30), ("b", "z", 40), ("c", "x", 5000)]:
    ...     m.learn(u, i, "purchase", float(t))
    >>> list(m.recommend("c", 2, {"x"}))
    ['y', 'z']
    """

    name = "sknn"

    def __init__(self, items: ItemIndex, gap: float = 1800.0, window: int = 0, sample: int = 1000, k: int = 100,
                 max_sessions: int = 200_000) -> None:
        if gap < 0 or window < 0 or sample <= 0 or k <= 0 or max_sessions <= 0:
            raise ValueError("sknn needs gap ≥ 0, window ≥ 0 and sample, k, max_sessions > 0, "
                             f"got {gap}, {window}, {sample}, {k}, {max_sessions}")
        self.items = items
        self.gap, self.window, self.sample, self.k, self.max_sessions = gap, window, sample, k, max_sessions
        # Session id s lives in slot s % max_sessions until a newer session takes the slot.
        self.slot_sid = np.full(max_sessions, -1, dtype=np.int64)
        self.slot_updated = np.zeros(max_sessions, dtype=np.int64)
        self.slot_size = np.zeros(max_sessions, dtype=np.float64)
        self.slot_items: list[dict[int, None] | None] = [None] * max_sessions
        self.slot_arr: list[np.ndarray | None] = [None] * max_sessions  # slot_items as an array, while it holds
        self.by_item: dict[int, OrderedDict[int, None]] = defaultdict(OrderedDict)  # least recently updated first
        self.current: dict[str, tuple[int, float]] = {}  # user -> (session id, time of last event)
        self.next_id = 0
        self.clock = 0

    def session(self, user: str) -> list[int]:
        """The user's current session as compared: distinct item indices, oldest first."""
        cur = self.current.get(user)
        if cur is None or self.slot_sid[cur[0] % self.max_sessions] != cur[0]:
            return []
        s = list(self.slot_items[cur[0] % self.max_sessions] or ())
        return s[-self.window:] if self.window > 0 else s

    def neighbours(self, user: str) -> tuple[np.ndarray, np.ndarray]:
        """The `k` most similar sessions to the user's current one (ids) and their similarity,
        most similar first."""
        none = (np.zeros(0, dtype=np.int64), np.zeros(0))
        sess = self.session(user)
        if not sess:
            return none
        own = self.current[user][0]
        n = len(sess)
        parts = [np.fromiter(self.by_item[i].keys(), dtype=np.int64, count=len(self.by_item[i])) if i in self.by_item
                 else np.zeros(0, dtype=np.int64) for i in sess]
        ids = np.concatenate(parts)
        wts = np.repeat((np.arange(n) + 1.0) / n, [len(p) for p in parts])
        ok = (self.slot_sid[ids % self.max_sessions] == ids) & (ids != own)
        ids, wts = ids[ok], wts[ok]
        if not len(ids):
            return none
        uniq, inv = np.unique(ids, return_inverse=True)
        dot = np.bincount(inv, weights=wts)
        slots = uniq % self.max_sessions
        upd = self.slot_updated[slots]
        if len(uniq) > self.sample:
            keep = np.argpartition(-upd, self.sample - 1)[: self.sample]
            uniq, dot, slots, upd = uniq[keep], dot[keep], slots[keep], upd[keep]
        sim = dot / np.sqrt(n * self.slot_size[slots])
        order = np.lexsort((-upd, -sim))[: self.k]
        return uniq[order], sim[order]

    def _items_array(self, slot: int) -> np.ndarray:
        a = self.slot_arr[slot]
        if a is None:
            a = self.slot_arr[slot] = np.fromiter(self.slot_items[slot] or (), dtype=np.int64)
        return a

    def recommend(self, user, k, seen):
        sids, sims = self.neighbours(user)
        if not len(sids):
            return []
        lists = [self._items_array(int(s) % self.max_sessions) for s in sids]
        votes = np.bincount(np.concatenate(lists), weights=np.repeat(sims, [len(x) for x in lists]))
        ex = [i for i in (self.items.index.get(x) for x in seen) if i is not None and i < len(votes)]
        votes[ex] = 0.0
        cand = np.nonzero(votes > 0)[0]
        order = cand[np.lexsort((cand, -votes[cand]))][:k]
        return [self.items.ids[i] for i in order]

    def learn(self, user, item, event, ts):
        if event not in TEST_TYPES:
            return
        i = self.items.get(item)
        m = self.max_sessions
        cur = self.current.get(user)
        if cur is None or ts - cur[1] > self.gap or self.slot_sid[cur[0] % m] != cur[0]:
            sid = self.next_id
            self.next_id += 1
            slot = sid % m
            old = self.slot_items[slot]
            if old is not None:  # the oldest session gives up its slot and its index entries
                gone = int(self.slot_sid[slot])
                for j in old:
                    d = self.by_item.get(j)
                    if d is not None:
                        d.pop(gone, None)
                        if not d:
                            del self.by_item[j]
            self.slot_sid[slot] = sid
            self.slot_items[slot] = {}
        else:
            sid = cur[0]
        slot = sid % m
        self.current[user] = (sid, ts)
        s = self.slot_items[slot]
        assert s is not None
        s.pop(i, None)
        s[i] = None
        self.slot_size[slot] = len(s)
        self.slot_arr[slot] = None
        self.clock += 1
        self.slot_updated[slot] = self.clock
        for j in s:
            d = self.by_item[j]
            d[sid] = None
            d.move_to_end(sid)
            if len(d) > self.sample:
                d.popitem(last=False)


__all__ = ["ALSDaily", "EASE", "Baseline", "ItemIndex", "ItemKNN", "PartitionedRecofast", "Pop", "RecentPop", "RecofastModel", "RiverFunkMF",
           "SessionKNN", "TEST_TYPES"]
