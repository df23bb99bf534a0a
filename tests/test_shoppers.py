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
