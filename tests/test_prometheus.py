"""deploy/: the Prometheus configuration, its recording rules and the Grafana dashboard.

A real Prometheus (Debian's ``prometheus`` package) scrapes a small real stack, engine and
sidecar, while simulated shoppers shop, and its HTTP API answers the CTR and freshness series;
every expression of the dashboard names metrics the engine and the sidecar export or rules
the rules file records."""

from __future__ import annotations

import asyncio
import json
import math
import re
import shutil
import subprocess
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"
CONFIG, RULES, DASHBOARD = DEPLOY / "prometheus.yml", DEPLOY / "recofast-rules.yml", DEPLOY / "grafana-dashboard.json"

# PromQL words that are not metric names.
_PROMQL = {
    "sum", "rate", "irate", "increase", "histogram_quantile", "changes", "avg", "max", "min", "count", "by", "without",
    "and", "or", "unless", "on", "ignoring", "group_left", "group_right", "delta", "deriv", "abs", "clamp_min", "offset",
}


def _rules() -> dict[str, str]:
    """The recording rules: name -> expression (read from the file's ``record:``/``expr:`` pairs)."""
    text = RULES.read_text()
    names = re.findall(r"^\s*- record:\s*(\S+)\s*$", text, re.M)
    exprs = re.findall(r"^\s*expr:\s*(.+?)\s*$", text, re.M)
    assert len(names) == len(exprs) > 0
    return dict(zip(names, exprs))


def _names(expr: str) -> set[str]:
    """The metric names an expression reads."""
    e = re.sub(r'"[^"]*"', "", expr)  # label values
    e = re.sub(r"\{[^}]*\}", "", e)  # label matchers
    e = re.sub(r"\b(by|without|on|ignoring)\s*\([^)]*\)", "", e)  # grouping labels
    e = re.sub(r"\[[^\]]*\]", "", e)  # ranges
    return {t for t in re.findall(r"[A-Za-z_:][A-Za-z0-9_:]*", e) if t not in _PROMQL}


def _exported() -> set[str]:
    """Every sample name the engine (its metrics and the loop's) and the sidecar export."""
    from recofast.engine.loop import LoopCollector
    from recofast.engine.metrics import EngineMetrics
    from recofast_sidecar.metrics import Metrics

    engine = EngineMetrics(lambda: {})
    engine.registry.register(LoopCollector())
    text = engine.render().decode() + Metrics().render().decode()
    out = set()
    for name, kind in re.findall(r"^# TYPE (\S+) (\S+)$", text, re.M):
        out.add(name)
        if kind == "histogram":
            out.update(f"{name}_{s}" for s in ("bucket", "sum", "count"))
    return out


def test_rules_and_dashboard_name_only_metrics_that_exist():
    rules, exported = _rules(), _exported()
    for name, expr in rules.items():
        assert name.startswith("recofast:")
        missing = _names(expr) - exported
        assert not missing, f"rule {name} reads {missing}, which nothing exports"
    dash = json.loads(DASHBOARD.read_text())
    titles = [p["title"] for p in dash["panels"]]
    for want in ("Events per second", "Dead-letter rate", "Freshness", "Sidecar latency", "Lists served by source", "CTR by source",
                 "Conversion by source", "Revenue", "CTR by experiment variant", "Live hit rate", "Model version"):
        assert any(t.startswith(want) for t in titles), f"no panel {want!r}"
    assert len({p["id"] for p in dash["panels"]}) == len(dash["panels"])
    exprs = [t["expr"] for p in dash["panels"] for t in p["targets"]] + [a["expr"] for a in dash["annotations"]["list"]]
    for expr in exprs:
        names = _names(expr)
        assert names, expr
        missing = names - exported - set(rules)
        assert not missing, f"the dashboard's {expr!r} reads {missing}: neither exported nor recorded"


def test_the_expression_parser_finds_names_and_only_names():
    assert _names('sum by (source) (rate(recofast_loop_clicks_total{source="x"}[5m])) / recofast:a:b') == {
        "recofast_loop_clicks_total", "recofast:a:b"}


def _get(url: str, timeout: float = 5.0) -> dict:
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return json.loads(r.read())


