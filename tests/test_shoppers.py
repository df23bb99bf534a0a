"""Simulated shoppers acting on the lists they are shown: the shop model shared with the
event simulator, the click model, and lockstep runs against the real stack."""

import hashlib
import io

from recofast.evaluation.simulate import Shop, simulate


def test_simulate_writes_the_same_bytes_as_before_the_shop_model_was_its_own_class():
    """The stream of a seed is pinned (sha256 of the events and the catalog, recorded before
    the shop moved into :class:`Shop`); a numpy release that changed its generators' streams
    would change it too."""
    out, cat = io.StringIO(), io.StringIO()
    simulate(out, users=80, items=60, events=3_000, seed=7, catalog=cat, drift_at=(1_500,))
    assert hashlib.sha256(out.getvalue().encode()).hexdigest() == "f738ee21cde96ab83af4087372915d7079dabe3101d03dff311a59c3868f1c8c"
    assert hashlib.sha256(cat.getvalue().encode()).hexdigest() == "078a2e2d0bd5dafd1052836948308b6cf94e8b1ddadecc9e0b1a6749ae54b6d2"


def test_shop_from_seed_is_the_shop_simulate_draws():
    a = Shop.from_seed(5, users=30, items=40, events=500)
    b = Shop.from_seed(5, users=30, items=40, events=500)
    assert (a.taste == b.taste).all() and (a.price == b.price).all() and (a.device == b.device).all()
    # The shoppers' favourite categories are the ones the simulated stream searches for.
    import json
    buf = io.StringIO()
    simulate(buf, users=30, items=40, events=5_000, seed=5, new_user_share=0.0)
    shop = Shop.from_seed(5, users=30, items=40, events=5_000, new_user_share=0.0)
    searches = [json.loads(x) for x in buf.getvalue().splitlines() if '"search"' in x]
    hits = sum(shop.taste[int(e["user"][1:]), shop.categories.index(e["query"])] > 1 / len(shop.categories) for e in searches)
    assert hits > 0.7 * len(searches)


# -- the click model and the plan, no servers -------------------------------------------------

import doctest
import json

import numpy as np
import pytest
from recofast.evaluation import shoppers as shoppers_module
from recofast.evaluation.shoppers import ClickModel, Context, Session, Shoppers

