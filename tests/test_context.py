"""Context in the learner, session intent from searches, and cold start of new items."""

from __future__ import annotations

import json
import pickle
import subprocess
import sys

import numpy as np
import pytest
from recofast import Recommender
from recofast.recommender import CONTEXT_FIELDS

# Two values per field; items "a*" sell in the first, "b*" in the second.
VALUES = {
    "device": ("mobile", "desktop"),
    "hour": (9, 21),
    "weekday": ("mon", "sat"),
    "country": ("GB", "FR"),
    "region": ("europe", "asia"),
    "weather": ("rain", "sun"),
    "segment": ("age:18-24", "age:65+"),
}


def _train(field: str, seed: int = 1) -> Recommender:
    rec = Recommender(dim=16, seed=seed, snapshot_ms=0, snapshot_every=100)
    rng = np.random.default_rng(seed)
    n = 6000
    first = rng.random(n) < 0.5
    items = [f"{'a' if f else 'b'}{rng.integers(20)}" for f in first]
    users = [f"u{x}" for x in rng.integers(0, 300, n)]
    values = [VALUES[field][0] if f else VALUES[field][1] for f in first]
    rec.learn_many(users, items, context={field: values})
    rec.refresh()
    return rec


def _share(recs: list[tuple[str, float]], prefix: str) -> float:
    return sum(i.startswith(prefix) for i, _ in recs) / len(recs)


@pytest.mark.parametrize("field", sorted(VALUES))
def test_each_context_field_is_learned_and_reorders_the_list(field):
    rec = _train(field)
    a_ctx = rec.recommend("newcomer", k=10, context={field: VALUES[field][0]})
    b_ctx = rec.recommend("newcomer", k=10, context={field: VALUES[field][1]})
    assert _share(a_ctx, "a") >= 0.8, a_ctx
    assert _share(b_ctx, "b") >= 0.8, b_ctx
    assert f"{field}=" in " ".join(Recommender.context_keys({field: VALUES[field][0]}))


def test_intent_as_request_context_moves_matching_items_up():
    rec = Recommender(dim=8, seed=3, snapshot_ms=0)
    rec.set_item_text(["lamp1", "lamp2", "mug1", "mug2"], ["desk lamp", "floor lamp", "tea mug", "coffee mug"])
    for u in range(30):
        rec.learn_many([f"p{u}"] * 2, ["mug1", "mug2"])
    assert {i for i, _ in rec.recommend("x", k=2)} == {"mug1", "mug2"}
    assert {i for i, _ in rec.recommend("x", k=2, context={"intent": "Lamp"})} == {"lamp1", "lamp2"}


def test_all_context_fields_are_known():
    assert set(CONTEXT_FIELDS) == {*VALUES, "intent"}


def test_missing_and_unknown_context_is_ignored_not_an_error():
    plain = Recommender(dim=8, seed=5, snapshot_ms=0)
    noisy = Recommender(dim=8, seed=5, snapshot_ms=0)
    users, items = ["u1", "u2", "u1", "u3"], ["a", "b", "c", "a"]
    plain.learn_many(users, items)
    # None, empty, NaN, an hour that is no hour, a weekday that is no day, an unknown
    # field, an object no field takes: nothing is learned from any of them.
    ctx = [{"device": None}, {"mood": "happy", "hour": 99}, {"weekday": "someday", "country": "  "},
           {"weather": float("nan"), "region": object(), "device": True}]
    noisy.learn_many(users, items, context=ctx)
    noisy.learn_one("u4", "b", context={"colour": "red"})
    plain.learn_one("u4", "b")
    assert noisy.context_affinities() == {}
    assert pickle.dumps(noisy) == pickle.dumps(plain)
    # Values never learned change nothing when recommending.
    for user in ("u1", "nobody"):
        want = plain.recommend(user, k=3)
        assert noisy.recommend(user, k=3, context={"device": "toaster", "hour": "teatime", "mood": 1}) == want
        assert noisy.recommend(user, k=3, context={}) == want


def test_bad_context_types_are_clear_errors():
    rec = Recommender(dim=4)
    with pytest.raises(ValueError, match="mapping"):
        rec.learn_one("u", "a", context=["device", "mobile"])
    with pytest.raises(ValueError, match="one per event"):
        rec.learn_many(["u", "v"], ["a", "b"], context={"device": ["mobile"]})
    with pytest.raises(ValueError, match="one value per event"):
        rec.learn_many(["u", "v"], ["a", "b"], context={"device": "mobile"})
    with pytest.raises(ValueError, match="entries"):
        rec.learn_many(["u", "v"], ["a", "b"], context=[{"device": "mobile"}])
    with pytest.raises(ValueError, match="mapping"):
        rec.recommend("u", context="mobile")
    with pytest.raises(ValueError, match="explore"):
        rec.recommend("u", explore=-1)
    with pytest.raises(ValueError, match="query"):
        rec.learn_one("u", event="search")
    with pytest.raises(ValueError, match="needs an item"):
        rec.learn_one("u", event="view")


