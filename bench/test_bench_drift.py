"""Drift detectors: recofast (``update_many``, one call into Rust) against River 0.26.1 (a
Python loop of ``update``, as River users run it), side by side on the same ~100k-value
streams. Each benchmark asserts that both find the same drift indices. ``recofast`` is fed
the same Python list as River (so it pays the list-to-array conversion);
``recofast-ndarray`` is fed a float64 numpy array.

Run (the normal test run skips benchmarks)::

    .venv/bin/python -m pytest bench/test_bench_drift.py --benchmark-enable --benchmark-only \\
        --benchmark-group-by=group

Targets: recofast at least River's speed for ADWIN (River's ADWIN core is compiled) and at
least 5x River for the others. KSWIN runs on 10k values (River's KSWIN calls SciPy at every
value, ~0.4 ms each, so 100k values would take ~40 s a round).
"""

from __future__ import annotations

import functools

import numpy as np
import pytest
import recofast.drift as rf
from conftest import FULL
from river import drift as rdrift

N = 100_000
# Rounds: full mode 10 (River 3; KSWIN 2), quick mode 3 (River 1).
ROUNDS, RIVER_ROUNDS = (10, 3) if FULL else (3, 1)

DETECTORS = {
    "ADWIN": (rf.ADWIN, rdrift.ADWIN, "real"),
    "PageHinkley": (rf.PageHinkley, rdrift.PageHinkley, "real"),
    "DDM": (rf.DDM, rdrift.binary.DDM, "binary"),
    "EDDM": (rf.EDDM, rdrift.binary.EDDM, "binary"),
    "HDDM_A": (rf.HDDM_A, rdrift.binary.HDDMA, "binary"),
    "HDDM_W": (rf.HDDM_W, rdrift.binary.HDDMW, "binary"),
    # River's KSWIN runs SciPy's ks_2samp at every value (~0.4 ms): 10k values, not 100k.
    "KSWIN": (functools.partial(rf.KSWIN, seed=42), functools.partial(rdrift.KSWIN, seed=42), "real-10k"),
}


@functools.cache
def stream(kind: str) -> list:
    """A Python list (what River is fed): 10 segments with abrupt changes of level."""
    rng = np.random.default_rng(2026)
    n = 10_000 if kind.endswith("-10k") else N
    seg = np.repeat(np.arange(10), n // 10)
    if kind.startswith("real"):
        levels = rng.normal(0.0, 1.0, 10)
        return (levels[seg] + rng.normal(0.0, 1.0, n)).tolist()
    p = rng.uniform(0.05, 0.6, 10)
    return (rng.random(n) < p[seg]).astype(int).tolist()


def river_indices(cls, xs: list) -> list[int]:
    d = cls()
    out = []
    for i, x in enumerate(xs):
        d.update(x)
        if d.drift_detected:
            out.append(i)
    return out


@functools.cache
def expected(name: str) -> tuple[int, ...]:
    _, river_cls, kind = DETECTORS[name]
    return tuple(river_indices(river_cls, stream(kind)))


@functools.cache
def array(kind: str) -> np.ndarray:
    return np.asarray(stream(kind), dtype=np.float64)


@pytest.mark.parametrize("impl", ["recofast", "recofast-ndarray", "river"])
@pytest.mark.parametrize("name", list(DETECTORS))
def test_update_many(benchmark, name, impl):
    ours, theirs, kind = DETECTORS[name]
    xs = stream(kind)
    benchmark.group = f"drift {name} ({len(xs):,} values)"
    benchmark.extra_info["implementation"] = impl
    if impl == "recofast":  # the same Python list River gets
        got = benchmark.pedantic(lambda: ours().update_many(xs).tolist(), rounds=ROUNDS, iterations=1, warmup_rounds=1)
    elif impl == "recofast-ndarray":  # a float64 array: no conversion, the core's own speed
        a = array(kind)
        got = benchmark.pedantic(lambda: ours().update_many(a).tolist(), rounds=ROUNDS, iterations=1, warmup_rounds=1)
    else:
        got = benchmark.pedantic(lambda: river_indices(theirs, xs), rounds=min(2, RIVER_ROUNDS) if name == "KSWIN" else RIVER_ROUNDS, iterations=1)
    assert tuple(got) == expected(name)
    assert len(got) > 0
    benchmark.extra_info.update(detector=name, values=len(xs))
    if benchmark.stats:
        benchmark.extra_info["updates_per_s"] = len(xs) / benchmark.stats.stats.min
