"""The Python API of the online recommender."""

import pickle
import threading
import time

import numpy as np
import pytest
import recofast
from recofast.errors import SnapshotError


def small(**kw):
    kw.setdefault("dim", 8)
    kw.setdefault("seed", 3)
    kw.setdefault("snapshot_ms", 0)
    return recofast.Recommender(**kw)


def baskets(rec, n_users=40):
    """Two item groups bought together; 'd' is the most popular item overall."""
    for u in range(n_users):
        rec.learn_many([f"u{u}"] * 3, ["a", "b", "c"], events="purchase", ts=[1000.0 * u] * 3)
        rec.learn_many([f"u{u}"] * 2, ["x", "y"], events="view", ts=[1000.0 * u + 5000] * 2)
    for p in range(100):
        rec.learn_one(f"p{p}", "d", event="purchase")


def test_build_info_names_version_profile_and_simd():
    info = recofast.build_info()
    assert info["version"] == recofast.__version__
    assert info["profile"] in ("release", "debug")
    assert info["simd"] in info["simd_available"]
    assert "scalar" in info["simd_available"]


def test_new_user_is_personalised_after_one_event():
    rec = small()
    baskets(rec)
    popular = [i for i, _ in rec.recommend("stranger", k=3)]
    assert popular[0] == "d"
    rec.learn_one("new", "a", event="purchase")
    recs = [i for i, _ in rec.recommend("new", k=2)]
    assert set(recs) == {"b", "c"}, recs
    assert "a" not in recs


def test_recommend_is_sorted_and_respects_k_exclude_allow_and_seen():
    rec = small()
    baskets(rec)
    rec.learn_one("me", "a")
    recs = rec.recommend("me", k=4)
    assert len(recs) == 4
    scores = [s for _, s in recs]
    assert scores == sorted(scores, reverse=True)
    assert all(isinstance(i, str) and isinstance(s, float) for i, s in recs)
    assert "a" not in [i for i, _ in recs]
    assert "a" in [i for i, _ in rec.recommend("me", k=10, exclude_seen=False)]
    assert "b" not in [i for i, _ in rec.recommend("me", k=10, exclude=["b"])]
    assert [i for i, _ in rec.recommend("me", k=10, allow=["x", "zzz"])] == ["x"]
    assert rec.recommend("me", k=10, allow=[]) == []


def test_integer_ids_and_numpy_arrays_are_the_same_ids_as_their_text():
    rec = small()
    rec.learn_many(np.array([1, 1, 2]), np.array([10, 11, 10]))
    rec.learn_one(2, "12")
    assert rec.n_users == 2 and rec.n_items == 3
    assert rec.has_seen("2", 12)
    assert rec.history(1) == ["11", "10"]
    ids, _ = rec.item_factors()
    assert ids == ["10", "11", "12"]
    extremes = np.array([0, -5, 2**62, -(2**63)], dtype=np.int64)
    rec.learn_many(extremes, np.array([10, 10, 10, 10], dtype=np.uint16))
    assert all(rec.has_seen(str(u), "10") for u in extremes.tolist())


def test_factor_export_shapes():
    rec = small(dim=5)
    baskets(rec, n_users=3)
    ids, f = rec.item_factors()
    assert f.shape == (len(ids), 5) and f.dtype == np.float32
    uids, uf = rec.user_factors()
    assert uf.shape == (rec.n_users, 5) and len(uids) == rec.n_users
    assert np.isfinite(f).all() and np.isfinite(uf).all()


def test_similar_items():
    rec = small()
    baskets(rec)
    sim = [i for i, _ in rec.similar_items("a", k=2)]
    assert set(sim) == {"b", "c"}
    assert rec.similar_items("unknown-item", k=3) == []


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda r: r.recommend("u0", k=0), "k must be a positive integer"),
        (lambda r: r.recommend("u0", k=-3), "k must be a positive integer"),
        (lambda r: r.recommend("u0", k="5"), "k must be a positive integer"),
        (lambda r: r.recommend_many(["u0"], k=0), "k must be a positive integer"),
        (lambda r: r.similar_items("a", k=0), "k must be a positive integer"),
        (lambda r: r.learn_many(["u"], ["a", "b"]), "differ in length"),
        (lambda r: r.learn_many(["u"], ["a"], events=["like"]), "unknown event type"),
        (lambda r: r.learn_one("u", "a", event="like"), "unknown event type"),
        (lambda r: r.learn_many(np.array([0.5]), ["a"]), "dtype"),
        (lambda r: r.learn_many([1.5], ["a"]), "strings or integers"),
        (lambda r: r.learn_many(["u"], ["a"], ts=[1.0, 2.0]), "expected (1,)"),
        (lambda r: r.learn_many(["u"], ["a"], weights=["heavy"]), "weights must be numeric"),
        (lambda r: r.learn_many(["u"], ["a"], weights=[float("nan")]), "finite"),
        (lambda r: r.learn_many(["u"], ["a"], weights=[1e30]), "between"),
        (lambda r: r.learn_one("u", "a", weight=-5000.0), "between"),
        (lambda r: r.learn_one("u", "a", ts="yesterday"), "ts must be"),
        (lambda r: r.learn_many("uu", ["a", "b"]), "not a single string"),
        (lambda r: r.recommend("u0", exclude="a"), "not a single string"),
    ],
)
def test_bad_arguments_raise_value_error_saying_what_was_wrong(call, message):
    rec = small()
    baskets(rec, n_users=2)
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        call(rec)


