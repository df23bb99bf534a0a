"""Scale-out on one machine: two partitioned engines pinned to one core each against one
engine on one core, draining the same backlog, side by side in one run.

Run (about 2 minutes on 2 cores in quick mode)::

    .venv/bin/python -m pytest bench/test_bench_cluster.py --benchmark-enable --benchmark-only -p no:randomly -s

Setup of each case, fresh each time: one nats-server (JetStream, file storage; **not
pinned**, it shares the two cores with the engines), then a backlog of N events of the shop
log (``shared/data/online_retail/interactions.csv.gz``) published before any engine starts,
so no publisher competes for the cores while the engines run. The events are spread over 4
partitions by user (``crc32(user) % 4``, subjects ``recofast.events.p<N>``) and packed 100 to
a message per partition, as the sidecar's collector packs them.

* ``one``: one ``recofast serve --partitions 0-3`` process under ``taskset -c 0``;
* ``two``: ``recofast serve --partitions 0-1`` under ``taskset -c 0`` and ``--partitions 2-3``
  under ``taskset -c 1``, each with its own data dir (LMDB, checkpoints).

The clock runs from the moment every engine answers ``/healthz`` (its HTTP server starts
just before it starts consuming) to the moment the sum of the engines' ``events_applied_total``
(from ``/healthz``) reaches N; it is then checked again half a second later (nothing
applied twice) and the duplicates counter must be 0. The cases alternate over ``ROUNDS``
rounds; the ratio two/one is taken per round and its spread printed.

``RECOFAST_BENCH_EVENTS`` changes N (default 200,000), ``RECOFAST_BENCH_ROUNDS`` the rounds
(default 3). Figures: docs/CAPACITY.md.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
import zlib
from pathlib import Path

import pytest
from conftest import require_shop_log
from recofast.engine.natsserver import NatsServer, free_ports
from recofast.engine.publish import messages, publish, read_events, subject_for

N_EVENTS = int(os.environ.get("RECOFAST_BENCH_EVENTS", "200000"))
ROUNDS = int(os.environ.get("RECOFAST_BENCH_ROUNDS", "3"))
PARTS = 4
PACK = 100
CASES = {"one": [("0-3", "0")], "two": [("0-1", "0"), ("2-3", "1")]}

pytestmark = [pytest.mark.timeout(1800)]


def _backlog_messages(path: Path, n: int) -> list[tuple[str, bytes, int, str]]:
    """The first ``n`` events, grouped by partition of their user, packed ``PACK`` to a message."""
    by_part: list[list] = [[] for _ in range(PARTS)]
    for i, e in enumerate(read_events(path)):
        if i >= n:
            break
        by_part[zlib.crc32(e.user.encode()) % PARTS].append(e)
    out = []
    for p, evs in enumerate(by_part):
        out += [
            (mid, body, count, subject_for(p))
            for mid, body, count in messages(evs, PACK)
        ]
    return out


def _healthz(port: int) -> dict | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as r:
            return json.loads(r.read())
    except urllib.error.HTTPError as err:  # 503 while starting: still a JSON body
        return json.loads(err.read())
    except OSError:
        return None


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process so far (/proc/<pid>/stat)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _serve(
    tmp: Path, url: str, parts: str, cpu: str, port: int, log
) -> subprocess.Popen[bytes]:
    conf = tmp / "engine.toml"
    conf.write_text(
        "[engine]\nrefresh_seconds = 3600.0\nbatch_size = 500\ntop_n = 20\n"
        f"lmdb_map_size = {1 << 31}\nmodel = {{ dim = 64, seed = 1 }}\n"
    )
    cmd = ["taskset", "-c", cpu, sys.executable, "-m", "recofast.cli", "serve", "--config", str(conf), "--nats", url,
           "--lmdb", str(tmp / "lmdb"), "--model-dir", str(tmp / "models"), "--partitions", parts,
           "--engine-id", f"e{parts}", "--http-port", str(port), "--log-level", "warning"]  # fmt: skip
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=log)


def _run_case(root: Path, case: str, msgs: list, n: int) -> dict:
    """A fresh nats-server and backlog, the case's engines, the time until all N are applied."""
    shutil.rmtree(root, ignore_errors=True)
    server = NatsServer(root / "nats", port=-1)
    server.start()
    procs: list[subprocess.Popen[bytes]] = []
    logs: list = []
    try:
        _, published = asyncio.run(publish(server.url, msgs))
        assert published == n
        ports = free_ports(len(CASES[case]))
        for (parts, cpu), port in zip(CASES[case], ports, strict=True):
            d = root / f"engine-{parts}"
            d.mkdir(parents=True)
            logs.append(open(d / "stderr.log", "wb"))  # noqa: SIM115
            procs.append(_serve(d, server.url, parts, cpu, port, logs[-1]))
        deadline = time.monotonic() + 120
        while any(_healthz(p) is None for p in ports):
            assert time.monotonic() < deadline, "engines did not start"
            assert all(p.poll() is None for p in procs), "an engine exited"
            time.sleep(0.01)
        pids = [p.pid for p in procs] + [server.proc.pid]
        cpu0 = [_cpu_s(pid) for pid in pids]
        t0 = time.perf_counter()
        deadline = time.monotonic() + 900
        while True:
            states = [_healthz(p) or {} for p in ports]
            applied = sum(s.get("events_applied_total", 0) for s in states)
            if applied >= n:
                break
            assert time.monotonic() < deadline, f"applied {applied} of {n}"
            assert all(p.poll() is None for p in procs), "an engine exited"
            time.sleep(0.02)
        dt = time.perf_counter() - t0
        cpu = [_cpu_s(pid) - c for pid, c in zip(pids, cpu0, strict=True)]
        time.sleep(0.5)  # anything applied twice would show now
        states = [_healthz(p) or {} for p in ports]
        per_engine = [s.get("events_applied_total", 0) for s in states]
        dups = sum(s.get("events_duplicate_total", 0) for s in states)
        return {
            "seconds": dt,
            "events_per_s": n / dt,
            "per_engine": per_engine,
            "applied": sum(per_engine),
            "duplicates": dups,
            "engine_cpu_share": [round(c / dt, 2) for c in cpu[:-1]],
            "nats_cpu_share": round(cpu[-1] / dt, 2),
        }
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout=60)
            except subprocess.TimeoutExpired:
                p.kill()
        for f in logs:
            f.close()
        server.stop()


