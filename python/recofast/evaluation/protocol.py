"""The prequential (test-then-learn) evaluation of recofast and its peers (``recofast eval``).

The protocol, in file order: for an event of a known user whose (user, item) pair is new,
every model recommends its top K excluding what the user has already interacted with, and
we score Recall@K (a hit when the item is in the list; one relevant item per test, so
Recall@K is the hit rate) and NDCG@K (1 / log2(rank + 2)). Then every model learns from
the event, repeats included.

With ``--test-from N`` (events, or a fraction of the log) the events before N are learned
but not tested; ``--tuned`` first tunes every model's options on that prefix (``recofast
tune``) and then scores all of them on the rest, so no test chose an option.

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

import math
import sys
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from recofast_sidecar.protocol.context import CONTEXT_FIELDS
from tqdm import tqdm

from recofast.evaluation.baselines import (
    EASE,
    TEST_TYPES,
    ALSDaily,
    Baseline,
    ItemIndex,
    ItemKNN,
    PartitionedRecofast,
    Pop,
    RecentPop,
    RecofastModel,
    RiverFunkMF,
    SessionKNN,
)
from recofast.evaluation.data import CatalogEntry, EventLog
from recofast.evaluation.train import make_recommender
from recofast.recommender import Recommender

ALL_MODELS = ("recofast", "itemknn", "recentpop", "pop", "river", "als-daily")
#: Models `--model` also takes (not run by default).
EXTRA_MODELS = ("recofast-noctx", "ease", "sknn", "recofast-partitioned")
#: What ``--context all`` means.
CONTEXT_ALL = CONTEXT_FIELDS




















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
                 knn_window: int = 2, explore: int = 0, peers: dict[str, dict[str, Any]] | None = None) -> list[Baseline]:
    """The models to compare. recofast models get the catalogue's text from the start when
    no entry has a time (a static catalogue); timed entries arrive during the run.
    ``peers`` holds keyword arguments per peer (``{"ease": {"lam": 100.0}}``)."""
    peers = peers or {}
    items = ItemIndex()
    out: list[Baseline] = []
    static = [c for c in catalog or () if c.ts is None and c.text]
    for name in names:
        if name in ("recofast", "recofast-noctx"):
            rec = make_recommender({"snapshot_ms": "0", **options})
            if static:
                rec.set_item_text([c.item for c in static], [c.text for c in static])
            out.append(RecofastModel(name, rec, use_context=name == "recofast", explore=explore))
        elif name == "recofast-partitioned":
            def make(options: dict[str, str] = options) -> Recommender:
                r = make_recommender({"snapshot_ms": "0", **options})
                if static:
                    r.set_item_text([c.item for c in static], [c.text for c in static])
                return r

            out.append(PartitionedRecofast(name, make, **peers.get(name, {})))
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
        elif name == "ease":
            out.append(EASE(items, **peers.get("ease", {})))
        elif name == "sknn":
            out.append(SessionKNN(items, **peers.get("sknn", {})))
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
                new_item_window: int = 1000, test_from: int = 0) -> list[Score]:
    """Runs the test-then-learn protocol over `log` and returns one Score per model.
    Events before index ``test_from`` are learned but not tested (a warm start: the
    models have seen the prefix their options were tuned on, and are scored on the rest).

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
        if chosen and s and item not in s and j >= test_from:
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






__all__ = ["ALL_MODELS", "CONTEXT_ALL", "EXTRA_MODELS", "TEST_TYPES", "Score", "build_models", "event_contexts", "format_table", "prequential"]