@pytest.mark.parametrize(
    "options, message",
    [({"dim": 0}, "dim must be"), ({"lr": -1}, "lr must be"), ({"colour": 3}, "unknown option"),
     ({"event_weights": {"like": 1}}, "unknown event type"), ({"window": "many"}, "window")],
)
def test_bad_options(options, message):
    with pytest.raises(ValueError, match=message):
        recofast.Recommender(**options)


def test_event_weights_change_what_is_learned():
    rec = small(event_weights={"view": 0.0})
    rec.learn_one("u", "a", event="view")
    assert not rec.has_seen("u", "a")
    rec.learn_one("u", "a", event="purchase")
    assert rec.has_seen("u", "a")
    assert rec.options()["weight_view"] == "0"


def test_snapshot_round_trip_gives_the_same_recommendations(tmp_path):
    rec = small()
    baskets(rec)
    path = tmp_path / "model.rcf"
    rec.save(path)
    back = recofast.Recommender.load(path)
    assert (back.n_users, back.n_items) == (rec.n_users, rec.n_items)
    rec.refresh()
    for user in ["u1", "u7", "p3", "never-seen"]:
        assert back.recommend(user, k=5) == rec.recommend(user, k=5)
    np.testing.assert_array_equal(back.item_factors()[1], rec.item_factors()[1])
    # Learning goes on after loading.
    back.learn_one("u1", "d")
    assert back.has_seen("u1", "d")
    assert not list(tmp_path.glob(".*tmp*")), "the temporary file was left behind"


def test_pickle_round_trip():
    rec = small()
    baskets(rec, n_users=5)
    back = pickle.loads(pickle.dumps(rec))
    rec.refresh()
    assert back.recommend("u2", k=4) == rec.recommend("u2", k=4)


def test_corrupt_and_truncated_snapshots_raise_snapshot_error(tmp_path):
    rec = small()
    baskets(rec, n_users=5)
    path = tmp_path / "m.rcf"
    rec.save(path)
    data = path.read_bytes()
    (tmp_path / "truncated").write_bytes(data[: len(data) // 2])
    corrupt = bytearray(data)
    corrupt[len(data) // 2] ^= 0xFF
    (tmp_path / "corrupt").write_bytes(bytes(corrupt))
    (tmp_path / "empty").write_bytes(b"")
    (tmp_path / "other").write_bytes(b"PK\x03\x04 not a snapshot at all" * 4)
    for name in ["truncated", "corrupt", "empty", "other"]:
        with pytest.raises(SnapshotError):
            recofast.Recommender.load(tmp_path / name)
    with pytest.raises(FileNotFoundError):
        recofast.Recommender.load(tmp_path / "missing")
    assert issubclass(SnapshotError, recofast.errors.RecofastError)


def test_one_thread_learns_while_another_recommends_and_both_progress():
    rec = recofast.Recommender(dim=16, seed=1, snapshot_ms=1)
    rng = np.random.default_rng(0)
    users = rng.integers(0, 2_000, 400_000)
    items = rng.integers(0, 5_000, 400_000)
    learned = []
    served = []
    stop = threading.Event()

    def learner():
        for s in range(0, len(users), 10_000):
            rec.learn_many(users[s : s + 10_000], items[s : s + 10_000])
            learned.append(s)
            time.sleep(0.001)  # let the reader be scheduled even on a loaded machine
        stop.set()

    def reader():
        while not stop.is_set():
            after_first_batch = bool(learned)
            served.append((after_first_batch, len(rec.recommend(int(rng.integers(0, 2_000)), k=10))))

    threads = [threading.Thread(target=learner), threading.Thread(target=reader)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not any(t.is_alive() for t in threads), "a thread is stuck"
    assert rec.events_learned == len(users)
    assert len(learned) == 40
    # The reader made progress *while* the learner ran (the GIL is released during learning).
    assert len(served) >= 3, len(served)
    # Once items exist, every list is full (an empty model has nothing to recommend yet).
    assert all(n == 10 for ready, n in served if ready), sorted(set(served))


def test_item_text_lets_a_new_item_be_recommended_and_survives_a_snapshot(tmp_path):
    rec = small()
    baskets(rec)
    rec.set_item_text(["a", "fresh-red-mug", "sofa"], ["red mug classic", "red mug new edition", "corner sofa"])
    assert rec.n_items == 8  # the new items exist before anyone took them
    rec.learn_one("t", "a")
    assert "fresh-red-mug" in [i for i, _ in rec.recommend("t", k=3)]
    path = tmp_path / "m.rcf"
    rec.save(path)
    back = recofast.Recommender.load(path)
    rec.refresh()
    assert back.recommend("t", k=5) == rec.recommend("t", k=5)
    with pytest.raises(ValueError, match="differ in length"):
        rec.set_item_text(["a", "b"], ["only one"])
    with pytest.raises(ValueError, match="sequence of strings"):
        rec.set_item_text(["a"], "text")


def test_old_co_occurrence_fades_with_its_half_life():
    def stream(rec):
        # Early on, "a" goes with "old"; later, exactly as often, with "new".
        for u in range(30):
            rec.learn_many([f"o{u}"] * 2, ["a", "old"])
        for k in range(3000):
            rec.learn_one(f"filler{k % 50}", f"f{k % 200}")
        for u in range(30):
            rec.learn_many([f"n{u}"] * 2, ["a", "new"])
        rec.learn_one("me", "a")
        return [i for i, _ in rec.recommend("me", k=2)]

    fading = stream(small(cooc_half_life=200, w_pop=0, w_mf=0, w_text=0))
    forever = stream(small(cooc_half_life=0, w_pop=0, w_mf=0, w_text=0))
    assert fading[0] == "new"
    # Without decay the two pairs weigh the same, and the tie goes to the older item.
    assert forever == ["old", "new"]
