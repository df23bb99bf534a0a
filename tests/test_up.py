"""`recofast up`: NATS, the engine and the sidecar started together, fed demo traffic."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import pytest
from recofast.cli import main
from recofast.engine.stack import free_port


def get_json(url):
    with urllib.request.urlopen(url, timeout=2) as r:
        return json.loads(r.read())


@pytest.mark.timeout(240)
def test_up_serves_personal_lists_from_demo_traffic_and_stops_cleanly(tmp_path):
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "recofast.cli", "up", "--port", str(port), "--data-dir", str(tmp_path), "--demo", "--rate", "1000"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        deadline = time.monotonic() + 120
        body = None
        while time.monotonic() < deadline:
            assert proc.poll() is None, proc.stdout.read()
            try:
                body = get_json(f"http://127.0.0.1:{port}/v1/recommendations/shopper1?k=5")
                if body["source"] == "personal":
                    break
            except OSError:
                pass
            time.sleep(0.3)
        assert body is not None and body["source"] == "personal", body
        assert len(body["items"]) == 5 and body["model_version"] >= 0
        # The sidecar's root leads to the engine's dashboard, which is served.
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as r:
            assert r.status == 200 and "/dashboard?sidecar=" in r.url and b"<canvas" in r.read()
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, out
    assert "recofast is up" in out and f"http://127.0.0.1:{port}/v1/recommendations" in out
    assert f"/dashboard?sidecar=http://127.0.0.1:{port}" in out and "/shop?sidecar=" in out
    # The engine checkpointed on its way out, and nothing listens on the port any more.
    assert any(p.name.startswith("v") for p in (tmp_path / "models").iterdir())
    with socket.socket() as s:
        assert s.connect_ex(("127.0.0.1", port)) != 0


def test_up_rejects_bad_arguments(tmp_path, capsys):
    assert main(["up", "--rate", "0", "--data-dir", str(tmp_path)]) == 2
    assert "--rate must be positive" in capsys.readouterr().err
    assert main(["up", "--events", str(tmp_path / "missing.csv"), "--data-dir", str(tmp_path)]) == 2
    assert "no such event log" in capsys.readouterr().err
    assert not os.path.exists(tmp_path / "nats")  # nothing was started


@pytest.mark.timeout(240)
def test_up_with_two_engines_and_three_nats_nodes_shares_the_partitions_and_serves_the_edge(tmp_path):
    """`recofast up --engines 2 --nats-nodes 3 --demo`: a JetStream cluster, two engines that
    split the four partitions between them and exchange item deltas, and the sidecar as an
    edge on a leaf node serving lists mirrored from the KV bucket."""
    import re

    port = free_port()
    with open(tmp_path / "up.log", "w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "recofast.cli", "up", "--port", str(port), "--data-dir", str(tmp_path / "data"), "--demo",
             "--rate", "500", "--engines", "2", "--nats-nodes", "3"],
            stdout=out, stderr=subprocess.STDOUT, text=True,
        )
    try:
        deadline = time.monotonic() + 150
        engines: list[str] = []
        states: list[dict] = []
        while True:
            assert proc.poll() is None, (tmp_path / "up.log").read_text()[-3000:]
            engines = engines or re.findall(r"engine\d +(http://127\.0\.0\.1:\d+)/metrics", (tmp_path / "up.log").read_text())
            try:
                body = get_json(f"http://127.0.0.1:{port}/v1/recommendations/shopper1?k=5")
                states = [get_json(f"{u}/healthz") for u in engines]
                if (body["source"] == "personal" and len(states) == 2
                        and all(s["item_deltas_applied_total"] > 0 and s["events_applied_total"] > 0 for s in states)):
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, f"the stack did not serve: {states}"
            time.sleep(0.5)
        parts = [set(s["partitions"]) for s in states]
        assert parts[0] and parts[1] and not parts[0] & parts[1] and parts[0] | parts[1] == {0, 1, 2, 3}, parts
        assert all(s["status"] == "ok" for s in states), states
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=120)
    text = (tmp_path / "up.log").read_text()
    assert proc.returncode == 0, text[-3000:]
    assert "NATS cluster" in text and "replicated 3 ways" in text and "NATS leaf node" in text
    assert (tmp_path / "data" / "edge" / "lmdb").is_dir()  # the edge's own store, mirrored from the bucket
    for i in (0, 1):  # each engine checkpointed its own model on its way out
        assert any(p.name.startswith("v") for p in (tmp_path / "data" / f"engine{i}" / "models").iterdir())


def test_up_rejects_a_bad_layout(tmp_path, capsys):
    assert main(["up", "--engines", "0", "--data-dir", str(tmp_path)]) == 2
    assert "--engines must be between 1 and 64" in capsys.readouterr().err
    assert main(["up", "--engines", "3", "--partitions", "2", "--data-dir", str(tmp_path)]) == 2
    assert "--partitions (2) must be at least --engines (3)" in capsys.readouterr().err
    assert not os.path.exists(tmp_path / "nats")  # nothing was started


@pytest.mark.timeout(240)
def test_schemathesis_finds_no_server_error_and_no_schema_violation(tmp_path):
    """schemathesis against the sidecar's /openapi.json, with the whole stack up (NATS, the
    engine writing lists, the sidecar). Every check but `positive_data_acceptance`, which
    flags requests the server rightly refuses for constraints OpenAPI cannot state (for
    example min_price > max_price)."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "recofast.cli", "up", "--port", str(port), "--data-dir", str(tmp_path), "--demo", "--rate", "300"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline, "the stack did not come up"
            time.sleep(0.3)
        st = os.path.join(os.path.dirname(sys.executable), "schemathesis")
        run = subprocess.run(
            [st, "run", f"http://127.0.0.1:{port}/openapi.json", "-c", "all", "--exclude-checks", "positive_data_acceptance",
             "-n", "40", "--generation-deterministic"],
            capture_output=True, text=True, timeout=180, env={**os.environ, "NO_COLOR": "1"},
        )
        assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
        assert "passed" in run.stdout and "Tested: 9" in run.stdout, run.stdout[-2000:]
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=120)
