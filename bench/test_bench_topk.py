"""Top-K scoring benchmarks: recofast's kernels next to a plain read of the matrix, numpy and
faiss, on 1,000,000 × 64 float32 items. Every benchmark checks its answer.

Run (benchmarks are disabled in the normal test run)::

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE \\
        .venv/bin/python -m pytest bench/test_bench_topk.py --benchmark-enable --benchmark-only \\
        --benchmark-group-by=group -p no:randomly

(``OPENBLAS_CORETYPE`` forces a slow BLAS kernel on these machines; unset it for timing only.)
Groups: ``1-query`` (one query, one thread), ``256-queries`` (one batch, same thread count
for everyone), ``quantized`` (int8 scan + exact rescoring vs exact, recall asserted) and
``exclusions`` (1,000 excluded ids vs none). The BLAS in use is recorded in each result's
``extra_info`` and printed at the start of the session.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from recofast import kernels
from threadpoolctl import threadpool_info, threadpool_limits

with warnings.catch_warnings():
    # faiss' SWIG wrappers emit DeprecationWarnings on import with some Python versions.
    warnings.simplefilter("ignore", DeprecationWarning)
    import faiss

N, D, K = 1_000_000, 64, 20
BATCH = 256
BATCH_THREADS = 2
LEVELS = [lv for lv in ("avx512", "avx2", "neon", "scalar") if lv in kernels.levels()]


def blas_info() -> str:
    return "; ".join(
        f"{i.get('internal_api')} {i.get('version')} {i.get('architecture')} ({i.get('filepath', '').rsplit('/', 1)[-1]})"
        for i in threadpool_info()
        if i.get("user_api") == "blas"
    )


@pytest.fixture(scope="session")
def data():
    rng = np.random.default_rng(20261130)
    items = rng.standard_normal((N, D), dtype=np.float32)
    query = rng.standard_normal(D, dtype=np.float32)
    queries = rng.standard_normal((BATCH, D), dtype=np.float32)
    print(f"\nBLAS: {blas_info()}")
    return items, query, queries


def ref_topk(items: np.ndarray, queries: np.ndarray, k: int = K, exclude=None):
    """Exact best k per query with numpy, float64 scores, ties to the lower id."""
    q = np.atleast_2d(queries).astype(np.float64)
    best_s = np.full((len(q), k), -np.inf)
    best_i = np.zeros((len(q), k), dtype=np.int64)
    for a in range(0, len(items), 100_000):
        s = q @ items[a : a + 100_000].astype(np.float64).T
        if exclude is not None:
            e = exclude[(exclude >= a) & (exclude < a + 100_000)] - a
            s[:, e] = -np.inf
        ids = np.broadcast_to(np.arange(a, a + s.shape[1]), s.shape)
        if s.shape[1] > k:
            part = np.argpartition(-s, k, axis=1)[:, : k + 1]
            s, ids = np.take_along_axis(s, part, 1), np.take_along_axis(ids, part, 1)
        all_s = np.concatenate([best_s, s], axis=1)
        all_i = np.concatenate([best_i, ids], axis=1)
        order = np.lexsort((all_i, -all_s), axis=1)[:, :k]
        best_s = np.take_along_axis(all_s, order, 1)
        best_i = np.take_along_axis(all_i, order, 1)
    return best_i, best_s


@pytest.fixture(scope="session")
def reference(data):
    items, query, queries = data
    return ref_topk(items, query), ref_topk(items, queries)


def check(ids, scores, ref) -> None:
    """Scores equal the exact ones to float32 rounding; ids too where scores are distinct."""
    ref_i, ref_s = ref
    ids, scores = np.atleast_2d(ids), np.atleast_2d(scores)
    np.testing.assert_allclose(scores, ref_s, rtol=1e-4, atol=1e-4)
    gaps = np.abs(np.diff(ref_s, axis=1))
    distinct = np.ones_like(ref_s, dtype=bool)
    distinct[:, 1:] &= gaps > 1e-4
    distinct[:, :-1] &= gaps > 1e-4
    np.testing.assert_array_equal(ids[distinct], ref_i[distinct])


@pytest.fixture(scope="session")
def faiss_index(data):
    index = faiss.IndexFlatIP(D)
    index.add(data[0])
    return index


def run(benchmark, fn, rounds):
    benchmark.extra_info["blas"] = blas_info()
    return benchmark.pedantic(fn, rounds=rounds, warmup_rounds=1, iterations=1)


# --- (a) one query, one thread ------------------------------------------------------------


@pytest.mark.benchmark(group="1-query")
@pytest.mark.parametrize("impl", ["read (rust sum)", *[f"recofast-{lv}" for lv in LEVELS], "numpy", "faiss"])
def test_one_query(benchmark, impl, data, reference, faiss_index):
    items, query, _ = data
    if impl == "read (rust sum)":
        total = run(benchmark, lambda: kernels.read_bandwidth(items), 15)
        assert total == pytest.approx(float(items.sum(dtype=np.float64)), rel=1e-3, abs=5.0)
        return
    if impl.startswith("recofast"):
        level = impl.split("-", 1)[1]
        ids, scores = run(benchmark, lambda: kernels.topk(items, query, K, threads=1, level=level), 15 if level != "scalar" else 5)
    elif impl == "numpy":

        def numpy_topk():
            s = items @ query
            part = np.argpartition(-s, K)[:K]
            order = np.lexsort((part, -s[part]))
            return part[order], s[part[order]]

        with threadpool_limits(1, user_api="blas"):
            ids, scores = run(benchmark, numpy_topk, 15)
    else:
        faiss.omp_set_num_threads(1)
        scores, ids = run(benchmark, lambda: faiss_index.search(query[None, :], K), 15)
    check(ids, scores, reference[0])


# --- (b) 256 queries in one batch -----------------------------------------------------------


@pytest.mark.benchmark(group="256-queries")
@pytest.mark.parametrize("impl", [*[f"recofast-{lv}" for lv in LEVELS if lv != "scalar"], "faiss (default path)", "faiss (BLAS path)"])
def test_batch(benchmark, impl, data, reference, faiss_index):
    """Everyone on BATCH_THREADS threads. faiss 1.15 scores fewer than
    `distance_compute_blas_threshold` (128,000) queries with its own SIMD loop; its BLAS
    path (threshold lowered to 20, as older versions had) is faster here, with the
    parallelism in faiss' OpenMP loop and a single-threaded BLAS (the fastest setting measured)."""
    items, _, queries = data
    benchmark.extra_info["threads"] = BATCH_THREADS
    if impl.startswith("recofast"):
        level = impl.split("-", 1)[1]
        ids, scores = run(benchmark, lambda: kernels.topk(items, queries, K, threads=BATCH_THREADS, level=level), 5)
    else:
        faiss.omp_set_num_threads(BATCH_THREADS)
        old = faiss.cvar.distance_compute_blas_threshold
        if "BLAS" in impl:
            faiss.cvar.distance_compute_blas_threshold = 20
        try:
            with threadpool_limits(1, user_api="blas"):
                scores, ids = run(benchmark, lambda: faiss_index.search(queries, K), 3)
        finally:
            faiss.cvar.distance_compute_blas_threshold = old
    check(ids, scores, reference[1])


