"""`recofast eval`: prequential (test-then-learn) evaluation of recofast and baselines.

The protocol, in file order: for an event of a known user whose (user, item) pair is new,
every model recommends its top K excluding what the user has already interacted with, and
we score Recall@K (a hit when the item is in the list; one relevant item per test, so
Recall@K is the hit rate) and NDCG@K (1 / log2(rank + 2)). Then every model learns from
the event, repeats included.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
from tqdm import tqdm

from recofast.data import EventLog, read_events, read_items
from recofast.recommender import Recommender
from recofast.train import make_recommender, parse_options

ALL_MODELS = ("recofast", "itemknn", "recentpop", "pop", "river", "als-daily")


class Baseline:
    """What the harness needs of a model."""

    name = "?"

    def recommend(self, user: str, k: int, seen: set[str]) -> Sequence[str]:
        raise NotImplementedError

    def learn(self, user: str, item: str, event: str, ts: float) -> None:
        raise NotImplementedError


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
    """recofast's Recommender (also the item-kNN baseline, with co-occurrence alone)."""

    def __init__(self, name: str, rec: Recommender) -> None:
        self.name = name
        self.rec = rec

    def recommend(self, user, k, seen):
        return [i for i, _ in self.rec.recommend(user, k, exclude_seen=True)]

    def learn(self, user, item, event, ts):
        self.rec.learn_one(user, item, event, ts)


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


@dataclass
class Score:
    model: str
    recall: float
    ndcg: float
    hits: int
    tests: int
    seconds: float


def build_models(names: Sequence[str], options: dict[str, str], item_text: tuple[list[str], list[str]] | None = None,
                 knn_window: int = 2) -> list[Baseline]:
    items = ItemIndex()
    out: list[Baseline] = []
    for name in names:
        if name == "recofast":
            rec = make_recommender({"snapshot_ms": "0", **options})
            if item_text is not None:
                rec.set_item_text(*item_text)
            out.append(RecofastModel("recofast", rec))
        elif name == "itemknn":
            out.append(ItemKNN(items, window=knn_window))
        elif name == "pop":
            out.append(Pop(items))
        elif name == "recentpop":
            out.append(RecentPop(items))
        elif name == "river":
            out.append(RiverFunkMF(items))
        elif name == "als-daily":
            out.append(ALSDaily(items))
        else:
            raise ValueError(f"unknown model {name!r}; choose from {', '.join(ALL_MODELS)}")
    return out


def prequential(log: EventLog, models: Sequence[Baseline], k: int = 20, default_event: str = "purchase",
                progress: bool = True) -> list[Score]:
    """Runs the test-then-learn protocol over `log` and returns one Score per model."""
    if k <= 0:
        raise ValueError(f"k must be a positive integer, got {k}")
    seen: dict[str, set[str]] = defaultdict(set)
    hits = [0] * len(models)
    gains = [0.0] * len(models)
    secs = [0.0] * len(models)
    tests = 0
    events = log.events
    clock = time.perf_counter
    for j in tqdm(range(len(log)), unit="ev", desc="eval", disable=not progress, mininterval=1.0, file=sys.stderr):
        user, item, ts = log.users[j], log.items[j], float(log.ts[j])
        event = events[j] if events is not None else default_event
        s = seen.get(user)
        if s and item not in s:
            tests += 1
            for m, model in enumerate(models):
                t0 = clock()
                recs = model.recommend(user, k, s)
                secs[m] += clock() - t0
                try:
                    rank = list(recs).index(item)
                except ValueError:
                    continue
                hits[m] += 1
                gains[m] += 1.0 / math.log2(rank + 2)
        for m, model in enumerate(models):
            t0 = clock()
            model.learn(user, item, event, ts)
            secs[m] += clock() - t0
        seen[user].add(item)
    return [
        Score(model.name, hits[m] / max(tests, 1), gains[m] / max(tests, 1), hits[m], tests, secs[m])
        for m, model in enumerate(models)
    ]


def format_table(scores: Sequence[Score], k: int) -> str:
    best_base = max((s.recall for s in scores if s.model != "recofast"), default=0.0)
    lines = [f"{'model':<12}{'Recall@' + str(k):>12}{'NDCG@' + str(k):>12}{'hits':>10}{'tests':>10}{'seconds':>10}"]
    for s in sorted(scores, key=lambda s: -s.recall):
        lines.append(f"{s.model:<12}{s.recall:>12.4f}{s.ndcg:>12.4f}{s.hits:>10,}{s.tests:>10,}{s.seconds:>10.1f}")
    rf = next((s for s in scores if s.model == "recofast"), None)
    if rf is not None and best_base > 0:
        lines.append(f"recofast / best baseline (Recall@{k}): {rf.recall / best_base:.3f}")
    return "\n".join(lines)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "eval", help="prequential evaluation of recofast and baselines on an event log",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--events", required=True, help="CSV or CSV.gz with user_id, item_id, timestamp[, event]")
    p.add_argument("--k", type=int, default=20, help="list length K (default 20)")
    p.add_argument("--model", default=",".join(ALL_MODELS),
                   help=f"comma-separated models to run (default: all of {','.join(ALL_MODELS)})")
    p.add_argument("--option", action="append", metavar="NAME=VALUE", help="a recofast model option (repeatable)")
    p.add_argument("--items", default=None, metavar="FILE",
                   help="item catalogue CSV (item_id and description/title/text): recofast uses the item text")
    p.add_argument("--knn-window", type=int, default=2,
                   help="itemknn's co-occurrence window in items (default 2, the best plain setting on the shop log)")
    p.add_argument("--default-event", default="purchase", help="event type when the log has no event column (default: purchase)")
    p.add_argument("--limit", type=int, default=None, help="use only the first N events")
    p.add_argument("--json", default=None, metavar="FILE", help="also write the results as JSON to FILE")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.k <= 0:
        raise ValueError(f"--k must be a positive integer, got {args.k}")
    names = [n.strip() for n in args.model.split(",") if n.strip()]
    if args.knn_window <= 0:
        raise ValueError(f"--knn-window must be a positive integer, got {args.knn_window}")
    item_text = read_items(args.items) if args.items else None
    models = build_models(names, parse_options(args.option), item_text, args.knn_window)
    log = read_events(args.events, limit=args.limit)
    t0 = time.perf_counter()
    scores = prequential(log, models, k=args.k, default_event=args.default_event, progress=not args.no_progress)
    table = format_table(scores, args.k)
    print(table)
    if args.json:
        d = os.path.dirname(args.json)
        if d:
            os.makedirs(d, exist_ok=True)
        with open(args.json, "w") as f:
            json.dump({
                "events_file": os.fspath(args.events), "events": len(log), "k": args.k,
                "seconds": time.perf_counter() - t0, "options": parse_options(args.option),
                "items_file": args.items, "knn_window": args.knn_window,
                "scores": [asdict(s) for s in scores],
            }, f, indent=2)
        print(f"wrote {args.json}")
    return 0


__all__ = ["ALL_MODELS", "Score", "build_models", "prequential", "format_table"]
