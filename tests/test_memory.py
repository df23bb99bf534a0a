"""Bounded memory and erasure: idle users expire, the user cap evicts the least recently
active, rows are reused, context values are admitted after a few sightings, items are
retired, and forget() erases a user from the model and from its snapshots."""

import pickle

import numpy as np
import pytest
import recofast

DAY = 86_400.0


def small(**kw):
    kw.setdefault("dim", 8)
    kw.setdefault("seed", 3)
    kw.setdefault("snapshot_ms", 0)
    return recofast.Recommender(**kw)


def test_defaults_bound_memory_and_are_documented():
    opts = recofast.Recommender.default_options()
    assert float(opts["user_idle"]) == 180 * DAY
    assert int(opts["max_users"]) == 2_000_000
    assert float(opts["item_idle"]) == 90 * DAY
    assert int(opts["ctx_min_count"]) == 3
    assert float(opts["ctx_idle"]) == 90 * DAY
    assert int(opts["max_context_keys"]) == 200_000
    with pytest.raises(ValueError, match="user_idle"):
        small(user_idle=-1)
    with pytest.raises(ValueError, match="max_users"):
        small(max_users="many")


def test_idle_expiry_evicts_exactly_the_users_past_the_idle_time():
    rec = small(user_idle=10 * DAY)
    rec.learn_many(["old", "mid", "new"], ["a", "b", "c"], ts=[0.0, 15 * DAY, 20 * DAY])
    assert rec.expire() == ["old"]
    assert rec.history("old") == []
    assert rec.history("mid") == ["b"]
    assert sorted(rec.expire(now=26 * DAY)) == ["mid"]
    assert rec.n_users == 1
    # Without event times the clock never moves, so nobody is idle.
    plain = small(user_idle=1)
    plain.learn_many(["a", "b"], ["x", "y"])
    assert plain.expire() == []
    assert plain.n_users == 2


def test_cap_evicts_least_recently_active_first_during_learning():
    rec = small(max_users=3)
    for u in ["u0", "u1", "u2"]:
        rec.learn_one(u, "a")
    rec.learn_one("u0", "b")  # u1 is the least recently active now
    rec.learn_one("u3", "c")
    assert rec.n_users == 3
    assert rec.drain_evicted() == ["u1"]
    assert rec.drain_evicted() == []
    rec.learn_many(["u4", "u5"], ["a", "b"])  # u2, then u0
    assert rec.n_users == 3
    assert rec.expire() == ["u2", "u0"], "evicted ids wait for expire() in eviction order"
    assert {u for u in ["u3", "u4", "u5"] if rec.history(u)} == {"u3", "u4", "u5"}


def test_row_reuse_gives_a_new_user_a_clean_list():
    rec = small(max_users=50)
    for u in range(50):
        rec.learn_many([f"a{u}"] * 3, ["a1", "a2", "a3"])
    info = rec.memory_info()
    rows = info["user_rows"]
    for u in range(50):
        rec.learn_many([f"b{u}"] * 2, ["b1", "b2"])
    # The cap applies after each call, so one call's new users (here 1) may pass it first;
    # every later user reuses an evicted row.
    assert rec.memory_info()["user_rows"] == rows + 1, "new users reuse the evicted rows"
    assert len(rec.expire()) == 50
    # The new users' state is theirs alone: no history, seen items or list of the row's old owner.
    assert rec.history("b7") == ["b2", "b1"]
    assert not rec.has_seen("b7", "a1")
    recs = [i for i, _ in rec.recommend("b7", k=3)]
    assert "b1" not in recs and "b2" not in recs
    assert rec.recommend("a7", k=2) == rec.recommend("nobody-at-all", k=2), "an evicted user is unknown"


def test_random_context_values_are_never_admitted_repeated_ones_are():
    rec = small(ctx_min_count=3)
    rng = np.random.default_rng(0)
    n = 5000
    junk = [f"free text {rng.integers(1 << 60)}" for _ in range(n)]
    rec.learn_many([f"u{i % 50}" for i in range(n)], [f"i{i % 40}" for i in range(n)],
                   context=[{"segment": j} for j in junk])
    assert rec.memory_info()["contexts"] == 0
    for _ in range(2):
        rec.learn_one("u1", "i1", context={"segment": "vip"})
    assert "segment=vip" not in rec.context_affinities(top=5)
    assert rec.memory_info()["contexts"] == 0
    rec.learn_one("u1", "i1", context={"segment": "vip"})
    for _ in range(20):
        rec.learn_one("u1", "i1", context={"segment": "vip"})
    assert rec.memory_info()["contexts"] == 1
    assert "segment=vip" in rec.context_affinities(top=5)
    assert rec.memory_info()["context_candidates"] <= 65_536


