"""Reports of the closed loop (``recofast metrics`` and the engine's ``/v1/loop``) over a real
loop database: rates per source and position, an experiment decided by the always-valid
test, and the off-policy estimate of another exploration rate."""

from __future__ import annotations

import json
import random
import subprocess
import sys
import time

import pytest
from recofast.engine import report
from recofast.engine.attribution import LoopStore, connect_readonly
from recofast_sidecar.protocol import events as ev
from recofast_sidecar.protocol.feedback import Impression, encode_batch

T = (int(time.time()) - 3600) * 1000


def _fill(path, n_users: int = 1500, ctr: dict[str, float] | None = None, seed: int = 3) -> None:  # noqa: ANN001
    """Users split over variants a and b; each sees 4 lists of 5 items; clicks with the
    variant's per-item probability, more on the top positions; one explored slot in 10 lists."""
    ctr = ctr or {"a": 0.05, "b": 0.08}
    rng = random.Random(seed)
    store = LoopStore(path)
    imps, evs, k = [], [], 0
    for u in range(n_users):
        var = "ab"[u % 2]
        for j in range(4):
            explored = rng.random() < 0.1
            items = [f"i{rng.randrange(300)}" for _ in range(5)]
            sources = ["personal"] * 5
            if explored:
                sources[rng.randrange(5)] = "explore"
            r = Impression(rec_id=f"r{k}", ts=T + k * 10, endpoint="recommendations", source="personal", items=items, sources=sources,
                           user=f"u{u}", experiment="exp", variant=var, explore=0.1, explored=explored)
            imps.append(r)
            for pos, it in enumerate(items):
                if rng.random() < ctr[var] * (1.6 - 0.3 * pos):
                    evs.append(ev.encode(ev.make_event(f"c{k}-{pos}", "click", r.user, it, ts_ms=r.ts + 1, rec_id=r.rec_id)))
            k += 1
    for n in range(0, len(imps), 100):
        store.apply_impressions([(n // 100 + 1, encode_batch(imps[n:n + 100]))])
    for n in range(0, len(evs), 200):
        store.apply_events([(n // 200 + 1, "recofast.events.p0", b"[" + b",".join(evs[n:n + 200]) + b"]")])
    store.close()


def test_rates_positions_and_a_decided_experiment(tmp_path):
    path = tmp_path / "loop.sqlite3"
    _fill(path)
    db = connect_readonly(path)
    rows = {(r["endpoint"], r["source"]): r for r in report.breakdown(db, ("endpoint", "source"))}
    assert set(rows) == {("recommendations", "personal"), ("recommendations", "explore")}
    total = report.breakdown(db, ())[0]
    assert total["lists"] == 6000 and total["shown"] == 30000
    assert total["ctr"] == pytest.approx(total["clicks"] / 30000)
    pos = report.by_position(db)
    assert [p["position"] for p in pos] == [0, 1, 2, 3, 4]
    assert pos[0]["ctr"] > pos[2]["ctr"] > pos[4]["ctr"]  # the position bias shows
    rep = report.experiment_report(db, "exp", control="a")
    va = {v["variant"]: v for v in rep["variants"]}
    assert va["a"]["users"] == va["b"]["users"] == 750
    assert va["a"]["lo"] < va["a"]["value"] < va["a"]["hi"] and va["b"]["value"] > va["a"]["value"]
    for m, (value, lo, hi) in va["b"]["intervals"].items():  # every rate with its interval over users
        assert value is not None and lo <= value <= hi, m
    assert va["b"]["intervals"]["ctr"] == [va["b"]["value"], va["b"]["lo"], va["b"]["hi"]]
    (cmp,) = rep["comparisons"]
    assert cmp["decided"] and cmp["winner"] == "b" and cmp["lift_lo"] > 0
    assert cmp["text"].startswith("b beats a by ") and cmp["text"].endswith("decided")
    text = report.format_report(report.loop_report(db, (), ("endpoint", "source")))
    assert "Experiment exp" in text and "b beats a by" in text and "explore" in text
    db.close()


def test_an_undecided_experiment_says_how_much_more_it_needs(tmp_path):
    path = tmp_path / "loop.sqlite3"
    _fill(path, n_users=200, ctr={"a": 0.05, "b": 0.055})
    db = connect_readonly(path)
    (cmp,) = report.experiment_report(db, "exp", control="a")["comparisons"]
    assert not cmp["decided"] and cmp["text"].startswith("not yet")
    db.close()


def test_the_ips_estimate_of_the_logged_rate_is_the_logged_ctr(tmp_path):
    path = tmp_path / "loop.sqlite3"
    _fill(path, n_users=400)
    db = connect_readonly(path)
    same = report.ips_report(db, 0.1)
    assert same["ips"] == pytest.approx(same["logged_ctr"]) and same["snips"] == pytest.approx(same["logged_ctr"])
    other = report.ips_report(db, 0.5)
    assert other["ips_lo"] < other["ips"] < other["ips_hi"] and other["n"] == 1600
    db.close()


def test_recofast_metrics_prints_the_tables_and_json(tmp_path):
    path = tmp_path / "loop.sqlite3"
    _fill(path, n_users=300)
    out = subprocess.run([sys.executable, "-m", "recofast.cli", "metrics", "--db", str(path), "--by", "source,variant",
                          "--ips", "explore=0.05"], capture_output=True, text=True, check=True).stdout
    assert "Served lists and what they earned" in out and "explore=0.05" in out and "SNIPS" in out
    js = json.loads(subprocess.run([sys.executable, "-m", "recofast.cli", "metrics", "--db", str(path), "--json"],
                                   capture_output=True, text=True, check=True).stdout)
    assert js["total"]["lists"] == 1200 and js["experiments"][0]["experiment"] == "exp"
    bad = subprocess.run([sys.executable, "-m", "recofast.cli", "metrics", "--db", str(tmp_path / "none.sqlite3")],
                         capture_output=True, text=True)
    assert bad.returncode == 2 and "no loop database here" in bad.stderr
    bad = subprocess.run([sys.executable, "-m", "recofast.cli", "metrics", "--db", str(path), "--ips", "explore=2"],
                         capture_output=True, text=True)
    assert bad.returncode == 2 and "between 0 and 1" in bad.stderr
