"""The stronger peers of `recofast eval`: EASE and session-kNN (V-SKNN), on small exact cases."""

import json
import math

import numpy as np
import pytest
from recofast.cli import main
from recofast.evaluation.baselines import EASE, ItemIndex, SessionKNN
from test_cli import write_log

DAY = 86400.0


def ease_reference(x: np.ndarray, lam: float) -> np.ndarray:
    """Steck 2019, eq. (8): B = I − P · diagMat(1 ⊘ diag(P)), P = (XᵀX + λI)⁻¹."""
    p = np.linalg.inv(x.T @ x + lam * np.eye(x.shape[1]))
    return np.eye(x.shape[1]) - p / np.diag(p)


def baskets(seed=0, users=30, items=8, per_user=4):
    rng = np.random.default_rng(seed)
    return [(f"u{u}", f"i{int(i)}") for u in range(users) for i in rng.choice(items, per_user, replace=False)]


def fitted_ease(log, **kw):
    m = EASE(ItemIndex(), **kw)
    for u, i in log:
        m.learn(u, i, "purchase", 0.0)
    m.learn("late", log[0][1], "purchase", DAY)  # the first event of day 2 fits on day 1
    return m


def binary_matrix(log, cols):
    users = sorted({u for u, _ in log})
    x = np.zeros((len(users), len(cols)))
    for u, i in log:
        if i in cols:
            x[users.index(u), cols.index(i)] = 1.0
    return x


def test_ease_equals_the_closed_form_of_the_paper():
    log = baskets() + baskets(seed=1)  # repeats are binary: taken or not
    m = fitted_ease(log, lam=3.0)
    assert m.fits == 1
    cols = [m.items.ids[c] for c in m.cols]
    assert sorted(cols) == sorted({i for _, i in log})
    ref = ease_reference(binary_matrix(log, cols), 3.0)
    np.testing.assert_allclose(m.b, ref, atol=1e-12)
    assert np.all(np.diag(m.b) == 0.0)


def test_ease_fits_the_most_popular_items_only():
    log = baskets(users=40, items=10, per_user=3)
    m = fitted_ease(log, max_items=4, lam=2.0)
    users_of = {i: len({u for u, j in log if j == i}) for _, i in log}
    order = sorted(users_of, key=lambda i: (-users_of[i], m.items.index[i]))
    cols = [m.items.ids[c] for c in m.cols]
    assert cols == order[:4]
    np.testing.assert_allclose(m.b, ease_reference(binary_matrix(log, cols), 2.0), atol=1e-12)


def test_ease_scores_the_latest_history_of_any_user_by_the_last_fit():
    log = baskets(seed=3)
    m = fitted_ease(log, lam=1.0)
    cols = [m.items.ids[c] for c in m.cols]
    ref = ease_reference(binary_matrix(log, cols), 1.0)
    # A user first seen after the fit is scored by B too (EASE is user-free), on their history now.
    m.learn("new", "i1", "view", DAY + 1)
    m.learn("new", "i5", "view", DAY + 2)
    s = ref[cols.index("i1")] + ref[cols.index("i5")]
    want = [cols[c] for c in np.lexsort((np.arange(len(s)), -s)) if cols[c] not in ("i1", "i5")][:3]
    assert list(m.recommend("new", 3, {"i1", "i5"})) == want
    # history=1: only the latest distinct item counts.
    h1 = EASE(m.items, lam=1.0, history=1)
    h1.hist, h1.b, h1.col, h1.cols = m.hist, m.b, m.col, m.cols
    s1 = ref[cols.index("i5")]
    want1 = [cols[c] for c in np.lexsort((np.arange(len(s1)), -s1)) if cols[c] not in ("i1", "i5")][:3]
    assert list(h1.recommend("new", 3, {"i1", "i5"})) == want1


def test_ease_refits_once_a_day_of_event_time_and_falls_back_to_popularity():
    m = EASE(ItemIndex(), lam=1.0)
    m.learn("a", "x", "purchase", 0.0)
    m.learn("a", "y", "purchase", 10.0)
    assert m.fits == 0 and list(m.recommend("a", 2, set())) == list(m.pop.recommend("a", 2, set()))
    m.learn("b", "x", "purchase", DAY + 5)
    m.learn("b", "z", "purchase", DAY + 6)
    m.learn("c", "z", "impression", 2 * DAY + 1)  # not learned, but a new day: fit
    m.learn("c", "y", "purchase", 2 * DAY + 2)
    assert m.fits == 2
    assert "c" in m.hist and list(m.hist["c"]) == [m.items.index["y"]]
    # A user with none of the fitted items gets the popularity list.
    m.learn("d", "w", "purchase", 2 * DAY + 3)
    assert list(m.recommend("d", 2, {"w"})) == list(m.pop.recommend("d", 2, {"w"}))


def sknn_hand_example():
    m = SessionKNN(ItemIndex(), gap=100, k=2, sample=10)
    events = [
        ("a", "x", 0), ("a", "y", 1), ("a", "w", 2),  # session A: x y w
        ("b", "y", 3), ("b", "z", 4),                 # session B: y z
        ("c", "x", 5), ("c", "y", 6), ("c", "v", 7), ("c", "u", 8),  # session C: x y v u
        ("d", "q", 9),                                # session D: q (shares nothing)
        ("e", "x", 10), ("e", "y", 11),               # the current session: x (w 1/2), y (w 1)
    ]
    for u, i, t in events:
        m.learn(u, i, "view", float(t))
    return m