def test_stale_context_keys_are_pruned_so_new_ones_are_learned():
    rec = small(ctx_min_count=1, max_context_keys=50, ctx_idle=0)
    for k in range(60):
        rec.learn_one("u", "a", ts=float(k), context={"segment": f"s{k}"})
    assert rec.memory_info()["contexts"] == 50
    rec.expire()
    pruned = rec.last_expired["contexts"]
    assert len(pruned) == 10 and "segment=s0" in pruned
    assert rec.memory_info()["contexts"] == 40
    rec.learn_one("u", "a", ts=100.0, context={"segment": "brand-new"})
    assert rec.memory_info()["contexts"] == 41, "a new key is learned again"
    assert rec.memory_info()["context_free"] == 9, "and took a pruned key's row"


def test_retired_items_leave_recommendations_and_rows_are_reused():
    rec = small(item_idle=30 * DAY)
    rec.set_item_text(["lamp"], ["desk lamp"])
    rec.set_in_catalogue(["sofa"])
    for u in range(30):
        rec.learn_many([f"u{u}"] * 4, ["junk", "lamp", "sofa", "mug"], ts=[float(u)] * 4)
    rec.learn_one("late", "mug", ts=60 * DAY)
    assert "junk" in [i for i, _ in rec.recommend("nobody", k=10)]
    rec.expire()
    assert rec.last_expired["items"] == ["junk"]
    assert rec.n_items == 3
    for who in ["u3", "nobody", "late"]:
        assert "junk" not in [i for i, _ in rec.recommend(who, k=10, exclude_seen=False)]
    assert all(i != "junk" for i, _ in rec.similar_items("lamp", k=10))
    assert "junk" not in rec.history("u3")
    ids, factors = rec.item_factors()
    assert sorted(ids) == ["lamp", "mug", "sofa"] and factors.shape == (3, 8)
    rows = rec.memory_info()["item_rows"]
    rec.learn_one("late", "newcomer", ts=60 * DAY)
    assert rec.memory_info()["item_rows"] == rows, "a new item takes the retired row"
    assert "newcomer" in [i for i, _ in rec.recommend("nobody", k=10)]
    # An item that left the catalogue retires like any other.
    rec.set_in_catalogue(["sofa"], False)
    rec.expire(now=200 * DAY)
    assert "sofa" in rec.last_expired["items"] and "lamp" not in rec.last_expired["items"]


def test_forget_erases_the_user_from_the_model_and_the_snapshot_bytes(tmp_path):
    rec = small()
    secret = "shopper-7f3a9c@example.org"
    for u in range(20):
        rec.learn_many([f"u{u}"] * 2, ["a", "b"])
    rec.learn_many([secret] * 3, ["a", "c", "d"], ts=[10.0, 11.0, 12.0])
    rec.search(secret, "lamp", ts=13.0)
    path = tmp_path / "before.rcf"
    rec.save(path)
    assert secret.encode() in path.read_bytes()
    assert rec.forget([secret, "never-seen"]) == 1
    assert rec.forget([secret]) == 0
    path = tmp_path / "model.rcf"
    rec.save(path)
    data = path.read_bytes()
    assert secret.encode() not in data
    assert secret.encode("utf-16-le") not in data
    assert secret not in pickle.dumps(rec).decode("latin-1")
    # The user is unknown now: the popular list, no history.
    assert rec.history(secret) == []
    assert rec.intent(secret) is None
    assert rec.recommend(secret, k=3) == rec.recommend("someone-else", k=3)
    back = recofast.Recommender.load(path)
    assert back.history(secret) == [] and back.n_users == 20
    assert back.recommend("u1", k=3) == rec.recommend("u1", k=3)


def test_learning_after_forget_works_and_reuses_the_row():
    rec = small()
    rec.learn_many(["gone", "gone", "stay"], ["a", "b", "a"])
    rows = rec.memory_info()["user_rows"]
    assert rec.forget(["gone"]) == 1
    rec.learn_one("fresh", "b")
    assert rec.memory_info()["user_rows"] == rows
    assert rec.history("fresh") == ["b"]
    rec.learn_one("gone", "c")
    assert rec.history("gone") == ["c"], "a forgotten user comes back as new"
    assert [i for i, _ in rec.recommend("fresh", k=2)]
    with pytest.raises(ValueError, match="single string"):
        rec.forget("gone")


def test_free_rows_survive_save_load_and_pickle(tmp_path):
    rec = small(max_users=10, item_idle=DAY)
    for u in range(25):
        rec.learn_one(f"u{u}", f"i{u % 5}", ts=float(u))
    rec.learn_one("u24", "junk", ts=1.0)
    rec.learn_one("u24", "i1", ts=3 * DAY)
    rec.expire()
    assert "junk" in rec.last_expired["items"]
    rec.save(tmp_path / "m.rcf")
    back = recofast.Recommender.load(tmp_path / "m.rcf")
    again = pickle.loads(pickle.dumps(rec))
    for m in (back, again):
        assert m.memory_info()["users"] == rec.memory_info()["users"] <= 10
        assert m.memory_info()["user_free"] == rec.memory_info()["user_free"]
        assert m.recommend("u24", k=3) == rec.recommend("u24", k=3)
        assert m.memory_info()["clock"] == 3 * DAY
    assert recofast.build_info()["snapshot_format"] == 4
