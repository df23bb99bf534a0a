"""``recofast bench``: the report writer on a real (tiny) pytest-benchmark run of the drift
suite, and ``--compare`` on two runs' results.json."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from recofast.benchreport import Suite, compare, load, run_bench
from recofast.cli import main

pytestmark = pytest.mark.timeout(240)

# One detector, recofast only: a second or two.
TINY = Suite("drift", "drift", "bench/test_bench_drift.py", quick="PageHinkley and recofast")


def _run(out: Path) -> dict:
    lines: list[str] = []
    results = run_bench("quick", out, suites=[TINY], progress=lines.append, bandwidth=False)
    assert any("[1/1] drift" in s for s in lines), lines  # progress is shown
    return results


def test_report_from_a_real_run_and_compare(tmp_path, capsys):
    a = _run(tmp_path / "a")
    suite = a["suites"]["drift"]
    assert suite["returncode"] == 0, suite["log_tail"]
    names = [b["name"] for b in suite["data"]["benchmarks"]]
    assert sorted(names) == ["test_update_many[PageHinkley-recofast-ndarray]", "test_update_many[PageHinkley-recofast]"]
    # The figure: updates/s of both variants, with the command that reruns it.
    (fig,) = a["figures"]
    assert fig["id"] == "drift" and set(fig["series"]) == {"recofast", "recofast-ndarray"}
    assert all(y > 1000 for pts in fig["series"].values() for _, y in pts)
    assert "bench/test_bench_drift.py" in fig["command"] and "PageHinkley and recofast" in fig["command"]
    report = (tmp_path / "a" / "REPORT.md").read_text()
    assert "## Drift detectors" in report and "![" in report and "drift.png" in report
    assert a["machine"]["simd"] in report and "| cores |" in report
    assert (tmp_path / "a" / "drift.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    on_disk = load(tmp_path / "a" / "results.json")
    assert on_disk["figures"] == json.loads(json.dumps(a["figures"]))

    # A run against itself: every ratio is 1.
    text = compare(on_disk, on_disk)
    rows = [r for r in text.splitlines() if r.startswith("| recofast")]
    assert len(rows) == 2 and all("| 1.00 |" in r for r in rows)

    # Two real runs through the command line: a row per point, and COMPARE.md written.
    _run(tmp_path / "b")
    assert main(["bench", "--compare", str(tmp_path / "a" / "results.json"), str(tmp_path / "b"), "--out", str(tmp_path / "cmp")]) == 0
    printed = capsys.readouterr().out
    assert "B / A" in printed and printed.count("| PageHinkley |") == 2
    assert (tmp_path / "cmp" / "COMPARE.md").read_text().strip() in printed


def test_compare_rejects_a_file_that_is_not_a_bench_run(tmp_path, capsys):
    bad = tmp_path / "x.json"
    bad.write_text(json.dumps({"benchmarks": []}))
    assert main(["bench", "--compare", str(bad), str(bad)]) == 2
    assert "not a recofast bench results file" in capsys.readouterr().err
    assert main(["bench", "--compare", str(tmp_path / "missing.json"), str(bad)]) == 2


def test_unknown_section_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="unknown section"):
        run_bench("quick", tmp_path, sections=["nope"], progress=lambda s: None, bandwidth=False)