def test_sknn_neighbours_and_scores_by_hand():
    m = sknn_hand_example()
    sids, sims = m.neighbours("e")
    # sim = Σ w_i / sqrt(L·|s|), L = 2: A = 1.5/sqrt(6), B = 1/sqrt(4), C = 1.5/sqrt(8)
    want = {0: 1.5 / math.sqrt(6), 1: 1.0 / 2.0, 2: 1.5 / math.sqrt(8)}
    top = sorted(want, key=lambda s: -want[s])[:2]
    assert list(sids) == top == [0, 2]
    np.testing.assert_allclose(sims, [want[s] for s in top])
    # Votes of A and C (k = 2): w from A; v and u from C; x and y are seen.
    recs = list(m.recommend("e", 5, {"x", "y"}))
    assert recs == ["w", "v", "u"]
    m.k = 3  # now B votes too, for z: 1/2 < 1.5/sqrt(8), so z comes last
    assert list(m.recommend("e", 5, {"x", "y"})) == ["w", "v", "u", "z"]


def test_sknn_sessions_window_sample_and_bounds():
    m = SessionKNN(ItemIndex(), gap=100, k=10, sample=2, max_sessions=3)
    m.learn("a", "x", "view", 0.0)
    m.learn("a", "y", "view", 50.0)
    m.learn("a", "z", "view", 200.0)  # a gap of 150 > 100: a new session
    assert m.session("a") == [m.items.index["z"]]
    m.learn("a", "x", "add_to_cart", 210.0)
    m.learn("a", "z", "purchase", 220.0)  # a repeat moves z to the end
    assert [m.items.ids[i] for i in m.session("a")] == ["x", "z"]
    m.window = 1
    assert [m.items.ids[i] for i in m.session("a")] == ["z"]
    for u in "bcde":  # four more sessions holding x: each item indexes at most `sample`
        m.learn(u, "x", "view", 300.0)
    assert len(m.by_item[m.items.index["x"]]) <= 2
    live = [s for s in range(m.next_id) if m.slot_sid[s % 3] == s]
    assert len(live) == 3 and live == list(range(m.next_id - 3, m.next_id))  # the oldest were dropped
    for d in m.by_item.values():
        assert all(m.slot_sid[s % 3] == s for s in d)  # no index entry points at a dropped session
    assert list(m.recommend("nobody", 5, set())) == []


def test_eval_runs_the_peers_and_rejects_bad_options(tmp_path, capsys):
    log = tmp_path / "events.csv"
    write_log(log, n_baskets=400)
    out = tmp_path / "eval.json"
    assert main(["eval", "--events", str(log), "--model", "ease,sknn,pop", "--ease-lambda", "20", "--sknn-k", "50",
                 "--json", str(out), "--no-progress"]) == 0
    res = json.loads(out.read_text())
    scores = {s["model"]: s for s in res["scores"]}
    assert res["peers"]["ease"]["lam"] == 20.0 and res["peers"]["sknn"]["k"] == 50
    # Themed baskets: both must beat popularity by far.
    assert scores["ease"]["recall"] > 1.5 * scores["pop"]["recall"]
    assert scores["sknn"]["recall"] > 1.5 * scores["pop"]["recall"]
    capsys.readouterr()
    for bad in (["--sknn-k", "0"], ["--ease-lambda", "0"], ["--ease-items", "-3"], ["--session-gap", "-1"],
                ["--knn-window", "0"]):
        assert main(["eval", "--events", str(log), "--model", "ease", "--no-progress", *bad]) == 2
        assert "must be" in capsys.readouterr().err


@pytest.mark.parametrize("cls", [EASE, SessionKNN])
def test_peers_reject_impossible_settings(cls):
    with pytest.raises(ValueError):
        cls(ItemIndex(), **({"lam": 0.0} if cls is EASE else {"k": 0}))


@pytest.mark.parametrize("history", [0, 2])
def test_ease_cached_scores_follow_the_history(history):
    log = baskets(seed=5, items=10)
    m = fitted_ease(log, lam=2.0, history=history, cache_users=2)
    cols = [m.items.ids[c] for c in m.cols]
    ref = ease_reference(binary_matrix(log, cols), 2.0)
    mine: list[str] = []
    for t, item in enumerate(["i1", "i4", "i1", "i7", "i2", "i9", "i4"]):
        m.learn("w", item, "purchase", DAY + t)
        m.learn("other", "i3", "view", DAY + t)  # another user in between
        m.scores("other")
        if item in mine:
            mine.remove(item)
        mine.append(item)
        used = mine[-history:] if history else mine
        np.testing.assert_allclose(m.scores("w"), sum(ref[cols.index(i)] for i in used), atol=1e-12)
        np.testing.assert_allclose(m.scores("w"), sum(ref[cols.index(i)] for i in used), atol=1e-12)  # cached
