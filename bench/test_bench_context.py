"""What context costs: learn_many and recommend on a simulated stream (`recofast simulate`,
100,000 events with device, country, weather and the hour), with context and without, side
by side in one run.

Run with `make bench` (or `pytest bench/test_bench_context.py --benchmark-enable`)."""

from __future__ import annotations

import numpy as np
import pytest
import recofast
from recofast.evaluation.data import read_events
from recofast.evaluation.simulate import simulate

FIELDS = ("device", "country", "weather")


def _stat(benchmark, name="min"):
    return getattr(benchmark.stats.stats, name) if benchmark.stats else None


@pytest.fixture(scope="module")
def stream(tmp_path_factory):
    path = tmp_path_factory.mktemp("sim") / "ev.jsonl"
    with open(path, "w") as f:
        simulate(f, users=5_000, items=2_000, events=100_000, seed=7)
    log = read_events(path)
    keep = [j for j, it in enumerate(log.items) if it is not None]
    users = [log.users[j] for j in keep]
    items = [log.items[j] for j in keep]
    events = [log.events[j] for j in keep]  # type: ignore[index]
    ts = log.ts[keep]
    ctx = {f: [log.extra[f][j] or None for j in keep] for f in FIELDS}
    ctx["hour"] = ((ts // 3600) % 24).astype(int)
    return users, items, events, ts, ctx


@pytest.mark.parametrize("with_context", [False, True], ids=["no-context", "context"])
def test_learn_many_with_and_without_context(benchmark, stream, record_rate, with_context):
    users, items, events, ts, ctx = stream
    benchmark.group = "learn: simulated stream, dim 64"

    def setup():
        return (recofast.Recommender(dim=64, seed=1),), {}

    def learn(rec):
        rec.learn_many(users, items, events, ts, context=ctx if with_context else None)
        return rec

    rec = benchmark.pedantic(learn, setup=setup, rounds=3, iterations=1)
    assert rec.events_learned == len(users)
    assert bool(rec.context_affinities(top=5)) == with_context
    if _stat(benchmark):
        record_rate(benchmark.group, "context" if with_context else "no context", len(users) / _stat(benchmark))


@pytest.mark.parametrize("with_context", [False, True], ids=["no-context", "context"])
def test_recommend_with_and_without_context(benchmark, stream, record_rate, with_context):
    users, items, events, ts, ctx = stream
    benchmark.group = "recommend: simulated stream, 2,000 items, k=20"
    rec = recofast.Recommender(dim=64, seed=1)
    rec.learn_many(users, items, events, ts, context=ctx)
    rec.refresh()
    req = {"device": "mobile", "country": "GB", "weather": "rain", "hour": 19} if with_context else None
    who = [f"u{k}" for k in range(0, 5_000, 7)]
    rng = np.random.default_rng(0)

    def one():
        return rec.recommend(who[int(rng.integers(len(who)))], k=20, context=req)

    out = benchmark(one)
    assert len(out) == 20
    if _stat(benchmark):
        record_rate(benchmark.group, "context" if with_context else "no context", 1.0 / _stat(benchmark, "median"), "calls/s")
