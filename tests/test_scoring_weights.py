"""Per-request scoring weights: experiment variants that differ in scoring share one model."""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pytest
from recofast import Recommender

USERS = [f"u{j}" for j in range(0, 300, 13)] + ["newcomer"]
CONTEXTS = [None, {"device": "mobile"}, {"device": "desktop"}, {"device": "mobile", "intent": "lamp"}]


def _events(seed: int = 1, n: int = 6000) -> dict:
    """A shop where "a*" items sell on mobile and "b*" on desktop, popularity skewed towards
    low item numbers, with item text (lamps and mugs) for the text and intent signals."""
    rng = np.random.default_rng(seed)
    mobile = rng.random(n) < 0.5
    nums = np.minimum(rng.zipf(1.6, n), 30) - 1
    items = [f"{'a' if m else 'b'}{k}" for m, k in zip(mobile, nums)]
    users = [f"u{x}" for x in rng.integers(0, 300, n)]
    return {
        "users": users,
        "items": items,
        "events": [["view", "add_to_cart", "purchase"][x] for x in rng.integers(0, 3, n)],
        "ts": np.arange(n, dtype=np.float64) * 30.0,
        "context": {"device": ["mobile" if m else "desktop" for m in mobile]},
    }


def _train(seed: int = 1, **options) -> Recommender:
    rec = Recommender(dim=16, seed=seed, snapshot_ms=0, snapshot_every=100, **options)
    ids = [f"{p}{k}" for p in "ab" for k in range(30)]
    rec.set_item_text(ids, [f"{'lamp' if k % 3 == 0 else 'mug'} {['brass', 'oak', 'steel', 'glass', 'linen'][k % 5]}" for k in range(30)] * 2)
    rec.learn_many(**_events(seed))
    rec.search("u13", "lamp", ts=6000 * 30.0)
    rec.refresh()
    return rec


def _lists(rec: Recommender, weights=None) -> list:
    return [rec.recommend(u, k=10, context=c, weights=weights) for u in USERS for c in CONTEXTS]


@pytest.fixture(scope="module")
def rec() -> Recommender:
    return _train()


def test_no_weights_and_empty_weights_score_as_the_model_does(rec):
    plain = _lists(rec)
    assert _lists(rec, weights=None) == plain
    assert _lists(rec, weights={}) == plain
    same = {name: float(rec.options()[name]) for name in ("w_mf", "w_cooc", "w_pop", "w_text", "w_ctx", "w_intent")}
    assert _lists(rec, weights=same) == plain


def test_without_context_weight_is_the_model_configured_without_it(rec):
    twin = _train(w_ctx=0.0)  # same events, same seed: the same learned state
    assert twin.item_factors()[0] == rec.item_factors()[0]
    np.testing.assert_array_equal(twin.item_factors()[1], rec.item_factors()[1])
    assert _lists(rec, weights={"w_ctx": 0.0}) == _lists(twin)
    # The context has an effect with the model's weights, and none on a newcomer without.
    mobile = rec.recommend("newcomer", k=10, context={"device": "mobile"})
    desktop = rec.recommend("newcomer", k=10, context={"device": "desktop"})
    assert sum(i.startswith("a") for i, _ in mobile) > sum(i.startswith("a") for i, _ in desktop)
    no_ctx = rec.recommend("newcomer", k=10)
    assert rec.recommend("newcomer", k=10, context={"device": "mobile"}, weights={"w_ctx": 0.0}) == no_ctx
    assert rec.recommend("newcomer", k=10, context={"device": "desktop"}, weights={"w_ctx": 0.0}) == no_ctx
    # The override is for that request only.
    assert rec.recommend("newcomer", k=10, context={"device": "mobile"}) == mobile


@pytest.mark.parametrize("name, value", [("w_mf", 0.0), ("w_cooc", 0.2), ("w_text", 1.5), ("w_intent", 0.0), ("w_ctx", 2.5)])
def test_each_weight_override_is_the_model_configured_with_it(rec, name, value):
    twin = _train(**{name: value})
    over = _lists(rec, weights={name: value})
    assert over == _lists(twin)
    assert over != _lists(rec), f"{name}={value} changes some list"


