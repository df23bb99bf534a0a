"""Learning throughput by dimension and by stream shape, and implicit's batch fit per event.

* ``learn: shop log by dim``: ``learn_many`` over the first 100,000 events of the shop log,
  a fresh model per round, dim 16..256;
* ``learn: stream shape, dim 64``: 400,000 events a call over 100,000 users x 100,000 items,
  uniform and Zipf item popularity (ids already known to the model) and all-new ids (a fresh
  model: every id is interned, and its rows allocated, during the timed call), next to the
  shop log;
* ``learn: implicit fit, shop log``: implicit's ALS (15 iterations) and BPR (100 iterations)
  on the same 100,000 events, one thread, the fit's time divided by the events.

Run (``recofast bench`` runs it)::

    RECOFAST_BENCH_MODE=quick .venv/bin/python -m pytest bench/test_bench_learn_shapes.py \\
        --benchmark-enable --benchmark-only -p no:randomly

River FunkMF on the same shop-log events is in ``test_bench_core.py``.
"""

from __future__ import annotations

import numpy as np
import pytest
import recofast
from conftest import FULL, require_shop_log
from recofast.evaluation.data import read_events
from threadpoolctl import threadpool_limits

N_IDS = 100_000
SHAPE_EVENTS = 400_000 if FULL else 200_000
DIMS = [16, 32, 64, 128, 256] if FULL else [32, 64, 128]
ROUNDS = 5 if FULL else 3


def _rate(benchmark, n: int) -> float | None:
    if not benchmark.stats:
        return None
    rate = n / benchmark.stats.stats.min
    benchmark.extra_info["events_per_s"] = rate
    return rate


@pytest.fixture(scope="module")
def retail():
    log = read_events(require_shop_log(), limit=100_000)
    return log


@pytest.mark.parametrize("dim", DIMS)
def test_learn_shop_log_by_dim(benchmark, retail, dim):
    benchmark.group = "learn: shop log by dim"
    benchmark.extra_info.update(dim=dim, shape="shop log", events=len(retail))

    def setup():
        return (recofast.Recommender(dim=dim, seed=1),), {}

    rec = benchmark.pedantic(lambda r: (r.learn_many(retail.users, retail.items, "purchase", retail.ts), r)[1], setup=setup, rounds=ROUNDS)
    assert rec.events_learned == len(retail)
    assert rec.n_users == len(set(retail.users))
    _rate(benchmark, len(retail))


def _stream(shape: str) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(5)
    users = rng.integers(0, N_IDS, SHAPE_EVENTS)
    if shape == "zipf":
        w = 1.0 / (np.arange(N_IDS) + 10.0)
        items = rng.choice(N_IDS, size=SHAPE_EVENTS, p=w / w.sum())
    else:
        items = rng.integers(0, N_IDS, SHAPE_EVENTS)
    return users, items


@pytest.mark.parametrize("shape", ["shop log", "uniform", "zipf", "all-new ids"])
def test_learn_stream_shape(benchmark, retail, shape):
    benchmark.group = "learn: stream shape, dim 64"
    if shape == "shop log":
        users, items, n = retail.users, retail.items, len(retail)
    else:
        users, items = _stream(shape)
        n = len(users)
    benchmark.extra_info.update(dim=64, shape=shape, events=n)

    def setup():
        rec = recofast.Recommender(dim=64, seed=1)
        if shape in ("uniform", "zipf"):  # the ids are known: the call is all learning
            rec.learn_many(np.arange(N_IDS), np.arange(N_IDS))
        return (rec,), {}

    before = N_IDS if shape in ("uniform", "zipf") else 0
    rec = benchmark.pedantic(lambda r: (r.learn_many(users, items), r)[1], setup=setup, rounds=ROUNDS)
    assert rec.events_learned == before + n
    if shape == "all-new ids":
        assert rec.n_users == len(np.unique(users))
    _rate(benchmark, n)


@pytest.mark.parametrize("algo", ["als", "bpr"])
def test_implicit_fit(benchmark, retail, algo):
    """implicit's batch fit over the same events, one thread (recofast learns on one)."""
    import scipy.sparse as sp
    from implicit.cpu.als import AlternatingLeastSquares
    from implicit.cpu.bpr import BayesianPersonalizedRanking

    benchmark.group = "learn: implicit fit, shop log"
    uid = {u: i for i, u in enumerate(dict.fromkeys(retail.users))}
    iid = {t: i for i, t in enumerate(dict.fromkeys(retail.items))}
    rows = np.fromiter((uid[u] for u in retail.users), np.int32, len(retail))
    cols = np.fromiter((iid[t] for t in retail.items), np.int32, len(retail))
    matrix = sp.csr_matrix((np.ones(len(retail), np.float32), (rows, cols)), shape=(len(uid), len(iid)))
    iterations = 15 if algo == "als" else 100
    benchmark.extra_info.update(dim=64, algo=algo, iterations=iterations, events=len(retail))

    def setup():
        cls = AlternatingLeastSquares if algo == "als" else BayesianPersonalizedRanking
        return (cls(factors=64, iterations=iterations, num_threads=1, random_state=1),), {}

    def fit(model):
        model.fit(matrix, show_progress=False)
        return model

    with threadpool_limits(1, user_api="blas"):
        model = benchmark.pedantic(fit, setup=setup, rounds=1 if not FULL else 3)
    assert model.user_factors.shape[0] == len(uid)
    assert np.isfinite(model.item_factors).all()
    if benchmark.stats:
        per_event = benchmark.stats.stats.min / len(retail)
        benchmark.extra_info["seconds_per_event"] = per_event
        benchmark.extra_info["events_per_s"] = 1.0 / per_event
