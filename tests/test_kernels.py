"""recofast.kernels against a numpy reference: every SIMD level, odd shapes, ties,
exclusions and allow-lists, batched and quantised scans, and argument checking."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from recofast import kernels

LEVELS = kernels.levels()


def reference(items: np.ndarray, q: np.ndarray, k: int, exclude=(), allow=None):
    """Best k ids by (score desc, id asc) in float64, with the filters; padded like topk."""
    s = items.astype(np.float64) @ q.astype(np.float64)
    ok = np.ones(len(items), dtype=bool)
    ok[np.asarray(list(exclude), dtype=np.int64)] = False
    if allow is not None:
        allowed = np.zeros(len(items), dtype=bool)
        allowed[np.asarray(list(allow), dtype=np.int64)] = True
        ok &= allowed
    ids = np.flatnonzero(ok)
    order = np.lexsort((ids, -s[ids]))[:k]
    out_ids = np.full(k, -1, dtype=np.int64)
    out_s = np.full(k, -np.inf)
    out_ids[: len(order)] = ids[order]
    out_s[: len(order)] = s[ids[order]]
    return out_ids, out_s


@st.composite
def problems(draw):
    n = draw(st.integers(1, 300))
    d = draw(st.integers(1, 70))
    m = draw(st.integers(1, 12))
    k = draw(st.integers(1, n))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    # Small integers: scores are exact in float32 whatever the summation order, so ids
    # must match exactly, ties (frequent here) included.
    items = rng.integers(-3, 4, size=(n, d)).astype(np.float32)
    queries = rng.integers(-3, 4, size=(m, d)).astype(np.float32)
    exclude = draw(st.lists(st.integers(0, n - 1), max_size=min(n, 40)))
    allow = draw(st.none() | st.lists(st.integers(0, n - 1), max_size=n))
    return items, queries, k, exclude, allow


@settings(max_examples=80, deadline=None)
@given(problems(), st.sampled_from(LEVELS), st.sampled_from([1, 2]), st.booleans())
def test_topk_equals_numpy_on_integer_data(problem, level, threads, quantized):
    items, queries, k, exclude, allow = problem
    # Quantised: with n <= 4096 every row is a candidate, so the answer is exact.
    ids, scores = kernels.topk(items, queries, k, exclude=exclude, allow=allow, threads=threads, level=level, quantized=quantized)
    assert ids.shape == scores.shape == (len(queries), k)
    assert ids.dtype == np.int64 and scores.dtype == np.float32
    for qi, q in enumerate(queries):
        want_ids, want_s = reference(items, q, k, exclude, allow)
        np.testing.assert_array_equal(ids[qi], want_ids)
        np.testing.assert_array_equal(scores[qi], want_s.astype(np.float32))
        one_ids, one_s = kernels.topk(items, q, k, exclude=exclude, allow=allow, threads=threads, level=level)
        np.testing.assert_array_equal(one_ids, want_ids)


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 400), st.integers(1, 40), st.integers(1, 6), st.integers(0, 2**32 - 1), st.sampled_from(LEVELS))
def test_float_data_scores_match_and_distinct_scores_give_the_same_ids(n, d, m, seed, level):
    rng = np.random.default_rng(seed)
    items = rng.standard_normal((n, d), dtype=np.float32)
    queries = rng.standard_normal((m, d), dtype=np.float32)
    k = int(rng.integers(1, n + 1))
    ids, scores = kernels.topk(items, queries, k, level=level)
    for qi, q in enumerate(queries):
        want_ids, want_s = reference(items, q, k)
        # The score sets agree to float32 rounding...
        np.testing.assert_allclose(scores[qi], want_s, rtol=1e-4, atol=1e-4 * np.sqrt(d))
        # ...and where neighbouring scores are clearly apart, so do the ids.
        gaps = np.abs(np.diff(np.concatenate(([np.inf], want_s, [-np.inf]))))
        distinct = (gaps[:-1] > 1e-3) & (gaps[1:] > 1e-3)
        np.testing.assert_array_equal(ids[qi][distinct], want_ids[distinct])


def test_per_query_exclusions_and_allow_lists():
    rng = np.random.default_rng(3)
    items = rng.integers(-5, 6, size=(500, 9)).astype(np.float32)
    queries = rng.integers(-5, 6, size=(4, 9)).astype(np.float32)
    excl = [rng.choice(500, size=s, replace=False) for s in (0, 10, 100, 499)]
    allow = [np.arange(0, 500, 3), np.arange(100), np.arange(500), [7, 3, 3, 9]]
    for level in LEVELS:
        ids, _ = kernels.topk(items, queries, 5, exclude=excl, allow=allow, level=level)
        for qi in range(4):
            np.testing.assert_array_equal(ids[qi], reference(items, queries[qi], 5, excl[qi], allow[qi])[0])


def test_short_answers_are_padded():
    items = np.eye(4, dtype=np.float32)
    ids, scores = kernels.topk(items, np.ones(4, dtype=np.float32), 3, exclude=[0, 1])
    assert ids.tolist() == [2, 3, -1]
    assert scores.tolist() == [1.0, 1.0, -np.inf]


def test_ties_go_to_the_lower_id_on_every_level():
    items = np.ones((1000, 3), dtype=np.float32)
    for level in LEVELS:
        for threads in (1, 2):
            ids, _ = kernels.topk(items, np.ones((3, 3), dtype=np.float32), 4, threads=threads, level=level)
            assert ids.tolist() == [[0, 1, 2, 3]] * 3


def test_quantized_table_is_close_and_rescored_exactly():
    rng = np.random.default_rng(5)
    items = rng.standard_normal((20_000, 33), dtype=np.float32)
    table = kernels.QuantizedItems(items)
    q = rng.standard_normal(33, dtype=np.float32)
    exact = items @ q
    approx = {level: table.approx_scores(q, level=level) for level in LEVELS}
    for level in LEVELS:
        np.testing.assert_array_equal(approx[level], approx["scalar"])  # same integers everywhere
    assert np.max(np.abs(approx["scalar"] - exact)) < 0.05 * np.std(exact)
    ids, scores = table.topk(q, 20, candidates=500, exclude=[int(np.argmax(exact))])
    want_ids, want_s = reference(items, q, 20, [int(np.argmax(exact))])
    np.testing.assert_array_equal(ids, want_ids)
    np.testing.assert_allclose(scores, want_s, rtol=1e-5)
    # Passing the table to topk uses it.
    np.testing.assert_array_equal(kernels.topk(table, q, 20, exclude=[int(np.argmax(exact))])[0], want_ids)


def test_many_python_threads_at_once():
    rng = np.random.default_rng(9)
    items = rng.standard_normal((50_000, 16), dtype=np.float32)
    queries = rng.standard_normal((8, 16), dtype=np.float32)
    want = kernels.topk(items, queries, 10)[0]
    results = []

    def work():
        results.append(kernels.topk(items, queries, 10, threads=2)[0])

    ts = [threading.Thread(target=work) for _ in range(4)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(timeout=60)
    assert len(results) == 4
    for r in results:
        np.testing.assert_array_equal(r, want)


def test_read_bandwidth_is_a_sum():
    x = np.arange(1001 * 3, dtype=np.float32).reshape(1001, 3)
    assert kernels.read_bandwidth(x) == pytest.approx(float(x.sum(dtype=np.float64)))


ITEMS = np.zeros((10, 4), dtype=np.float32)
Q = np.zeros(4, dtype=np.float32)


@pytest.mark.parametrize(
    "args, kwargs, match",
    [
        ((ITEMS.tolist(), Q, 1), {}, "numpy array"),
        ((ITEMS.astype(np.float64), Q, 1), {}, "float32"),
        ((ITEMS[:, :3], Q[:3], 1), {}, "C-contiguous"),
        ((np.asfortranarray(np.zeros((10, 4), dtype=np.float32)), Q, 1), {}, "C-contiguous"),
        ((ITEMS.reshape(10, 2, 2), Q, 1), {}, "2-d"),
        ((ITEMS[:0], Q, 1), {}, "at least one row"),
        ((ITEMS, Q.astype(np.float64), 1), {}, "float32"),
        ((ITEMS, np.zeros(5, dtype=np.float32), 1), {}, "dimension"),
        ((ITEMS, np.zeros((2, 2, 4), dtype=np.float32), 1), {}, "1-d"),
        ((ITEMS, np.zeros((0, 4), dtype=np.float32), 1), {}, "at least one query"),
        ((ITEMS, np.zeros((3, 8), dtype=np.float32)[:, ::2], 1), {}, "C-contiguous"),
        ((ITEMS, Q, 0), {}, "k must be"),
        ((ITEMS, Q, 11), {}, "k must be"),
        ((ITEMS, Q, -1), {}, "k must be"),
        ((ITEMS, Q, True), {}, "k must be"),
        ((ITEMS, Q, 2.0), {}, "k must be"),
        ((ITEMS, Q, 1), {"exclude": [10]}, "outside"),
        ((ITEMS, Q, 1), {"exclude": [-1]}, "outside"),
        ((ITEMS, Q, 1), {"exclude": [1.5]}, "integer"),
        ((ITEMS, Q, 1), {"exclude": "abc"}, "string"),
        ((ITEMS, Q, 1), {"allow": [[1, 2]]}, "1-d"),
        ((ITEMS, np.zeros((2, 4), dtype=np.float32), 1), {"exclude": [[1], [2], [3]]}, "3 id lists for 2"),
        ((ITEMS, Q, 1), {"level": "sse9"}, "unknown SIMD level"),
        ((ITEMS, Q, 1), {"level": 3}, "level"),
        ((ITEMS, Q, 1), {"threads": 0}, "threads"),
        ((ITEMS, Q, 1), {"threads": 1.5}, "threads"),
    ],
)
def test_bad_arguments_raise_value_error(args, kwargs, match):
    with pytest.raises(ValueError, match=match):
        kernels.topk(*args, **kwargs)


def test_bad_quantized_arguments_raise_value_error():
    table = kernels.QuantizedItems(np.ones((10, 4), dtype=np.float32))
    with pytest.raises(ValueError, match="candidates"):
        table.topk(Q, 1, candidates=0)
    with pytest.raises(ValueError, match="k must be"):
        table.topk(Q, 11)
    with pytest.raises(ValueError, match="one query"):
        table.approx_scores(np.zeros((2, 4), dtype=np.float32))
    with pytest.raises(ValueError, match="float32"):
        kernels.QuantizedItems(np.ones((10, 4)))
    missing = [lv for lv in ("avx2", "avx512", "neon") if lv not in LEVELS]
    for lv in missing:
        with pytest.raises(ValueError, match="cannot run"):
            kernels.topk(ITEMS, Q, 1, level=lv)
