"""Core benchmarks: recofast's learn_many against River's FunkMF on the same events, learning
throughput at 100,000 users x 100,000 items, cold ids (400,000 events of all-new users and
items, next to the shop log in the same run, and as the first call of a fresh process), and
recommend latency over 100,000 items.

Run with `make bench` (or `pytest bench/test_bench_core.py --benchmark-enable`)."""

from __future__ import annotations

import subprocess
import sys
import time

import numpy as np
import pytest
import recofast
from conftest import shared_data
from recofast.evaluation.data import read_events

N_USERS = N_ITEMS = 100_000


def _stat(benchmark, name="min"):
    """A timing of the benchmark, or None when benchmarks are disabled (then the test still
    checks its answer, and records no rate)."""
    return getattr(benchmark.stats.stats, name) if benchmark.stats else None
BATCH = 1_000_000


@pytest.fixture(scope="module")
def retail():
    path = shared_data() / "online_retail" / "interactions.csv.gz"
    if not path.exists():
        pytest.fail(f"the shop log is missing: {path}")
    log = read_events(path, limit=100_000)
    return log


def test_learn_many_vs_river_same_events(benchmark, retail, record_rate):
    """recofast learn_many over the first 100,000 events of the shop log (dim 64)."""
    benchmark.group = "learn: shop log, dim 64"

    def setup():
        return (recofast.Recommender(dim=64, seed=1),), {}

    def learn(rec):
        rec.learn_many(retail.users, retail.items, "purchase", retail.ts)
        return rec

    rec = benchmark.pedantic(learn, setup=setup, rounds=5, iterations=1)
    assert rec.events_learned == len(retail)
    if _stat(benchmark):
        rate = len(retail) / _stat(benchmark)
        benchmark.extra_info["events_per_s"] = rate
        record_rate("learn: shop log, dim 64", "recofast", rate)


@pytest.mark.parametrize("negatives", [0, 1], ids=["positives-only", "with-1-negative"])
def test_river_funkmf_learn_one_same_events(benchmark, retail, record_rate, negatives):
    """River's FunkMF (64 factors) learn_one over the same events, one call per event (and,
    in the second variant, one more call per event for a sampled negative, the work
    recofast's BPR step does)."""
    from river import optim, reco

    benchmark.group = "learn: shop log, dim 64"
    n = 20_000  # River is slow: a prefix of the same events; the rate is per event.
    users, items = retail.users[:n], retail.items[:n]
    rng = np.random.default_rng(0)
    negs = [retail.items[j] for j in rng.integers(0, n, n)]

    def setup():
        return (reco.FunkMF(n_factors=64, optimizer=optim.SGD(0.05), seed=1),), {}

    def learn(model):
        for u, i, j in zip(users, items, negs):
            model.learn_one(u, i, 1.0)
            if negatives:
                model.learn_one(u, j, 0.0)
        return model

    model = benchmark.pedantic(learn, setup=setup, rounds=3, iterations=1)
    assert len(model.u_latents) == len(set(users))
    if _stat(benchmark):
        rate = n / _stat(benchmark)
        benchmark.extra_info["events_per_s"] = rate
        record_rate("learn: shop log, dim 64", f"river FunkMF ({'+1 negative' if negatives else 'positives'})", rate)


@pytest.fixture(scope="module")
def big_model():
    """A model over 100,000 users and 100,000 items, warmed with 2,000,000 random events."""
    rec = recofast.Recommender(dim=64, seed=1)
    rec.learn_many(np.arange(N_USERS), np.arange(N_ITEMS))
    rng = np.random.default_rng(1)
    rec.learn_many(rng.integers(0, N_USERS, 2 * BATCH), rng.integers(0, N_ITEMS, 2 * BATCH))
    rec.refresh()
    return rec


def _zipf_items(rng, n):
    # Shop-like popularity: item rank r drawn with probability ~ 1 / (r + 10).
    w = 1.0 / (np.arange(N_ITEMS) + 10.0)
    return rng.choice(N_ITEMS, size=n, p=w / w.sum())