def test_docstring_examples():
    for mod in (shoppers_module,):
        result = doctest.testmod(mod, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
        assert result.attempted > 0 and result.failed == 0


def test_click_model_is_seeded_position_biased_and_ordered():
    model = ClickModel(beta=1.0)
    a = np.full(10, 0.5)
    one = model.decide(np.random.default_rng(7), a)
    two = model.decide(np.random.default_rng(7), a)
    assert all((x == y).all() for x, y in zip((one.clicks, one.carts, one.purchases, one.qty),
                                               (two.clicks, two.carts, two.purchases, two.qty)))
    # Over many lists of equally attractive items, CTR per position follows 1/(1+p)^beta × a.
    rng = np.random.default_rng(1)
    clicks = np.zeros(10)
    carts = np.zeros(10)
    buys = np.zeros(10)
    n = 20_000
    for _ in range(n):
        ch = model.decide(rng, a)
        assert not (ch.carts & ~ch.clicks).any() and not (ch.purchases & ~ch.carts).any()
        clicks += ch.clicks
        carts += ch.carts
        buys += ch.purchases
    expected = model.examination(10) * 0.5
    assert np.allclose(clicks / n, expected, atol=0.012)
    assert (np.diff(clicks[[0, 2, 5, 9]]) < 0).all()
    assert abs(carts.sum() / clicks.sum() - 0.3) < 0.02 and abs(buys.sum() / carts.sum() - 0.4) < 0.03
    # An item with no attraction is never clicked; beta = 0 means no position bias.
    assert not model.decide(np.random.default_rng(3), np.zeros(10)).clicks.any()
    flat = ClickModel(beta=0.0)
    assert (flat.examination(5) == 1.0).all()
    with pytest.raises(ValueError):
        ClickModel(beta=-1)


def test_attraction_follows_taste_in_context_and_ignores_unknown_items():
    shop = Shop.from_seed(2, users=50, items=300, events=1_000)
    model = ClickModel()
    u = 0
    fav = int(np.argmax(shop.taste[u]))
    least = int(np.argmin(shop.taste[u]))
    ctx = Context("desktop", "GB", "cloud", 12)
    # The same popularity, favourite category vs the least liked one.
    liked = [f"i{j}" for j in np.flatnonzero(shop.item_cat == fav)]
    disliked = [f"i{j}" for j in np.flatnonzero(shop.item_cat == least)]
    assert model.attraction(shop, u, liked, ctx).mean() > 3 * model.attraction(shop, u, disliked, ctx).mean()
    a = model.attraction(shop, u, ["i1", "i99999", "lamp", "i"], ctx)
    assert a[0] > 0 and (a[1:] == 0).all()
    # Context moves it: rain favours the rain categories.
    rain_cat = [c for c, name in enumerate(shop.categories) if name == "umbrellas"][0]
    umbrellas = [f"i{j}" for j in np.flatnonzero(shop.item_cat == rain_cat)]
    wet, dry = Context("desktop", "GB", "rain", 12), Context("desktop", "GB", "cloud", 12)
    assert model.attraction(shop, u, umbrellas, wet).mean() > model.attraction(shop, u, umbrellas, dry).mean()


def answer(items, rec_id="r1", source="personal", variant=None):
    body = {"user": "x", "rec_id": rec_id, "model_version": 1, "source": source,
            "items": [{"item": i, "score": 1.0, "reason": "personal"} for i in items]}
    if variant:
        body.update(experiment="demo", variant=variant)
    return body


def test_sessions_contexts_and_draws_depend_on_the_seed_only():
    shop = Shop.from_seed(4, users=40, items=100, events=1_000)
    a = Shoppers(shop, "http://unused", seed=11, round_size=10)
    b = Shoppers(shop, "http://unused", seed=11, round_size=10)
    c = Shoppers(shop, "http://unused", seed=12, round_size=10)
    plan_a = [a.next_round() for _ in range(5)]
    plan_b = [b.next_round() for _ in range(5)]
    assert plan_a == plan_b and plan_a != [c.next_round() for _ in range(5)]
    assert all(len({s.shopper for s in r}) == 10 for r in plan_a)  # distinct shoppers in a round
    assert [a.context(s) for r in plan_a for s in r] == [b.context(s) for r in plan_b for s in r]
    # What a shopper does with a list depends on the list and the seed, not on when or in
    # which order the sessions are handled.
    shown = [f"i{j}" for j in range(10)]
    sessions = [s for r in plan_a for s in r]
    ev_a = [a.act(s, a.context(s), answer(shown, rec_id=f"r{s.number}")) for s in sessions]
    ev_b = [b.act(s, b.context(s), answer(shown, rec_id=f"r{s.number}")) for s in reversed(sessions)][::-1]
    strip = lambda evs: [{k: v for k, v in e.items() if k not in ("id", "session", "ts")} for e in evs]  # noqa: E731
    assert [strip(e) for e in ev_a] == [strip(e) for e in ev_b]
    assert a.tallies()["total"] == b.tallies()["total"]


def test_act_posts_clicks_with_the_lists_rec_id_and_browses_without_one():
    shop = Shop.from_seed(5, users=20, items=80, events=500)
    s = Shoppers(shop, "http://unused", seed=3, model=ClickModel(gamma=2.0), browse=1.0)
    shown = [f"i{j}" for j in range(10)]
    for k in range(60):
        sess = Session(k, k % 20, k // 20)
        evs = s.act(sess, s.context(sess), answer(shown, rec_id=f"list{k}", variant=["a", "b"][k % 2]))
        for e in evs:
            assert e["user"] == f"shopper{k % 20}" and e["v"] == 1 and isinstance(e["ts"], int)
            if e.get("rec_id"):
                assert e["rec_id"] == f"list{k}" and e["item"] in shown and e["type"] in ("click", "view", "add_to_cart", "purchase")
        clicks = [e["item"] for e in evs if e["type"] == "click"]
        assert clicks == [e["item"] for e in evs if e["type"] == "view" and e.get("rec_id")]
        for e in evs:
            if e["type"] == "purchase":
                assert e["price"] == float(shop.price[int(e["item"][1:])]) and e["qty"] in (1, 2)
    t = s.tallies()
    assert t["sessions"] == 60 and t["total"]["lists"] == 60 and t["total"]["shown"] == 600
    assert set(t["variants"]) == {"a", "b"} and t["experiments"] == ["demo"]
    assert t["total"]["clicks"] == sum(p["clicks"] for p in t["positions"]) > 0
    assert t["organic"]["sessions"] == 60 and t["organic"]["views"] + t["organic"]["carts"] + t["organic"]["purchases"] > 60
    assert sum(len(r.events) for r in s.log) > 0 and t["digests"]["sessions"]
