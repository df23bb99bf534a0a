"""Bounded memory: RSS while a stream of events passes with the caps on (it must plateau),
and what junk items cost a recommendation before and after `expire()` retires them.

Disabled in the normal run like every benchmark; enabled by

    .venv/bin/python -m pytest bench/test_bench_memory.py --benchmark-enable -p no:randomly -s

The full-size run (10M events over 1M users) is `bench/memory_stream.py stream`.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import memory_stream  # noqa: E402


def _enabled(benchmark) -> bool:
    return not getattr(benchmark, "disabled", False)


def test_rss_plateaus_while_events_stream(benchmark, record_rate):
    """2M events over 500k users with max_users 100k: RSS after the first quarter grows by
    less than a tenth over the rest of the stream."""
    benchmark.group = "memory: stream with caps"
    if not _enabled(benchmark):
        pytest.skip("benchmarks are disabled (--benchmark-enable runs them)")
    out = {}

    def run():
        out.update(memory_stream.stream(events=2_000_000, users=500_000, items=20_000, chunk=50_000,
                                        expire_every=250_000, max_users=100_000, log=lambda *_: None))

    benchmark.pedantic(run, rounds=1, iterations=1)
    curve = out["curve"]
    assert out["final"]["users"] <= 100_000
    quarter = curve[len(curve) // 4][1]
    assert curve[-1][1] < quarter * 1.1, curve
    assert out["retired"] > 0 and out["evicted"] > 0
    benchmark.extra_info["rss_mib"] = [round(c[1], 1) for c in curve]
    record_rate("memory: stream with caps", "recofast learn_many (caps on, expire every 250k)", out["learn_events_per_s"])


def test_recommend_cost_follows_live_items_not_retired_junk(benchmark, record_rate):
    """5,000 live items and 300,000 junk items: after retirement a recommendation costs
    about what it cost before the junk arrived."""
    benchmark.group = "memory: junk items"
    if not _enabled(benchmark):
        pytest.skip("benchmarks are disabled (--benchmark-enable runs them)")
    out = {}
    benchmark.pedantic(lambda: out.update(memory_stream.junk(junk_items=300_000, calls=100, log=lambda *_: None)),
                       rounds=1, iterations=1)
    assert out["retired"] == 300_000 and out["items_after"] == 5_000
    assert out["with_junk_ms"] > 5 * out["after_retire_ms"], out
    assert out["after_retire_ms"] < 3 * out["live_only_ms"] + 0.05, out
    benchmark.extra_info.update(out)
    record_rate("memory: junk items", "recommend with junk", 1e3 / out["with_junk_ms"], "calls/s")
    record_rate("memory: junk items", "recommend after expire()", 1e3 / out["after_retire_ms"], "calls/s")


def test_memory_per_user_item_and_context_key(benchmark):
    """RSS per row at dim 64, measured on 200,000 rows."""
    benchmark.group = "memory: per row"
    if not _enabled(benchmark):
        pytest.skip("benchmarks are disabled (--benchmark-enable runs them)")
    out = {}
    benchmark.pedantic(lambda: out.update(memory_stream.per_row(n=200_000, keys=50_000, log=lambda *_: None)),
                       rounds=1, iterations=1)
    # 64 float32 factors are 256 bytes: a row costs more, but not wildly more.
    assert 256 < out["user_bytes"] < 2048, out
    assert 256 < out["item_bytes"] < 4096, out
    assert 256 < out["context_key_bytes"] < 2048, out
    assert np.isfinite(list(out.values())).all()
    benchmark.extra_info.update(out)