def test_a_large_popularity_weight_moves_the_list_towards_popular_items(rec):
    counts = Counter(_events()["items"])
    popular = [i for i, _ in counts.most_common(10)]
    known = [u for u in USERS if rec.history(u)]
    assert len(known) > 10

    def share(weights):
        hits = 0
        for u in known:
            hits += sum(i in popular for i, _ in rec.recommend(u, k=10, exclude_seen=False, weights=weights))
        return hits / (10 * len(known))

    assert share({"w_pop": 50.0}) > share(None) + 0.2
    assert share({"w_pop": 50.0}) >= 0.9
    assert _lists(rec, weights={"w_pop": 50.0}) == _lists(_train(w_pop=50.0))


@pytest.mark.parametrize(
    "weights, message",
    [
        ({"w_foo": 1.0}, "unknown weight \"w_foo\"; known weights: w_mf, w_cooc, w_pop, w_text, w_ctx, w_intent"),
        ({"dim": 8}, "unknown weight \"dim\""),
        ({"w_ctx": 11.0}, "w_ctx must be at most 10"),
        ({"w_ctx": float("nan")}, "w_ctx must be a finite number"),
        ({"w_mf": -0.5}, "w_mf must be a finite number ≥ 0"),
        ({"w_pop": math.inf}, "w_pop must be a finite number"),
        ({"w_cooc": 1e40}, "w_cooc must be a finite number"),
        ({"w_text": "0.5"}, "weight w_text: '0.5' is not a number"),
        ({"w_intent": None}, "weight w_intent: None is not a number"),
        ({"w_pop": True}, "weight w_pop: True is not a number"),
        ({1: 0.5}, "weights must be a mapping of weight name"),
        ([("w_ctx", 0.0)], "weights must be a mapping"),
        ("w_ctx", "weights must be a mapping"),
    ],
)
def test_invalid_weights_raise_value_error_naming_them(rec, weights, message):
    before = rec.recommend("u13", k=5)
    with pytest.raises(ValueError, match=message):
        rec.recommend("u13", k=5, weights=weights)
    with pytest.raises(ValueError, match=message):
        rec.recommend_many(["u13", "newcomer"], k=5, weights=weights)
    assert rec.recommend("u13", k=5) == before


def test_similar_items_take_weights(rec):
    twin = _train(w_mf=0.0)
    items = [f"{p}{k}" for p in "ab" for k in range(0, 30, 4)]
    over = [rec.similar_items(i, k=5, weights={"w_mf": 0.0}) for i in items]
    assert over == [twin.similar_items(i, k=5) for i in items]
    assert over != [rec.similar_items(i, k=5) for i in items]
    assert [rec.similar_items(i, k=5, weights={}) for i in items] == [rec.similar_items(i, k=5) for i in items]
    for bad in ({"w_mf": -1.0}, {"w_foo": 1.0}):
        with pytest.raises(ValueError, match="w_mf must be|unknown weight"):
            rec.similar_items("a0", k=5, weights=bad)
        with pytest.raises(ValueError, match="w_mf must be|unknown weight"):
            rec.similar_items("no-such-item", k=5, weights=bad)


def test_the_core_takes_pairs_too(rec):
    assert rec._m.recommend("u13", 5, weights=[("w_pop", 3.0), ("w_ctx", 0.0)]) == rec.recommend("u13", k=5, weights={"w_pop": 3.0, "w_ctx": 0.0})
    with pytest.raises(ValueError, match="w_pop must be"):
        rec._m.recommend_many(["u13"], 5, weights=[("w_pop", -1.0)])


@pytest.mark.parametrize("weights", [None, {"w_ctx": 0.0}, {"w_pop": 20.0, "w_mf": 0.5}, {"w_cooc": 0.0, "w_text": 0.0, "w_intent": 8.0}])
@pytest.mark.parametrize("context", [None, {"device": "desktop"}, {"device": "mobile", "intent": "mug"}])
def test_recommend_many_is_recommend_for_each_user(rec, weights, context):
    lists = rec.recommend_many(USERS, k=8, context=context, weights=weights)
    assert lists == [rec.recommend(u, k=8, context=context, weights=weights) for u in USERS]
    assert lists[-1], "the newcomer gets a list"
