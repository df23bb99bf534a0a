"""What the learned second stage costs the learner: learn_many over the first 100,000 events
of the shop log with the ranker off (``ranker=false``: the learning path as it was before
the ranker, the one branch it adds not taken), on with nothing to learn from yet, and on
with every user's last candidates remembered (recommend_many over all the users first, so
each user's next event takes a ranker step); and off after the same recommend_many (what
the lists alone change, for the ratio of the last case).

Run with ``pytest bench/test_bench_ranker.py --benchmark-enable --benchmark-only -p no:randomly``;
the summary prints the ratios of the same run."""

from __future__ import annotations

import pytest
import recofast
from conftest import shared_data
from recofast.evaluation.data import read_events

GROUP = "learn: shop log, dim 64, ranker"


@pytest.fixture(scope="module")
def retail():
    path = shared_data() / "online_retail" / "interactions.csv.gz"
    if not path.exists():
        pytest.fail(f"the shop log is missing: {path}")
    return read_events(path, limit=100_000)


def _rate(benchmark, n):
    return n / benchmark.stats.stats.min if benchmark.stats else None


@pytest.mark.parametrize("mode", ["off", "off-after-lists", "on-cold", "on-remembered"])
def test_learn_many_with_and_without_the_ranker(benchmark, retail, record_rate, mode):
    benchmark.group = GROUP
    half = len(retail) // 2
    users = sorted(set(retail.users[half:]))

    def setup():
        rec = recofast.Recommender(dim=64, seed=1, ranker=mode.startswith("on"), ranker_cache=len(users))
        # The first half is learned before the clock starts; the second half is timed.
        rec.learn_many(retail.users[:half], retail.items[:half], "purchase", retail.ts[:half])
        if mode in ("on-remembered", "off-after-lists"):
            rec.recommend_many(users, k=20)
        return (rec,), {}

    def learn(rec):
        rec.learn_many(retail.users[half:], retail.items[half:], "purchase", retail.ts[half:])
        return rec

    rec = benchmark.pedantic(learn, setup=setup, rounds=5, iterations=1)
    assert rec.events_learned == len(retail)
    _w, pairs = rec._m.ranker_weights()
    if mode == "on-remembered":
        assert pairs > 0, "the ranker learned from the remembered candidates"
    else:
        assert pairs == 0
    rate = _rate(benchmark, len(retail) - half)
    if rate:
        benchmark.extra_info["events_per_s"] = rate
        record_rate(GROUP, f"ranker {mode}", rate)
