"""`recofast eval`: prequential (test-then-learn) evaluation of recofast and baselines.

The protocol, in file order: for an event of a known user whose (user, item) pair is new,
every model recommends its top K excluding what the user has already interacted with, and
we score Recall@K (a hit when the item is in the list; one relevant item per test, so
Recall@K is the hit rate) and NDCG@K (1 / log2(rank + 2)). Then every model learns from
the event, repeats included.

With ``--context FIELDS`` recofast recommends and learns with each event's context (the
fields of the log, and ``hour``/``weekday`` from its time in UTC); ``recofast-noctx`` is the
same model without context (nor searches), for the comparison in one run. Searches (JSON
Lines logs) are no tests; recofast takes them as session intent. Impressions and
removals from the cart are learned but are no tests and do not count as interactions; a
test request carries the event's context but not its ``intent`` (what the event says it was
after would leak the answer). Also reported: Recall@K
over the tests of users in their first ``--cold-events`` events (cold start), and for items
that enter the catalogue mid-stream (``--items`` upserts with a ``ts``), their impressions
and hits within ``--new-item-window`` events of arriving.
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
from typing import Any

import numpy as np
from tqdm import tqdm

from recofast.data import CatalogEntry, EventLog, read_catalog, read_events
from recofast.recommender import Recommender
from recofast.train import make_recommender, parse_options

ALL_MODELS = ("recofast", "itemknn", "recentpop", "pop", "river", "als-daily")
#: Event types that are tests (and join the user's seen items); impressions and removals
#: are learned but are not something the shopper chose.
TEST_TYPES = frozenset({"view", "add_to_cart", "purchase", "click"})
#: Models `--model` also takes (not run by default).
EXTRA_MODELS = ("recofast-noctx",)
#: What ``--context all`` means.
CONTEXT_ALL = ("device", "hour", "weekday", "country", "region", "weather", "segment", "intent")


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


@dataclass
class Score:
    model: str
    recall: float
    ndcg: float
    hits: int
    tests: int
    seconds: float
    #: Recall@K over tests of users in their first ``cold_events`` events.
    cold_recall: float = 0.0
    cold_hits: int = 0
    cold_tests: int = 0
    #: Items entering the catalogue mid-stream: how many were shown (and hit) within
    #: ``new_item_window`` events of arriving, and the impressions and hits in all.
    new_items: int = 0
    new_items_shown: int = 0
    new_items_hit: int = 0
    new_impressions: int = 0
    new_hits: int = 0


def build_models(names: Sequence[str], options: dict[str, str], catalog: list[CatalogEntry] | None = None,
                 knn_window: int = 2, explore: int = 0) -> list[Baseline]:
    """The models to compare. recofast models get the catalogue's text from the start when
    no entry has a time (a static catalogue); timed entries arrive during the run."""
    items = ItemIndex()
    out: list[Baseline] = []
    static = [c for c in catalog or () if c.ts is None and c.text]
    for name in names:
        if name in ("recofast", "recofast-noctx"):
            rec = make_recommender({"snapshot_ms": "0", **options})
            if static:
                rec.set_item_text([c.item for c in static], [c.text for c in static])
            out.append(RecofastModel(name, rec, use_context=name == "recofast", explore=explore))
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
            raise ValueError(f"unknown model {name!r}; choose from {', '.join(ALL_MODELS + EXTRA_MODELS)}")
    return out


def event_contexts(log: EventLog, fields: Sequence[str]) -> list[dict[str, Any]] | None:
    """Each event's context from the log's columns; ``hour`` and ``weekday`` come from the
    event time (UTC)."""
    if not fields:
        return None
    unknown = [f for f in fields if f not in CONTEXT_ALL]
    if unknown:
        raise ValueError(f"unknown context field(s) {', '.join(unknown)}; choose from {', '.join(CONTEXT_ALL)} or all")
    cols: dict[str, Sequence[Any]] = {}
    for f in fields:
        if f == "hour":
            cols[f] = ((log.ts // 3600) % 24).astype(int).tolist()
        elif f == "weekday":
            cols[f] = (((log.ts // 86400) + 3) % 7).astype(int).tolist()  # 1970-01-01 was a Thursday
        elif f in log.extra:
            cols[f] = log.extra[f]
    if not cols:
        raise ValueError(f"the log has none of the context fields {', '.join(fields)} "
                         f"(its extra columns: {', '.join(log.extra) or 'none'})")
    names = list(cols)
    return [{f: v for f, v in zip(names, vals) if v != ""} for vals in zip(*(cols[f] for f in names))]


def prequential(log: EventLog, models: Sequence[Baseline], k: int = 20, default_event: str = "purchase",
                progress: bool = True, contexts: list[dict[str, Any]] | None = None,
                catalog: list[CatalogEntry] | None = None, cold_events: int = 5,
                new_item_window: int = 1000) -> list[Score]:
    """Runs the test-then-learn protocol over `log` and returns one Score per model.

    ``contexts`` holds each event's context; ``catalog`` entries with a time are given to
    the models when the stream reaches it (entries without one are the starting catalogue)."""
    if k <= 0:
        raise ValueError(f"k must be a positive integer, got {k}")
    if contexts is not None and len(contexts) != len(log):
        raise ValueError(f"{len(contexts)} contexts for {len(log)} events")
    seen: dict[str, set[str]] = defaultdict(set)
    n_events: dict[str, int] = defaultdict(int)
    nm = len(models)
    hits, gains, secs = [0] * nm, [0.0] * nm, [0.0] * nm
    cold_hits = [0] * nm
    tests = cold_tests = 0
    timed = sorted((c for c in catalog or () if c.ts is not None and c.text), key=lambda c: c.ts)  # type: ignore[arg-type,return-value]
    next_cat = 0
    first_ts = float(log.ts[0]) if len(log) else 0.0
    # Items known before the stream (the starting catalogue) or already in it are not new.
    known: set[str] = {c.item for c in catalog or () if c.ts is None or c.ts <= first_ts}
    arrived: dict[str, int] = {}  # new item -> event index of its (first) arrival
    shown: list[dict[str, int]] = [{} for _ in models]
    hit_new: list[set[str]] = [set() for _ in models]
    new_hits = [0] * nm
    events = log.events
    queries = log.extra.get("query")
    clock = time.perf_counter
    for j in tqdm(range(len(log)), unit="ev", desc="eval", disable=not progress, mininterval=1.0, file=sys.stderr):
        user, item, ts = log.users[j], log.items[j], float(log.ts[j])
        event = events[j] if events is not None else default_event
        ctx = contexts[j] if contexts is not None else None
        if next_cat < len(timed) and timed[next_cat].ts <= ts:  # type: ignore[operator]
            batch = []
            while next_cat < len(timed) and timed[next_cat].ts <= ts:  # type: ignore[operator]
                batch.append(timed[next_cat])
                next_cat += 1
            for c in batch:
                if c.item not in known and c.item not in arrived:
                    arrived[c.item] = j
            for m, model in enumerate(models):
                t0 = clock()
                model.add_items([c.item for c in batch], [c.text for c in batch])
                secs[m] += clock() - t0
        if item is None:  # a search
            if queries is not None and queries[j]:
                for m, model in enumerate(models):
                    t0 = clock()
                    model.search(user, queries[j], ts)
                    secs[m] += clock() - t0
            continue
        known.add(item)
        chosen = event in TEST_TYPES
        s = seen.get(user)
        if chosen and s and item not in s:
            tests += 1
            cold = n_events[user] < cold_events
            cold_tests += cold
            # The request knows where and when, not what the event itself says it was after.
            req = {f: v for f, v in ctx.items() if f != "intent"} if ctx else ctx
            for m, model in enumerate(models):
                t0 = clock()
                recs = list(model.recommend_ctx(user, k, s, req, ts))
                secs[m] += clock() - t0
                if arrived:
                    for r in recs:
                        a = arrived.get(r)
                        if a is not None and j - a < new_item_window:
                            shown[m][r] = shown[m].get(r, 0) + 1
                try:
                    rank = recs.index(item)
                except ValueError:
                    continue
                hits[m] += 1
                cold_hits[m] += cold
                gains[m] += 1.0 / math.log2(rank + 2)
                a = arrived.get(item)
                if a is not None and j - a < new_item_window:
                    new_hits[m] += 1
                    hit_new[m].add(item)
        for m, model in enumerate(models):
            t0 = clock()
            model.learn_ctx(user, item, event, ts, ctx)
            secs[m] += clock() - t0
        if chosen:
            seen[user].add(item)
            n_events[user] += 1
    return [
        Score(model.name, hits[m] / max(tests, 1), gains[m] / max(tests, 1), hits[m], tests, secs[m],
              cold_hits[m] / max(cold_tests, 1), cold_hits[m], cold_tests,
              len(arrived), len(shown[m]), len(hit_new[m]), sum(shown[m].values()), new_hits[m])
        for m, model in enumerate(models)
    ]


def format_table(scores: Sequence[Score], k: int, cold_events: int = 5, new_item_window: int = 1000) -> str:
    best_base = max((s.recall for s in scores if not s.model.startswith("recofast")), default=0.0)
    cold = f"cold R@{k}"
    lines = [f"{'model':<15}{'Recall@' + str(k):>10}{'NDCG@' + str(k):>10}{'hits':>9}{'tests':>9}{cold:>11}{'seconds':>9}"]
    for s in sorted(scores, key=lambda s: -s.recall):
        lines.append(f"{s.model:<15}{s.recall:>10.4f}{s.ndcg:>10.4f}{s.hits:>9,}{s.tests:>9,}{s.cold_recall:>11.4f}{s.seconds:>9.1f}")
    by = {s.model: s for s in scores}
    rf = by.get("recofast")
    if rf is not None and best_base > 0:
        lines.append(f"recofast / best baseline (Recall@{k}): {rf.recall / best_base:.3f}")
    if rf is not None and "recofast-noctx" in by and by["recofast-noctx"].recall > 0:
        lines.append(f"recofast with context / without (Recall@{k}): {rf.recall / by['recofast-noctx'].recall:.3f}")
    if rf is not None and "pop" in by and by["pop"].cold_recall > 0:
        lines.append(f"cold start ({by['pop'].cold_tests:,} tests of users in their first {cold_events} events): "
                     f"recofast / pop Recall@{k} = {rf.cold_recall / by['pop'].cold_recall:.3f}")
    for s in scores:
        if s.new_items:
            lines.append(f"{s.model}: of {s.new_items} items arriving mid-stream, {s.new_items_shown} shown and "
                         f"{s.new_items_hit} hit within {new_item_window} events of arriving "
                         f"({s.new_impressions:,} impressions, {s.new_hits} hits)")
    return "\n".join(lines)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "eval", help="prequential evaluation of recofast and baselines on an event log",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--events", required=True, help="CSV or CSV.gz with user_id, item_id, timestamp[, event]")
    p.add_argument("--k", type=int, default=20, help="list length K (default 20)")
    p.add_argument("--model", default=",".join(ALL_MODELS),
                   help=f"comma-separated models to run (default: all of {','.join(ALL_MODELS)}; also "
                        f"{','.join(EXTRA_MODELS)}: recofast without context)")
    p.add_argument("--option", action="append", metavar="NAME=VALUE", help="a recofast model option (repeatable)")
    p.add_argument("--items", default=None, metavar="FILE",
                   help="item catalogue: CSV (item_id and description/title/text), or JSON Lines of catalog "
                        "upserts whose ts says when an item arrives (recofast simulate --catalog); recofast uses the text")
    p.add_argument("--context", default="", metavar="FIELDS",
                   help="context fields recofast learns and recommends with, comma-separated, or 'all' "
                        f"({','.join(CONTEXT_ALL)}); hour and weekday come from the event time (UTC)")
    p.add_argument("--explore", type=int, default=0, metavar="N",
                   help="recofast gives up to N of the last slots to new items (default 0)")
    p.add_argument("--cold-events", type=int, default=5, metavar="N",
                   help="report Recall@K over tests of users in their first N events (default 5)")
    p.add_argument("--new-item-window", type=int, default=1000, metavar="N",
                   help="count impressions and hits of new items within N events of arriving (default 1000)")
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
    for opt in ("explore", "cold_events", "new_item_window"):
        if getattr(args, opt) < 0:
            raise ValueError(f"--{opt.replace('_', '-')} must be ≥ 0, got {getattr(args, opt)}")
    fields = [f.strip() for f in args.context.split(",") if f.strip()]
    if fields == ["all"]:
        fields = list(CONTEXT_ALL)
    catalog = read_catalog(args.items) if args.items else None
    models = build_models(names, parse_options(args.option), catalog, args.knn_window, args.explore)
    keep = tuple(f for f in fields if f not in ("hour", "weekday"))
    log = read_events(args.events, limit=args.limit, keep=keep)
    contexts = event_contexts(log, fields)
    t0 = time.perf_counter()
    scores = prequential(log, models, k=args.k, default_event=args.default_event, progress=not args.no_progress,
                         contexts=contexts, catalog=catalog, cold_events=args.cold_events,
                         new_item_window=args.new_item_window)
    table = format_table(scores, args.k, args.cold_events, args.new_item_window)
    print(table)
    if args.json:
        d = os.path.dirname(args.json)
        if d:
            os.makedirs(d, exist_ok=True)
        with open(args.json, "w") as f:
            json.dump({
                "events_file": os.fspath(args.events), "events": len(log), "k": args.k,
                "seconds": time.perf_counter() - t0, "options": parse_options(args.option),
                "items_file": args.items, "knn_window": args.knn_window, "context": fields,
                "explore": args.explore, "cold_events": args.cold_events, "new_item_window": args.new_item_window,
                "scores": [asdict(s) for s in scores],
            }, f, indent=2)
        print(f"wrote {args.json}")
    return 0


__all__ = ["ALL_MODELS", "CONTEXT_ALL", "EXTRA_MODELS", "Score", "build_models", "event_contexts", "format_table", "prequential"]