# --- (c) quantised vs exact, recall asserted --------------------------------------------


@pytest.fixture(scope="session")
def clustered():
    """Near-duplicate clusters: 2,000 centres, each item a centre plus noise smaller than
    the int8 step of most rows, queries near items. The top 20 of a query are tightly
    packed, which is where a quantised scan loses rows."""
    rng = np.random.default_rng(7)
    centres = rng.standard_normal((2000, D), dtype=np.float32)
    items = centres[rng.integers(0, 2000, N)]
    items += 0.01 * rng.standard_normal((N, D), dtype=np.float32)
    queries = items[rng.integers(0, N, 1000)] + 0.1 * rng.standard_normal((1000, D), dtype=np.float32)
    return items, queries.astype(np.float32)


def recall_at_k(table, items, queries) -> float:
    exact, _ = kernels.topk(items, queries, K, threads=BATCH_THREADS)
    approx, _ = table.topk(queries, K, threads=BATCH_THREADS)
    return float(np.mean([len(set(a) & set(b)) / K for a, b in zip(approx.tolist(), exact.tolist())]))


@pytest.mark.benchmark(group="quantized")
@pytest.mark.parametrize("impl", ["recofast-exact", "recofast-int8 (normal data)", "recofast-int8 (clustered data)"])
def test_quantized(benchmark, impl, data, reference, clustered):
    items, query, _ = data
    level = LEVELS[0]
    if impl == "recofast-exact":
        ids, scores = run(benchmark, lambda: kernels.topk(items, query, K, threads=1, level=level), 15)
        check(ids, scores, reference[0])
        return
    if "normal" in impl:
        rng = np.random.default_rng(11)
        recall_queries = rng.standard_normal((1000, D), dtype=np.float32)
        table = kernels.QuantizedItems(items)
        ids, scores = run(benchmark, lambda: table.topk(query, K, threads=1, level=level), 15)
        check(ids, scores, reference[0])
    else:
        items, recall_queries = clustered
        table = kernels.QuantizedItems(items)
        q = recall_queries[0]
        ids, scores = run(benchmark, lambda: table.topk(q, K, threads=1, level=level), 15)
        check(ids, scores, ref_topk(items, q))
    recall = recall_at_k(table, items, recall_queries)
    benchmark.extra_info["recall@20 (1000 queries)"] = recall
    benchmark.extra_info["candidates"] = kernels.DEFAULT_CANDIDATES
    assert recall >= 0.99


# --- (d) exclusions -----------------------------------------------------------------------


@pytest.mark.benchmark(group="exclusions")
@pytest.mark.parametrize("excluded", [0, 1000])
def test_exclusions(benchmark, excluded, data):
    items, query, _ = data
    exclude = np.sort(np.random.default_rng(3).choice(N, excluded, replace=False)) if excluded else None
    if excluded:
        # Make the exclusions bite: drop the true best 20 as well.
        exclude = np.union1d(exclude, ref_topk(items, query)[0][0])
    ids, scores = run(benchmark, lambda: kernels.topk(items, query, K, exclude=exclude, threads=1, level=LEVELS[0]), 15)
    check(ids, scores, ref_topk(items, query, exclude=exclude))
