"""Drift monitoring wired to adaptation, on a stream with an abrupt preference shift."""

import pytest
import recofast
from recofast.adaptation import DriftMonitor, shift_stream
from recofast.drift import PageHinkley

SHIFT = 15_000


def run(adapt, users, items, **kw):
    rec = recofast.Recommender(dim=16, seed=1, snapshot_ms=0)
    seen = []
    mon = DriftMonitor(rec, adapt=adapt, on_drift=seen.append, **kw)
    hits = tests = 0
    for t, (u, i) in enumerate(zip(users, items)):
        h = mon.learn_one(u, i, "purchase")
        if t >= SHIFT and h is not None and tests < 5_000:
            hits += h
            tests += 1
    assert tests == 5_000
    return hits / tests, mon, seen


def test_adaptation_raises_recall_after_an_abrupt_shift():
    users, items = shift_stream(events=30_000, shift_at=SHIFT, seed=0)
    plain, mon_plain, _ = run(False, users, items)
    adapted, mon, seen = run(True, users, items)
    # The drop of the hit rate is detected soon after the shift, in both runs.
    downs = [d for d in mon.drifts if d.direction == "down" and d.signal == "hits"]
    assert any(SHIFT <= d.event_index < SHIFT + 1_000 for d in downs), mon.drifts
    assert any(d.adapted for d in downs)
    assert not any(d.adapted for d in mon_plain.drifts)
    assert seen == mon.drifts  # the callback saw every detection
    # Recall@20 over the 5,000 tests after the shift, same stream, same seed.
    assert adapted > plain, (adapted, plain)


def test_rising_hit_rate_does_not_trigger_adaptation():
    users, items = shift_stream(events=8_000, shift_at=10**9, seed=3)
    _, mon, _ = run_noshift(users, items)
    assert all(not d.adapted for d in mon.drifts if d.signal == "hits")


def run_noshift(users, items):
    rec = recofast.Recommender(dim=16, seed=1, snapshot_ms=0)
    mon = DriftMonitor(rec)
    for u, i in zip(users, items):
        mon.learn_one(u, i, "purchase")
    return None, mon, None


def test_event_mix_shift_is_detected_with_any_detector():
    rec = recofast.Recommender(dim=8, seed=1, snapshot_ms=0)
    mon = DriftMonitor(rec, mix_detector=PageHinkley())
    for t in range(6_000):
        event = "view" if t < 3_000 else "purchase"
        mon.learn_one(f"u{t % 50}", f"i{t % 97}", event)
    mix = [d for d in mon.drifts if d.signal == "mix"]
    assert mix and all(d.event_index >= 3_000 for d in mix)
    assert all(d.adapted for d in mix)


def test_adapt_validates_its_arguments():
    rec = recofast.Recommender(dim=4)
    with pytest.raises(ValueError, match="lr_boost"):
        rec.adapt(lr_boost=0.0)
    with pytest.raises(ValueError, match="recency_decay"):
        rec.adapt(recency_decay=1.5)
    with pytest.raises(ValueError, match="events"):
        rec.adapt(events=-1)
    with pytest.raises(ValueError, match="k must be"):
        DriftMonitor(rec, k=0)
    rec.adapt(events=10)
    assert rec.adapting
