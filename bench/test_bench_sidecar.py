"""Sidecar HTTP load with wrk: the sidecar's endpoints side by side with a bare aiohttp
handler that reads one list from the same LMDB store and returns it as JSON (the floor every
sidecar feature is paid from).

Run (about 50 seconds; needs ``wrk``, e.g. ``apt-get install -y wrk``)::

    .venv/bin/python -m pytest bench/test_bench_sidecar.py --benchmark-enable --benchmark-only -p no:randomly -s

Each server is one process on a free port; wrk runs 2 threads and 16 connections for
``RECOFAST_WRK_SECONDS`` (default 5) seconds against random users of a 100,000-user store.
The summary prints req/s and ratios to the bare handler measured in the same run; p50 and
p99 latencies go to ``extra_info``. The bare handler runs on asyncio's loop (the floor as
DESIGN.md states it) and, as a reference, on uvloop's, which the sidecar uses.

``RECOFAST_BENCH_SIDECAR_BASELINE=DIR`` (a folder holding another ``recofast_sidecar``
package, e.g. ``git worktree add /tmp/base main`` then ``/tmp/base/sidecar``) adds the same
sidecar cases served by that code, so a change is measured before and after in one run.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from recofast_sidecar.protocol import codec, liststore

pytestmark = pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk is not installed")

USERS = 100_000
ITEMS = 5_000
SECONDS = int(os.environ.get("RECOFAST_WRK_SECONDS", "5"))
BASELINE = os.environ.get("RECOFAST_BENCH_SIDECAR_BASELINE")

BARE = textwrap.dedent(
    """
    import sys
    from aiohttp import web
    from recofast_sidecar.protocol.liststore import ListReader
    reader = ListReader(sys.argv[1])
    async def handler(request):
        rec = reader.user_list(request.match_info["user"])
        items = [] if rec is None else [{"item": i, "score": s} for i, s in zip(rec.items[:10], rec.scores[:10])]
        return web.json_response({"user": request.match_info["user"], "items": items})
    app = web.Application()
    app.router.add_get("/v1/recommendations/{user}", handler)
    loop = None
    if sys.argv[3:] == ["uvloop"]:
        import uvloop
        loop = uvloop.new_event_loop()
    web.run_app(app, host="127.0.0.1", port=int(sys.argv[2]), print=None, access_log=None, loop=loop)
    """
)

LUA = """
math.randomseed(7)
request = function()
  return wrk.format("GET", string.format(wrk.path, math.random(0, %d)))
