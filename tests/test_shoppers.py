"""Simulated shoppers acting on the lists they are shown: the shop model shared with the
event simulator, the click model, and lockstep runs against the real stack."""

import asyncio
import doctest
import hashlib
import io
import json
import time
from pathlib import Path

import numpy as np
import pytest
from recofast.cli import main
from recofast.evaluation import shoppers as shoppers_module
from recofast.evaluation.shoppers import ClickModel, Context, Session, Shoppers
from recofast.evaluation.simulate import Shop, simulate

EXPERIMENT = Path(__file__).resolve().parents[1] / "examples" / "demo-experiment.toml"


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
    buf = io.StringIO()
    simulate(buf, users=30, items=40, events=5_000, seed=5, new_user_share=0.0)
    shop = Shop.from_seed(5, users=30, items=40, events=5_000, new_user_share=0.0)
    searches = [json.loads(x) for x in buf.getvalue().splitlines() if '"search"' in x]
    hits = sum(shop.taste[int(e["user"][1:]), shop.categories.index(e["query"])] > 1 / len(shop.categories) for e in searches)
    assert hits > 0.7 * len(searches)


# -- the click model and the plan, no servers -------------------------------------------------


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


def test_interest_wears_off_with_each_look_and_after_a_purchase():
    shop = Shop.from_seed(2, users=50, items=300, events=1_000)
    model = ClickModel()
    ctx = Context("desktop", "GB", "cloud", 12)
    items = ["i1", "i2", "i3"]
    fresh = model.attraction(shop, 0, items, ctx)
    worn = model.attraction(shop, 0, items, ctx, {1: [1, 0], 2: [2, 1]})
    assert worn[0] == pytest.approx(fresh[0] * 0.5) and worn[1] == pytest.approx(fresh[1] * 0.25 * 0.2)
    assert worn[2] == fresh[2]
    # A shopper's history grows with what it clicks and browses in a session.
    sh = Shoppers(shop, "http://unused", seed=1)
    s = sh.next_round()[0]
    events = sh.act(s, sh.context(s), answer(items))
    touched = {int(e["item"][1:]) for e in events if e["type"] in ("click", "view", "purchase")}
    assert set(sh._history.get(s.shopper, {})) == touched
    with pytest.raises(ValueError, match="wear"):
        ClickModel(wear=1.5)


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


# -- the command line, and lockstep runs against the real stack -------------------------------


def test_cli_checks_its_arguments(tmp_path, capsys):
    assert main(["simulate", "--shoppers", "5", "--data-dir", str(tmp_path / "d")]) == 2
    assert "--sessions" in capsys.readouterr().err
    assert main(["simulate", "--shoppers", "5", "--sessions", "5", "--out", str(tmp_path / "x")]) == 2
    assert "--out FILE" in capsys.readouterr().err
    assert main(["simulate", "--out", str(tmp_path / "x"), "--sessions", "5"]) == 2
    assert "go with --shoppers" in capsys.readouterr().err
    full = tmp_path / "full"
    full.mkdir()
    (full / "something").write_text("x")
    assert main(["simulate", "--shoppers", "5", "--sessions", "5", "--data-dir", str(full)]) == 2
    assert "not empty" in capsys.readouterr().err
    bad = tmp_path / "bad.toml"
    bad.write_text("[[experiments]]\nname = 'x'\n")
    assert main(["simulate", "--shoppers", "5", "--sessions", "5", "--data-dir", str(tmp_path / "e"), "--experiment-file", str(bad)]) == 2
    assert "experiments" in capsys.readouterr().err
    assert main(["up", "--experiment-file", str(tmp_path / "missing.toml"), "--data-dir", str(tmp_path / "u")]) == 2
    assert "no such experiment file" in capsys.readouterr().err
    assert not (tmp_path / "e").exists() and not (tmp_path / "u" / "nats").exists()  # nothing was started


SMALL = dict(shoppers=30, sessions=150, items=80, history=900, seed=5, round_size=30, progress=False)


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    """The same seed twice, each in a stack of its own (NATS, engine, sidecar), with the demo experiment."""
    from recofast.engine.stack import run_simulation

    out = []
    for name in ("a", "b"):
        d = tmp_path_factory.mktemp(f"sim-{name}")
        t0 = time.time()
        tallies = run_simulation(data_dir=str(d / "stack"), experiment_file=str(EXPERIMENT), log=str(d / "sessions.jsonl"), **SMALL)
        log = [json.loads(x) for x in (d / "sessions.jsonl").read_text().splitlines()]
        out.append((tallies, log, t0, time.time()))
    return out


@pytest.mark.timeout(120)
def test_shoppers_click_only_what_they_were_shown_with_its_rec_id(two_runs):
    tallies, log, _, _ = two_runs[0]
    assert len(log) == SMALL["sessions"] == tallies["sessions"]
    assert tallies["failed_sessions"] == 0 and tallies["events_rejected"] == 0 and tallies["events_posted"] > 0
    for r in log:
        assert len(r["items"]) == 10 and r["rec_id"]
        for e in r["events"]:
            if e["type"] in ("click", "add_to_cart", "purchase") and "rec_id" in e:
                assert e["rec_id"] == r["rec_id"] and e["item"] in r["items"]
            if e["type"] == "click":
                assert "rec_id" in e
        assert [r["items"][p] for p in r["clicks"]] == [e["item"] for e in r["events"] if e["type"] == "click"]
    # Variants of the experiment, each served its way (the popular control from the segment lists).
    assert set(tallies["variants"]) == {"recofast", "no-context", "popular"}
    assert all(r["source"] != "personal" for r in log if r["variant"] == "popular")
    assert any(r["source"] == "personal" for r in log if r["variant"] == "recofast")
    # The system saw the same: every list shown and every click, credited by rec_id to the
    # variant that served it; carts and purchases add the organic ones its window rule credits
    # (exact unless an organic event overtook its list's impression on the way to the engine,
    # and was credited to an older list).
    system = tallies["system"]
    assert system is not None
    rows = {r["variant"]: r for r in system["rows"]}
    for v, t in tallies["variants"].items():
        assert rows[v]["lists"] == t["lists"] and rows[v]["shown"] == t["shown"] and rows[v]["clicks"] == t["clicks"]
        for kind in ("carts", "purchases"):
            assert t[kind] <= rows[v][kind] <= t[kind] + t["window_" + kind] + 2
    assert not [u for u in system["unattributed"] if u["type"] == "click"]