def test_batch_context_as_columns_or_per_event_mappings_is_the_same():
    users = [f"u{i % 7}" for i in range(200)]
    items = [f"i{(i * 13) % 31}" for i in range(200)]
    devices = np.array(["mobile", "desktop"])[np.arange(200) % 2]
    hours = np.arange(200) % 24
    a = Recommender(dim=8, seed=2)
    b = Recommender(dim=8, seed=2)
    a.learn_many(users, items, context={"device": devices, "hour": hours})
    b.learn_many(users, items, context=[{"device": d, "hour": int(h)} for d, h in zip(devices, hours)])
    assert pickle.dumps(a) == pickle.dumps(b)
    assert {"device=mobile", "hour=evening", "hour=23"} <= set(a.context_affinities(top=5))


def test_a_search_sets_the_session_intent_until_the_session_ends():
    rec = Recommender(dim=8, seed=1, snapshot_ms=0, session_gap=600)
    rec.set_item_text(["l1", "l2", "m1", "m2", "m3"], ["desk lamp", "floor lamp", "tea mug", "big mug", "red mug"])
    for u in range(20):
        rec.learn_many([f"p{u}"] * 3, ["m1", "m2", "m3"])
    rec.learn_one("me", "m1", ts=1000)
    assert rec.recommend("me", k=1)[0][0].startswith("m")
    rec.learn_one("me", event="search", query="lamps and lamp shades", ts=1010)
    assert rec.intent("me") == "lamps and lamp shades"
    assert {i for i, _ in rec.recommend("me", k=2)} == {"l1", "l2"}
    rec.learn_one("me", "l1", ts=1020)  # same session: the intent stays, and is learned as context
    assert rec.intent("me") is not None
    assert any(k.startswith("intent=") for k in rec.context_affinities())
    rec.learn_one("me", "m2", ts=1020 + 3600)  # a new session
    assert rec.intent("me") is None
    assert rec.recommend("me", k=1)[0][0].startswith("m")


def test_a_new_item_is_recommendable_at_once_and_explored():
    rec = Recommender(dim=8, seed=4, snapshot_ms=0)
    texts = {f"lamp{i}": f"brass lamp model {i}" for i in range(5)} | {f"mug{i}": f"tea mug {i}" for i in range(5)}
    texts |= {f"x{i}": f"filler thing {i}" for i in range(20)}
    rec.set_item_text(list(texts), list(texts.values()))
    rng = np.random.default_rng(0)
    for _ in range(600):
        u = f"u{rng.integers(50)}"
        kind = "lamp" if rng.random() < 0.5 else "mug"
        rec.learn_one(u, f"{kind}{rng.integers(5)}")
    rec.set_item_text(["lamp-new"], ["brass lamp model deluxe"])
    rec.refresh()
    assert rec.fresh_items()[0] == "lamp-new"
    # Its starting vector comes from the lamps: a lamp lover's list ranks it above the mugs
    # by factors alone.
    lamps = Recommender._wrap(rec._m)  # same model
    ids, vecs = lamps.item_factors()
    v = dict(zip(ids, vecs))
    lamp_mean = np.mean([v[f"lamp{i}"] for i in range(5)], axis=0)
    mug_mean = np.mean([v[f"mug{i}"] for i in range(5)], axis=0)
    assert np.linalg.norm(v["lamp-new"] - lamp_mean) < np.linalg.norm(v["lamp-new"] - mug_mean)
    rec.learn_one("fan", "lamp0")
    listed = [i for i, _ in rec.recommend("fan", k=5, explore=1)]
    assert "lamp-new" in listed
    # Exploration never shows an excluded item.
    assert "lamp-new" not in [i for i, _ in rec.recommend("fan", k=5, explore=1, exclude=["lamp-new"])]


def test_context_intent_and_new_items_survive_a_snapshot(tmp_path):
    rec = _train("device")
    rec.set_item_text(["brand-new"], ["something new"])
    rec.search("u1", "lamp", ts=5.0)
    path = tmp_path / "m.rcf"
    rec.save(path)
    back = Recommender.load(path)
    rec.refresh()  # the loaded model scores from a fresh snapshot; so must the original
    assert back.intent("u1") == "lamp"
    assert back.fresh_items() == rec.fresh_items()
    for ctx in ({"device": "mobile"}, {"device": "desktop"}, None):
        assert back.recommend("u2", k=10, context=ctx) == rec.recommend("u2", k=10, context=ctx)


