"""``recofast report``: a static HTML page of a real loop database and checkpoint folder, its
plots embedded as PNG images."""

from __future__ import annotations

import base64
import json
import re
import subprocess
import sys
import time

import pytest
from recofast.engine import htmlreport
from recofast.engine.attribution import connect_readonly

from test_loop_report import _fill


def _checkpoints(model_dir, versions=(1, 2, 3)):  # noqa: ANN001, ANN202
    """Checkpoint folders with their manifests only: what the listing reads."""
    for v in versions:
        d = model_dir / f"v{v:06d}"
        d.mkdir(parents=True)
        (d / "manifest.json").write_text(json.dumps({"format": 1, "version": v, "time": time.time() - 3000 + 600 * v, "stream_seq": 100 * v,
                                                     "events_applied_total": 1000 * v}))


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "recofast.cli", "report", *args], capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def loop_db(tmp_path_factory):  # noqa: ANN001, ANN201
    d = tmp_path_factory.mktemp("report")
    _fill(d / "loop.sqlite3", n_users=400, ctr={"a": 0.05, "b": 0.09})
    return d / "loop.sqlite3"


def test_the_report_holds_every_section_and_its_images(tmp_path, loop_db):
    models = tmp_path / "models"
    _checkpoints(models)
    cfg = tmp_path / "recofast.toml"
    cfg.write_text(f'[engine]\nmodel_dir = "{models}"\nloop_db = "{loop_db}"\n')
    out = tmp_path / "report.html"
    r = _run("--config", str(cfg), "--since", "2h", "--out", str(out))
    assert r.returncode == 0, r.stderr
    assert str(out) in r.stdout
    text = out.read_text()
    for h in ("Totals", "Over time by source", "Over time by experiment variant", "Lists served by source", "CTR by position",
              "Experiments (everything kept)", "Model versions"):
        assert f"<h2>{h}</h2>" in text, h
    assert "<h3>exp " in text and "b beats a by" in text
    images = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', text)
    # source and variant over time, lists by source, positions, the experiment, the versions
    assert len(images) == 6
    assert all(base64.b64decode(b).startswith(b"\x89PNG\r\n\x1a\n") for b in images)
    assert "http://" not in text and "https://" not in text  # stands alone
    assert "v000003" not in text and ">3<" in text  # the versions table


def test_a_window_with_nothing_in_it_says_so(loop_db):
    db = connect_readonly(loop_db)
    try:
        text = htmlreport.render(db, minutes=1.0, checkpoints=[])
    finally:
        db.close()
    assert text.count("Nothing in this window.") == 5 and "No checkpoints." in text
    assert len(re.findall(r"data:image/png", text)) == 1  # the experiment (its table is not windowed)


def test_timeline_buckets_long_windows(loop_db):
    db = connect_readonly(loop_db)
    try:
        bucket, groups = htmlreport.timeline(db, "variant", 2 * 1440)
        one, by_source = htmlreport.timeline(db, "source", 120)
    finally:
        db.close()
    assert bucket == 24 and one == 1
    assert set(groups) == {"exp/a", "exp/b"} and set(by_source) == {"personal", "explore"}
    assert sum(r["lists"] for rows in by_source.values() for r in rows) == 1600


@pytest.mark.parametrize("bad", ["1 week", "0h", "-1h", "h", "10"])
def test_bad_since_values_are_refused_with_exit_2(tmp_path, bad):
    r = _run("--db", str(tmp_path / "none.sqlite3"), f"--since={bad}", "--out", str(tmp_path / "r.html"))
    assert r.returncode == 2
    assert "--since" in r.stderr and "like 30m, 1h or 2d" in r.stderr
    assert not (tmp_path / "r.html").exists()