@pytest.mark.benchmark(group="cluster")
def test_two_engines_vs_one(benchmark, tmp_path, record_rate):
    if shutil.which("taskset") is None:
        print(
            "skip: taskset is missing (util-linux), the engines cannot be pinned to one core each"
        )
        pytest.skip("taskset is missing (util-linux)")
    if len(os.sched_getaffinity(0)) < 2:
        pytest.skip("fewer than 2 cores available")
    msgs = _backlog_messages(require_shop_log(), N_EVENTS)
    n = sum(m[2] for m in msgs)
    assert n == N_EVENTS, f"the shop log has only {n} events"
    results: dict[str, list[dict]] = {c: [] for c in CASES}

    def rounds() -> None:
        for r in range(ROUNDS):
            order = list(CASES) if r % 2 == 0 else list(reversed(CASES))
            for case in order:
                res = _run_case(tmp_path / f"r{r}-{case}", case, msgs, n)
                print(
                    f"\nround {r} {case}: {res['events_per_s']:,.0f} events/s in {res['seconds']:.2f} s, applied {res['per_engine']}, "
                    f"CPU share of the engines {res['engine_cpu_share']}, of nats-server {res['nats_cpu_share']}, load {os.getloadavg()[0]:.2f}"
                )
                assert res["applied"] == n, f"applied {res['applied']} of {n}"
                assert res["duplicates"] == 0
                results[case].append(res)

    benchmark.pedantic(rounds, rounds=1, iterations=1)
    ratios = [
        t["events_per_s"] / o["events_per_s"]
        for o, t in zip(results["one"], results["two"], strict=True)
    ]
    med = {
        c: sorted(r["events_per_s"] for r in results[c])[len(results[c]) // 2]
        for c in CASES
    }
    figures = {
        "events": n, "rounds": ROUNDS,
        "one_events_per_s": [round(r["events_per_s"]) for r in results["one"]],
        "two_events_per_s": [round(r["events_per_s"]) for r in results["two"]],
        "ratios": [round(x, 3) for x in ratios], "ratio_median": round(sorted(ratios)[len(ratios) // 2], 3),
        "events_per_s": med["two"],
        "one_engine_cpu_share": [r["engine_cpu_share"] for r in results["one"]],
        "two_engine_cpu_share": [r["engine_cpu_share"] for r in results["two"]],
        "nats_cpu_share": {c: [r["nats_cpu_share"] for r in results[c]] for c in CASES},
    }  # fmt: skip
    benchmark.extra_info.update(figures)
    print("\n" + "  ".join(f"{k}={v}" for k, v in figures.items()))
    record_rate("cluster throughput", "one engine, 1 core (0-3)", med["one"])
    record_rate("cluster throughput", "two engines, 1 core each", med["two"])
    assert figures["ratio_median"] >= 1.7, f"two engines / one: {ratios}"