@pytest.mark.timeout(150)
def test_a_real_prometheus_scrapes_the_stack_and_records_ctr_and_freshness(tmp_path):
    prometheus, promtool = shutil.which("prometheus"), shutil.which("promtool")
    if prometheus is None:
        print("no prometheus binary (apt-get install prometheus, or `make setup` as root)")
        pytest.skip("no prometheus binary (apt-get install prometheus, or `make setup` as root)")
    from recofast.engine.stack import Stack, _warm, free_port, write_demo_events
    from recofast.evaluation.shoppers import Shoppers
    from recofast.evaluation.simulate import Shop

    side_port, engine_port, prom_port = free_port(), free_port(), free_port()
    # deploy/prometheus.yml with this test's targets, a 1 s scrape and evaluation interval.
    text = CONFIG.read_text()
    for old, new in (("127.0.0.1:8081", f"127.0.0.1:{engine_port}"), ("127.0.0.1:8080", f"127.0.0.1:{side_port}"),
                     ("scrape_interval: 15s", "scrape_interval: 1s"), ("evaluation_interval: 15s", "evaluation_interval: 1s")):
        assert old in text, old
        text = text.replace(old, new)
    cfg = tmp_path / "prometheus.yml"
    cfg.write_text(text)
    shutil.copy(RULES, tmp_path / RULES.name)
    if promtool is not None:
        subprocess.run([promtool, "check", "config", str(cfg)], check=True, capture_output=True)
        subprocess.run([promtool, "check", "rules", str(tmp_path / RULES.name)], check=True, capture_output=True)
    api = f"http://127.0.0.1:{prom_port}"
    log = open(tmp_path / "prometheus.log", "wb")
    prom = subprocess.Popen([prometheus, f"--config.file={cfg}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                             f"--web.listen-address=127.0.0.1:{prom_port}"], stdout=log, stderr=subprocess.STDOUT)

    def query(q: str) -> list[dict]:
        got = _get(f"{api}/api/v1/query?" + urllib.parse.urlencode({"query": q}))
        assert got["status"] == "success", got
        return got["data"]["result"]

    try:
        events, catalog = tmp_path / "h.jsonl", tmp_path / "c.jsonl"
        n = write_demo_events(events, events=600, users=20, items=50, catalog=catalog)
        with Stack(tmp_path / "stack", port=side_port, engine_http_port=engine_port, log_dir=tmp_path) as stack:
            asyncio.run(_warm(stack, events, catalog))
            people = Shoppers(Shop.from_seed(0, users=20, items=50, events=n), stack.sidecar_url, seed=1, concurrency=2,
                              hours="wall", keep_log=False)
            stop = threading.Event()

            def shop() -> None:  # shoppers until the series are there (at most 60 s)
                deadline = time.monotonic() + 60
                while not stop.is_set() and time.monotonic() < deadline:
                    asyncio.run(people.run_continuous(sessions=40))

            shopper = threading.Thread(target=shop, daemon=True)
            shopper.start()
            wanted = ["recofast:loop_ctr:by_source", "recofast:loop_ctr:by_variant", "recofast:freshness_seconds:p50",
                      "recofast:freshness_seconds:p99", "recofast:sidecar_request_seconds:p99", "recofast:events_applied:rate5m"]
            got: dict[str, list[dict]] = {}
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                try:
                    got = {q: query(q) for q in wanted}
                except OSError:  # Prometheus not listening yet
                    got = {}
                if got and all(got.values()) and any(float(r["value"][1]) > 0 for r in got["recofast:loop_ctr:by_source"]):
                    break
                time.sleep(0.5)
            stop.set()
            shopper.join(60)
            up = {r["metric"]["job"]: r["value"][1] for r in query("up")}
    finally:
        prom.terminate()
        prom.wait(30)
        log.close()
    assert up == {"recofast-engine": "1", "recofast-sidecar": "1"}
    for q in wanted:
        assert got.get(q), f"{q}: no series (prometheus.log: {(tmp_path / 'prometheus.log').read_text()[-2000:]})"
        for r in got[q]:
            v = float(r["value"][1])
            assert math.isfinite(v) and v >= 0, (q, r)
    ctr = {r["metric"]["source"]: float(r["value"][1]) for r in got["recofast:loop_ctr:by_source"]}
    assert 0 < ctr["personal"] <= 1
    assert all(0 <= float(r["value"][1]) <= 1 for r in got["recofast:loop_ctr:by_variant"])
    p50, p99 = (float(got[f"recofast:freshness_seconds:{p}"][0]["value"][1]) for p in ("p50", "p99"))
    assert 0 < p50 <= p99 < 300