@pytest.mark.timeout(120)
def test_top_positions_are_clicked_more(two_runs):
    pos = two_runs[0][0]["positions"]
    clicks = [p["clicks"] for p in pos]
    assert all(p["shown"] == SMALL["sessions"] for p in pos)
    assert clicks[0] > clicks[4] and sum(clicks[:3]) > 2 * sum(clicks[-3:])


@pytest.mark.timeout(120)
def test_the_same_seed_gives_the_same_sessions_lists_and_tallies(two_runs):
    (a, log_a, a0, a1), (b, log_b, b0, b1) = two_runs
    assert a["digests"]["sessions"] == b["digests"]["sessions"]
    assert [r["context"] for r in log_a] == [r["context"] for r in log_b]
    # The engine learns the hour of day of each event from its wall-clock time: runs in
    # different hours learn different hour keys, and may then serve other lists.
    if time.gmtime(a0).tm_hour == time.gmtime(b1).tm_hour:
        assert a["digests"]["lists"] == b["digests"]["lists"]
        assert a["digests"]["actions"] == b["digests"]["actions"]
        assert a["variants"] == b["variants"] and a["positions"] == b["positions"] and a["organic"] == b["organic"]


@pytest.mark.timeout(120)
def test_continuous_shoppers_against_a_running_stack(tmp_path):
    """The demo's mode: no rounds, shoppers in flight at once, each posting its own events."""
    from recofast.engine.stack import Stack, _warm, free_port, write_demo_events

    events, catalog = tmp_path / "h.jsonl", tmp_path / "c.jsonl"
    n = write_demo_events(events, events=600, users=20, items=50, catalog=catalog)
    with Stack(tmp_path / "stack", port=free_port(), log_dir=tmp_path) as stack:
        asyncio.run(_warm(stack, events, catalog))
        people = Shoppers(Shop.from_seed(0, users=20, items=50, events=n), stack.sidecar_url, seed=1, concurrency=4,
                          hours="wall", keep_log=False)
        t = asyncio.run(people.run_continuous(sessions=60))
    assert t["sessions"] == 60 and t["failed_sessions"] == 0 and t["events_rejected"] == 0
    assert t["total"]["lists"] == 60 and t["total"]["clicks"] > 0 and t["events_posted"] > t["total"]["clicks"]
    assert "digests" not in t


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_in_the_demo_experiment_recofast_beats_the_popular_control_and_the_rule_says_decided(tmp_path):
    """The demo's three variants over 2,000 sessions of 200 shoppers: the engine's own report
    (per-user CTR with intervals, the always-valid comparison) decides for recofast."""
    from recofast.engine.stack import run_simulation

    got = run_simulation(shoppers=200, sessions=2000, items=600, seed=3, data_dir=str(tmp_path / "stack"),
                         experiment_file=str(EXPERIMENT), progress=False)
    (exp,) = got["system"]["experiments"]
    assert exp["control"] == "popular"
    var = {v["variant"]: v for v in exp["variants"]}
    assert var["recofast"]["lo"] > var["popular"]["hi"]  # the 95 % intervals apart
    cmp = {c["variant"]: c for c in exp["comparisons"]}
    assert cmp["recofast"]["decided"] and cmp["recofast"]["winner"] == "recofast" and cmp["recofast"]["lift_lo"] > 0
    assert cmp["recofast"]["text"].startswith("recofast beats popular by ")
    # The system's per-variant table is the shoppers' own ground truth.
    for v, t in got["variants"].items():
        assert (var[v]["lists"], var[v]["shown"], var[v]["clicks"]) == (t["lists"], t["shown"], t["clicks"])


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_the_ips_estimate_of_another_exploration_rate_holds_what_running_it_gives(tmp_path):
    """Shoppers served with exploration 0.3: from their logs, IPS and SNIPS estimate the CTR
    per list at exploration 0.05; the same shoppers (same seed) served at 0.05 measure a CTR
    inside both intervals."""
    from recofast.engine import report
    from recofast.engine.attribution import connect_readonly
    from recofast.engine.stack import run_simulation

    common = dict(shoppers=200, sessions=2000, items=600, seed=7, progress=False)
    run_simulation(data_dir=str(tmp_path / "logged"), explore=0.3, **common)
    run_simulation(data_dir=str(tmp_path / "target"), explore=0.05, **common)
    logged = connect_readonly(tmp_path / "logged" / "models" / "loop.sqlite3")
    target = connect_readonly(tmp_path / "target" / "models" / "loop.sqlite3")
    est = report.ips_report(logged, 0.05)
    ran = report.ips_report(target, 0.05)
    assert est["lists"] == ran["lists"] == 2000 and abs(est["logged_explore"] - 0.3) < 1e-9
    assert est["ips_lo"] <= ran["logged_ctr"] <= est["ips_hi"], (est, ran["logged_ctr"])
    assert est["snips_lo"] <= ran["logged_ctr"] <= est["snips_hi"], (est, ran["logged_ctr"])
    # The estimate moves where it should: the explored slot earns less than a personal item.
    assert est["ips"] > est["logged_ctr"]