end
"""


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("sidecar") / "lmdb"
    rng = np.random.default_rng(1)
    cats = ["mugs", "tea", "pots", "cups", "plates"]
    items = {f"i{j}": codec.ItemRecord(category=cats[j % 5], price=float(1 + j % 50), in_stock=j % 17 != 0) for j in range(ITEMS)}
    with liststore.ListWriter(path, map_size=1 << 30, sync=False) as w:
        w.commit(codec.Commit(items=items, segments={"popular:all": codec.ListRecord([f"i{j}" for j in range(50)], [1.0] * 50, 1, 0.0)}))
        for start in range(0, USERS, 10_000):
            lists = {}
            for u in range(start, start + 10_000):
                ids = rng.choice(ITEMS, 50, replace=False)
                lists[f"u{u}"] = codec.ListRecord([f"i{j}" for j in ids], np.linspace(1, 0, 50).tolist(), 1, 0.0)
            w.commit(codec.Commit(user_lists=lists))
        # Context records as the engine's refresh exports them (context_top = 200): the keys of
        # the context cases and every key the server clock can give, and a fresh list.
        keys = ["device=mobile", "country=gb", *(f"hour={h}" for h in range(24)),
                *(f"hour={b}" for b in ("night", "morning", "afternoon", "evening")),
                *(f"weekday={d}" for d in ("mon", "tue", "wed", "thu", "fri", "sat", "sun"))]
        aff = {}
        for k in keys:
            ids = rng.choice(ITEMS, 200, replace=False)
            aff[k] = codec.ListRecord([f"i{j}" for j in ids], np.linspace(2, 0.01, 200).tolist(), 1, 0.0)
        fresh = codec.ListRecord([f"i{j}" for j in range(ITEMS - 100, ITEMS)], [0.0] * 100, 1, 0.0)
        w.commit(codec.Commit(affinities=aff, fresh=fresh, meta=codec.MetaRecord(model_version=1, last_seq=0, time=0.0)))
    return str(path)


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _serve(cmd: list[str], port: int, log: Path, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    with open(log, "wb") as err:
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err, env=env)
    deadline = time.monotonic() + 20
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/recommendations/u1", timeout=1) as r:
                r.read()
            return proc
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                proc.wait(10)
                raise RuntimeError(log.read_text()) from None
            time.sleep(0.1)


def _ms(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s)", text)
    assert m, text
    return float(m.group(1)) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[m.group(2)]


def _wrk(url_template: str, tmp: Path) -> dict[str, float]:
    script = tmp / "random_user.lua"
    script.write_text(LUA % (USERS - 1))
    out = subprocess.run(
        ["wrk", "-t2", "-c16", f"-d{SECONDS}s", "--latency", "-s", str(script), url_template],
        capture_output=True, text=True, timeout=SECONDS + 30, check=True,
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    assert "Non-2xx" not in out and "Socket errors" not in out, out
    p50 = _ms(re.search(r"^\s+50%\s+(\S+)", out, re.M).group(1))
    p99 = _ms(re.search(r"^\s+99%\s+(\S+)", out, re.M).group(1))
    return {"req_per_s": rps, "p50_ms": p50, "p99_ms": p99}


CASES = {
    "bare aiohttp + LMDB": ("bare", "/v1/recommendations/u%d"),
    "bare aiohttp + LMDB, uvloop": ("bare-uvloop", "/v1/recommendations/u%d"),
    "sidecar personal": ("sidecar", "/v1/recommendations/u%d?k=10"),
    "sidecar personal + context": ("sidecar", "/v1/recommendations/u%d?k=10&device=mobile&country=GB"),
    "sidecar filters+diversity": ("sidecar", "/v1/recommendations/u%d?k=10&max_price=30&diversity=0.5&explore=0.1&country=GB&device=mobile"),
    "sidecar unknown user": ("sidecar", "/v1/recommendations/x%d?k=10&country=GB"),
    "sidecar personal, 2 processes": ("sidecar2", "/v1/recommendations/u%d?k=10"),
}
if BASELINE:
    CASES.update({f"baseline {name[len('sidecar '):]}": (f"base-{kind}", path) for name, (kind, path) in list(CASES.items())
                  if kind.startswith("sidecar")})


@pytest.mark.parametrize("name", list(CASES))
def test_http_throughput(benchmark, record_rate, store, tmp_path, name):
    kind, path = CASES[name]
    port = _port()
    env = None
    if kind.startswith("bare"):
        cmd = [sys.executable, "-c", BARE, store, str(port), *(["uvloop"] if kind == "bare-uvloop" else [])]
    else:
        if kind.startswith("base-"):  # the same case served by the baseline's code
            kind = kind[len("base-"):]
            env = {**os.environ, "PYTHONPATH": BASELINE}
        cmd = [sys.executable, "-m", "recofast_sidecar.server", "--lmdb", store, "--port", str(port), "--log-level", "WARNING"]
        if kind == "sidecar2":
            cmd += ["--processes", "2"]
    proc = _serve(cmd, port, tmp_path / "server.log", env)
    try:
        # The answer is right before it is fast.
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path % 3}", timeout=5) as r:
            body = json.loads(r.read())
        assert len(body["items"]) == 10
        res = benchmark.pedantic(_wrk, args=(f"http://127.0.0.1:{port}{path}", tmp_path), rounds=1, iterations=1)
    finally:
        proc.terminate()
        proc.wait(10)
    benchmark.extra_info.update(res)
    record_rate("sidecar HTTP (wrk -t2 -c16)", name, res["req_per_s"], "req/s")
    print(f"\n{name}: {res['req_per_s']:,.0f} req/s, p50 {res['p50_ms']:.2f} ms, p99 {res['p99_ms']:.2f} ms")


PACED_LUA = """
math.randomseed(11)
request = function()
  return wrk.format("GET", string.format(wrk.path, math.random(0, %d)))
end
-- Each connection waits this many ms before its next request: 16 connections pace the
-- load near 2,000 requests a second (wrk has no open-loop rate of its own).
delay = function()
  return %d
