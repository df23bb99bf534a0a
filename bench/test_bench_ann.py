"""Top-K of one query against N items, N from 10,000 to 10,000,000 and d from 32 to 128:
recofast on one thread and on all, numpy, faiss' flat index (all exact, answers checked
against a float64 numpy reference) and usearch's HNSW index (approximate; the smallest
search expansion that reaches recall@20 >= 0.99 on 100 queries is the one timed), next to a
plain read of the matrix (the bandwidth line).

Run (``recofast bench`` runs it; the sizes come from ``RECOFAST_BENCH_MODE``)::

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE RECOFAST_BENCH_MODE=quick \\
        .venv/bin/python -m pytest bench/test_bench_ann.py --benchmark-enable --benchmark-only -p no:randomly

Quick: N = 10k, 100k, 1M at d = 64, and d = 32, 128 at N = 100k; usearch up to N = 100k (its
index build is the slow part: ~7 s for 100k x 64 on 2 cores). Full: N up to 10M at d = 64,
d = 32, 64, 128 at 100k and 1M, usearch up to 1M.

The items are clustered (1,000 centres plus noise of 0.5 per coordinate), like trained
embeddings; on plain Gaussian rows HNSW needs far more expansion (recall 0.98 at 1,024 on
100k x 64, slower than the exact scan). The exact scans cost the same on either.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from conftest import FULL
from recofast import kernels
from threadpoolctl import threadpool_limits

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import faiss

K = 20
N_QUERIES = 100
EXPANSIONS = (32, 64, 128, 256, 512, 1024, 2048)
IMPLS = ["read", "recofast-1-thread", "recofast-all-threads", "numpy", "faiss-flat", "usearch-hnsw"]

if FULL:
    SIZES = [(10_000, 64), (100_000, 64), (1_000_000, 64), (10_000_000, 64),
             (100_000, 32), (100_000, 128), (1_000_000, 32), (1_000_000, 128)]  # fmt: skip
    ANN_MAX_N = 1_000_000
else:
    SIZES = [(10_000, 64), (100_000, 64), (1_000_000, 64), (100_000, 32), (100_000, 128)]
    ANN_MAX_N = 100_000

CASES = [(n, d, impl) for n, d in SIZES for impl in IMPLS if impl != "usearch-hnsw" or n <= ANN_MAX_N]

_DATA: dict[tuple[int, int], tuple[np.ndarray, np.ndarray, np.ndarray]] = {}


def data(n: int, d: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Items (n, d), queries (N_QUERIES, d) and the exact top-K ids of the queries; one size
    is kept at a time (the cases run size by size)."""
    if (n, d) not in _DATA:
        _DATA.clear()
        rng = np.random.default_rng(n + d)
        centres = rng.standard_normal((1000, d), dtype=np.float32)
        items = np.empty((n, d), dtype=np.float32)
        for a in range(0, n, 1_000_000):
            b = min(n, a + 1_000_000)
            items[a:b] = centres[rng.integers(0, 1000, b - a)] + 0.5 * rng.standard_normal((b - a, d), dtype=np.float32)
        queries = centres[rng.integers(0, 1000, N_QUERIES)] + 0.5 * rng.standard_normal((N_QUERIES, d), dtype=np.float32)
        _DATA[(n, d)] = (items, queries, _exact(items, queries))
    return _DATA[(n, d)]


def _exact(items: np.ndarray, queries: np.ndarray) -> np.ndarray:
    """Exact top-K ids in float64, chunk by chunk (recofast is the reference's check, not its source)."""
    q = queries.astype(np.float64)
    best_s = np.full((len(q), K), -np.inf)
    best_i = np.zeros((len(q), K), dtype=np.int64)
    for a in range(0, len(items), 250_000):
        s = q @ items[a : a + 250_000].astype(np.float64).T
        part = np.argpartition(-s, K, axis=1)[:, :K]
        all_s = np.concatenate([best_s, np.take_along_axis(s, part, 1)], axis=1)
        all_i = np.concatenate([best_i, part + a], axis=1)
        order = np.argsort(-all_s, axis=1, kind="stable")[:, :K]
        best_s, best_i = np.take_along_axis(all_s, order, 1), np.take_along_axis(all_i, order, 1)
    return best_i


def recall(got: np.ndarray, exact: np.ndarray) -> float:
    return float(np.mean([len(set(a) & set(b)) / K for a, b in zip(np.atleast_2d(got).tolist(), exact.tolist())]))


def _rounds(n: int, d: int) -> int:
    return int(np.clip((3e8 if FULL else 1e8) / (n * d), 5, 100))


@pytest.mark.parametrize("n,d,impl", CASES, ids=[f"n={n}-d={d}-{impl}" for n, d, impl in CASES])
def test_one_query(benchmark, n, d, impl):
    items, queries, exact = data(n, d)
    benchmark.group = f"topk: one query, n={n:,}, d={d}"
    benchmark.extra_info.update(n=n, d=d, impl=impl, bytes=items.nbytes)
    it = iter(range(10**9))

    def q() -> np.ndarray:
        return queries[next(it) % N_QUERIES]

    if impl == "read":
        total = benchmark.pedantic(lambda: kernels.read_bandwidth(items), rounds=_rounds(n, d), warmup_rounds=1)
        assert total == pytest.approx(float(items.sum(dtype=np.float64)), rel=1e-3, abs=5.0)
        got = None
    elif impl.startswith("recofast"):
        threads = 1 if impl == "recofast-1-thread" else None
        benchmark.pedantic(lambda: kernels.topk(items, q(), K, threads=threads), rounds=_rounds(n, d), warmup_rounds=1)
        got = kernels.topk(items, queries, K, threads=threads)[0]
    elif impl == "numpy":

        def numpy_topk(query: np.ndarray) -> np.ndarray:
            s = items @ query
            part = np.argpartition(-s, K)[:K]
            return part[np.argsort(-s[part], kind="stable")]

        with threadpool_limits(1, user_api="blas"):
            benchmark.pedantic(lambda: numpy_topk(q()), rounds=_rounds(n, d), warmup_rounds=1)
            got = np.stack([numpy_topk(x) for x in queries])
    elif impl == "faiss-flat":
        index = faiss.IndexFlatIP(d)
        index.add(items)
        faiss.omp_set_num_threads(1)
        benchmark.pedantic(lambda: index.search(q()[None, :], K), rounds=_rounds(n, d), warmup_rounds=1)
        got = index.search(queries, K)[1]
    else:
        got = _usearch(benchmark, items, queries, exact, q)
    if got is not None:
        r = recall(got, exact)
        benchmark.extra_info["recall@20"] = r
        # Exact scans: the same ids as float64 numpy up to float32 ties (recall ~ 1).
        assert r >= (0.99 if impl == "usearch-hnsw" else 0.995), f"{impl}: recall@20 {r:.4f}"


def _usearch(benchmark, items, queries, exact, q):  # noqa: ANN001, ANN202
    import time

    from usearch.index import Index

    t = time.perf_counter()
    index = Index(ndim=items.shape[1], metric="ip", dtype="f32", connectivity=16, expansion_add=64)
    index.add(np.arange(len(items)), items, threads=0)
    benchmark.extra_info["build_s"] = time.perf_counter() - t
    for ef in EXPANSIONS:
        index.expansion_search = ef
        got = index.search(queries, K, threads=1).keys
        if recall(got, exact) >= 0.99:
            break
    benchmark.extra_info["expansion_search"] = ef
    benchmark.pedantic(lambda: index.search(q(), K, threads=1), rounds=_rounds(len(items), items.shape[1]) * 4, warmup_rounds=1)
    return got