@pytest.mark.parametrize("dist", ["uniform", "zipf"])
def test_learn_many_100k_users_100k_items(benchmark, big_model, record_rate, dist):
    """learn_many on one core, 1,000,000 events a call, CPU time of the calling thread."""
    benchmark.group = "learn: 100k users x 100k items, dim 64"
    rng = np.random.default_rng(2)
    batches = []
    for _ in range(4):
        items = rng.integers(0, N_ITEMS, BATCH) if dist == "uniform" else _zipf_items(rng, BATCH)
        batches.append((rng.integers(0, N_USERS, BATCH), items))
    it = iter(batches)
    cpu = []

    def learn():
        u, i = next(it)
        t = time.thread_time()
        big_model.learn_many(u, i)
        cpu.append(time.thread_time() - t)

    before = big_model.events_learned
    benchmark.pedantic(learn, rounds=4, iterations=1)
    assert big_model.events_learned == before + len(cpu) * BATCH
    rate = BATCH / min(cpu)
    benchmark.extra_info["events_per_s_cpu"] = rate
    record_rate("learn: 100k users x 100k items, dim 64", f"recofast ({dist} items)", rate)


def test_recommend_100k_items(benchmark, big_model, record_rate):
    """One recommend call over 100,000 items (k = 10, seen items excluded)."""
    benchmark.group = "recommend: 100k items, dim 64"
    rng = np.random.default_rng(3)
    users = [int(u) for u in rng.integers(0, N_USERS, 10_000)]
    it = iter(users)
    result = benchmark(lambda: big_model.recommend(next(it), k=10))
    assert len(result) == 10
    if _stat(benchmark, "median"):
        record_rate("recommend: 100k items, dim 64", "recofast", 1.0 / _stat(benchmark, "median"), "calls/s")
        benchmark.extra_info["median_ms"] = _stat(benchmark, "median") * 1e3


# --- cold ids: every user and item new ------------------------------------------------------

COLD_EVENTS = 400_000
COLD_IDS = 100_000


def _cold_ids(seed: int = 5):
    """400,000 events over 100,000 new users x 100,000 new items, each id 4 times, shuffled."""
    rng = np.random.default_rng(seed)
    reps = COLD_EVENTS // COLD_IDS
    return rng.permutation(np.repeat(np.arange(COLD_IDS), reps)), rng.permutation(np.repeat(np.arange(COLD_IDS), reps))


@pytest.mark.parametrize("stream", ["shop log (100k events)", "all-new ids (400k events)"])
def test_learn_many_cold_ids_vs_shop_log(benchmark, retail, record_rate, stream):
    """learn_many into a fresh model: the shop log, and a stream of only new ids (interning,
    row allocation and the first touch of new segments in every call), side by side."""
    benchmark.group = "learn: cold ids vs shop log, dim 64"
    if stream.startswith("shop"):
        users, items, n = retail.users, retail.items, len(retail)

        def learn(rec):
            rec.learn_many(users, items, "purchase", retail.ts)
            return rec

    else:
        users, items = _cold_ids()
        n = COLD_EVENTS

        def learn(rec):
            rec.learn_many(users, items, "purchase")
            return rec

    def setup():
        return (recofast.Recommender(dim=64, seed=1),), {}

    rec = benchmark.pedantic(learn, setup=setup, rounds=5, iterations=1)
    assert rec.events_learned == n
    if stream.startswith("all-new"):
        assert rec.n_users == COLD_IDS and rec.n_items == COLD_IDS
    if _stat(benchmark):
        rate = n / _stat(benchmark)
        benchmark.extra_info["events_per_s"] = rate
        record_rate("learn: cold ids vs shop log, dim 64", f"recofast ({stream})", rate)


_FRESH = """
import time, numpy as np, recofast
rng = np.random.default_rng(5)
u = rng.permutation(np.repeat(np.arange({ids}), {reps})); i = rng.permutation(np.repeat(np.arange({ids}), {reps}))
rec = recofast.Recommender(dim=64, seed=1)
t = time.perf_counter(); rec.learn_many(u, i, "purchase"); dt = time.perf_counter() - t
assert rec.events_learned == {n} and rec.n_users == {ids} and rec.n_items == {ids}
print(dt)
"""


def test_learn_many_cold_ids_first_call_of_a_fresh_process(benchmark, record_rate):
    """The all-new stream as the first learn_many of a new process (every segment faults in
    for the first time); the best of 3 processes."""
    benchmark.group = "learn: cold ids vs shop log, dim 64"
    code = _FRESH.format(ids=COLD_IDS, reps=COLD_EVENTS // COLD_IDS, n=COLD_EVENTS)
    times = []

    def run():
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=True)
        times.append(float(out.stdout.strip().splitlines()[-1]))

    benchmark.pedantic(run, rounds=3, iterations=1)
    rate = COLD_EVENTS / min(times)
    benchmark.extra_info["events_per_s_first_call"] = rate
    record_rate("learn: cold ids vs shop log, dim 64", "recofast (all-new ids, first call of a process)", rate)