def test_eval_reports_context_cold_start_and_new_item_figures(tmp_path):
    ev, cat, out = tmp_path / "ev.jsonl", tmp_path / "cat.jsonl", tmp_path / "r.json"
    run = [sys.executable, "-m", "recofast.cli"]
    subprocess.run([*run, "simulate", "--users", "300", "--items", "200", "--events", "8000", "--seed", "2",
                    "--out", str(ev), "--catalog", str(cat)], check=True, capture_output=True)
    res = subprocess.run([*run, "eval", "--events", str(ev), "--items", str(cat), "--context", "all",
                          "--model", "recofast,recofast-noctx,pop", "--explore", "1", "--no-progress",
                          "--json", str(out)], check=True, capture_output=True, text=True)
    assert "with context / without" in res.stdout and "cold start" in res.stdout
    scores = {s["model"]: s for s in json.loads(out.read_text())["scores"]}
    rf = scores["recofast"]
    assert rf["tests"] > 1000 and 0 < rf["cold_tests"] < rf["tests"]
    assert rf["new_items"] == 40 and rf["new_items_shown"] > 0 and rf["new_impressions"] > 0
    assert scores["pop"]["new_items_shown"] <= rf["new_items_shown"]
    assert rf["recall"] > scores["pop"]["recall"]


def test_a_request_in_a_new_session_does_not_carry_the_last_search():
    rec = Recommender(dim=8, seed=1, snapshot_ms=0, session_gap=600)
    rec.set_item_text(["l1", "l2", "m1", "m2"], ["desk lamp", "floor lamp", "tea mug", "big mug"])
    for u in range(20):
        rec.learn_many([f"p{u}"] * 2, ["m1", "m2"])
    rec.learn_one("me", "m1", ts=1000)
    rec.search("me", "lamp", ts=1010)
    assert {i for i, _ in rec.recommend("me", k=2, ts=1020)} == {"l1", "l2"}
    assert rec.recommend("me", k=1, ts=1010 + 36_000)[0][0] == "m2"


def test_strong_context_keeps_scores_finite_and_bad_values_are_value_errors():
    with pytest.raises(ValueError, match="w_ctx"):
        Recommender(w_ctx=11)
    rec = _train("device")
    rec2 = Recommender(dim=16, seed=1, snapshot_ms=0, w_ctx=10)
    rec2.learn_many(["u1", "u2", "u3"], ["a", "b", "a"], context={"device": ["mobile", "desktop", "mobile"]})
    for r in (rec, rec2):
        assert all(np.isfinite(s) for _, s in r.recommend("newcomer", k=5, context={"device": "mobile"}))
    for bad in ({"k": 2**70}, {"explore": 2**70}, {"ts": 10**400}):
        with pytest.raises(ValueError):
            rec.recommend("u1", **bad)
    with pytest.raises(ValueError, match="one-dimensional"):
        rec.learn_many(["u", "v"], ["a", "b"], context={"device": np.array([["a"], ["b"]])})
    assert len(rec.recommend("u1", k=10**9)) <= rec.n_items  # a huge k is the whole catalogue


def test_a_search_event_with_an_item_learns_the_item_too():
    rec = Recommender(dim=4, seed=1, snapshot_ms=0, event_weights={"search": 1.0})
    rec.learn_one("u", "lamp", event="search", query="lamp", ts=10)
    assert rec.intent("u") == "lamp" and rec.has_seen("u", "lamp")
    rec.learn_one("v", "mug", event="search")  # an item, no query: learned as before
    assert rec.has_seen("v", "mug") and rec.intent("v") is None


def test_eval_counts_only_first_arrivals_and_skips_empty_catalogue_text(tmp_path):
    from recofast.evaluation.data import CatalogEntry, EventLog
    from recofast.evaluation.protocol import build_models, prequential

    ts = np.arange(100, 141, dtype=np.float64)
    users = [f"u{k % 5}" for k in range(41)]
    items = [f"i{k % 7}" for k in range(41)]
    log = EventLog(users, items, ts, ["view"] * 41)
    catalog = [CatalogEntry("i0", "zero", 100.0), CatalogEntry("i0", "", 125.0),  # a price-only update
               CatalogEntry("i3", "three", 130.0),  # already in the stream: not new
               CatalogEntry("n1", "zero new", 140.0)]
    models = build_models(["recofast"], {}, catalog)
    score = prequential(log, models, k=5, progress=False, catalog=catalog)[0]
    assert score.new_items == 1
    rec = models[0].rec
    assert rec.fresh_items() == ["n1"]
    # n1 started from i0's factors, its one text neighbour: the empty update left i0's text.
    ids, f = rec.item_factors()
    v = dict(zip(ids, f))
    cos = float(v["n1"] @ v["i0"] / (np.linalg.norm(v["n1"]) * np.linalg.norm(v["i0"])))
    assert cos > 0.9, cos