end
"""


def test_latency_near_2000_rps_while_the_engine_writes(benchmark, record_rate, tmp_path):
    """`recofast up --demo --rate 2000`: the engine applies 2,000 events a second and writes
    lists to the LMDB the sidecar reads; wrk paces ~2,000 requests a second against it."""
    port = _port()
    up = subprocess.Popen(
        [sys.executable, "-m", "recofast.cli", "up", "--port", str(port), "--data-dir", str(tmp_path / "data"),
         "--demo", "--rate", "2000"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 120
        while True:
            assert up.poll() is None, "recofast up exited"
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/recommendations/shopper1?k=10", timeout=2) as r:
                    if json.loads(r.read())["source"] == "personal":
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline, "no personal list was served"
            time.sleep(0.3)
        script = tmp_path / "paced.lua"
        script.write_text(PACED_LUA % (499, 7))

        def run() -> dict[str, float]:
            out = subprocess.run(
                ["wrk", "-t2", "-c16", f"-d{SECONDS}s", "--latency", "-s", str(script),
                 f"http://127.0.0.1:{port}/v1/recommendations/shopper%d?k=10"],
                capture_output=True, text=True, timeout=SECONDS + 30, check=True,
            ).stdout
            assert "Non-2xx" not in out and "Socket errors" not in out, out
            return {
                "req_per_s": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
                "p50_ms": _ms(re.search(r"^\s+50%\s+(\S+)", out, re.M).group(1)),
                "p99_ms": _ms(re.search(r"^\s+99%\s+(\S+)", out, re.M).group(1)),
            }

        res = benchmark.pedantic(run, rounds=1, iterations=1)
    finally:
        up.send_signal(signal.SIGTERM)
        up.wait(120)
    benchmark.extra_info.update(res)
    record_rate("sidecar HTTP, paced, engine writing", "sidecar personal", res["req_per_s"], "req/s")
    print(f"\npaced with the engine writing: {res['req_per_s']:,.0f} req/s, p50 {res['p50_ms']:.2f} ms, p99 {res['p99_ms']:.2f} ms")


def test_throughput_with_attribution_and_an_experiment(benchmark, record_rate, store, tmp_path):
    """The cost of the closed loop at the edge: the same requests against a sidecar that logs
    nothing and serves no experiment, and against one that publishes every impression to the
    JetStream stream of a real nats-server and serves a three-variant experiment (recofast,
    no context re-rank, the popular control), alternated over four rounds."""
    import asyncio

    import nats
    from recofast.engine.natsserver import NatsServer
    from recofast.engine.streams import ensure_streams
    from recofast_sidecar.protocol.experiments import Experiment, Serving, Variant
    from recofast_sidecar.protocol.names import IMPRESSIONS_STREAM
    from recofast_sidecar.protocol.settings import SharedSettings

    with_exp = tmp_path / "lmdb-exp"
    shutil.copytree(store, with_exp)
    exp = Experiment(name="bench", variants=(
        Variant(name="recofast", share=0.45),
        Variant(name="no-context", share=0.45, serving=Serving(context_weight=0.0), scoring={"w_ctx": 0.0}),
        Variant(name="popular", share=0.1, popular=True),
    ))
    with liststore.ListWriter(with_exp, map_size=1 << 30, sync=False) as w:
        w.commit(codec.Commit(meta=codec.MetaRecord(model_version=1, last_seq=0, time=0.0, shared=SharedSettings(experiments=(exp,)))))
    server = NatsServer(tmp_path / "nats", port=-1)
    url = server.start()

    async def streams() -> int:
        async with await nats.connect(url) as nc:
            js = nc.jetstream()
            await ensure_streams(js)
            return (await js.stream_info(IMPRESSIONS_STREAM)).state.messages

    asyncio.run(streams())
    path = "/v1/recommendations/u%d?k=10"
    cmds = {
        "sidecar personal, no loop": [sys.executable, "-m", "recofast_sidecar.server", "--lmdb", store, "--no-impressions"],
        "sidecar personal, attribution + experiment": [sys.executable, "-m", "recofast_sidecar.server", "--lmdb", str(with_exp),
                                                       "--nats", url],
    }
    got: dict[str, list[float]] = {k: [] for k in cmds}

    def run() -> None:
        for _ in range(2):
            for name, cmd in cmds.items():
                port = _port()
                proc = _serve([*cmd, "--port", str(port), "--log-level", "WARNING"], port, tmp_path / "server.log")
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path % 3}", timeout=5) as r:
                        body = json.loads(r.read())
                    assert len(body["items"]) == 10 and ("variant" in body) == ("experiment" in name)
                    got[name].append(_wrk(f"http://127.0.0.1:{port}{path}", tmp_path)["req_per_s"])
                    if "experiment" in name:
                        time.sleep(1.0)  # the queue drains
                        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
                            m = r.read().decode()
                        dropped = re.search(r"^recofast_sidecar_impressions_dropped_total ([\d.e+]+)", m, re.M)
                        assert dropped is None or float(dropped.group(1)) == 0.0, "impressions were dropped"
                finally:
                    proc.terminate()
                    proc.wait(10)

    try:
        benchmark.pedantic(run, rounds=1, iterations=1)
        stored = asyncio.run(streams())
    finally:
        server.stop()
    assert stored > 0
    means = {k: float(np.mean(v)) for k, v in got.items()}
    ratio = means["sidecar personal, attribution + experiment"] / means["sidecar personal, no loop"]
    benchmark.extra_info.update({**{f"{k} req/s": v for k, v in means.items()}, "ratio": ratio, "impression messages": stored})
    for k, v in means.items():
        record_rate("sidecar HTTP, closed loop (wrk -t2 -c16)", k, v, "req/s")
    print(f"\nattribution + experiment / none: {ratio:.3f} ({means}); {stored} impression messages stored")
