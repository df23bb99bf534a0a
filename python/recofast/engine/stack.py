"""`recofast up`: the whole stack on one machine, in one command.

It starts an embedded nats-server with JetStream (``DATA/nats``), the engine
(``recofast serve``, lists in ``DATA/lmdb``, checkpoints in ``DATA/models``) and the edge
sidecar (``recofast-sidecar`` on ``--port``), waits until the sidecar answers, and prints
the URLs. ``--events FILE`` replays a log (v1 JSON Lines or a CSV purchase log) into the
stream at ``--rate`` events per second; ``--demo`` generates shop traffic instead
(``recofast simulate``: shoppers browsing, searching, carting and buying in their favourite
categories, in context; its catalog is published first). Ctrl-C (or SIGTERM)
stops everything, engine last but one and NATS last, so the engine checkpoints on its way
out.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from recofast.engine.natsserver import NatsServer


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def write_demo_events(path: Path, events: int = 200_000, users: int = 500, items: int = 600, seed: int = 0,
                      catalog: Path | None = None) -> int:
    """Writes simulated shop traffic (``recofast simulate``: shoppers ``shopper0``... with
    tastes, context, searches, new items) as v1 JSON Lines, and its catalog upserts to
    ``catalog``. Returns the number of events.

    >>> import json, pathlib, tempfile
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> write_demo_events(d / "demo.jsonl", events=3, catalog=d / "catalog.jsonl")
    3
    >>> sorted(json.loads((d / "demo.jsonl").read_text().splitlines()[0]))[:4]
    ['context', 'id', 'item', 'session']
    """
    from recofast.evaluation.simulate import simulate

    with open(path, "w") as f, open(catalog or os.devnull, "w") as c:
        stats = simulate(f, users=users, items=items, events=events, seed=seed, catalog=c, user_prefix="shopper")
    return int(stats["events"])


def _wait_http(url: str, timeout: float, procs: list[subprocess.Popen]) -> None:
    deadline = time.monotonic() + timeout
    while True:
        for p in procs:
            if p.poll() is not None:
                raise RuntimeError(f"{p.args[2] if len(p.args) > 2 else p.args} exited with code {p.returncode} while starting")
        try:
            with urllib.request.urlopen(url, timeout=1.0) as r:
                if r.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"{url} did not answer 200 within {timeout:.0f} s")
        time.sleep(0.2)


def _stop(p: subprocess.Popen | None, timeout: float = 30.0) -> None:
    if p is None or p.poll() is not None:
        return
    p.send_signal(signal.SIGTERM)
    try:
        p.wait(timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()




def run_stack(*, port: int = 8080, data_dir: str = "data", engine_http_port: int = 0, demo: bool = False,
              events: str | None = None, rate: float = 200.0, duration: float = 0.0) -> int:
    """Starts NATS, the engine and the sidecar (and, with ``demo`` or ``events``, a feeder);
    runs until interrupted or for ``duration`` seconds; stops them all. Returns the exit code."""
    if not 0 < port < 65536:
        raise ValueError(f"--port must be between 1 and 65535, got {port}")
    if rate <= 0:
        raise ValueError(f"--rate must be positive, got {rate}")
    if events and not os.path.exists(events):
        raise FileNotFoundError(f"no such event log: {events}")
    data = Path(data_dir).resolve()
    data.mkdir(parents=True, exist_ok=True)
    engine_port = engine_http_port or free_port()
    stopping = False

    def on_signal(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    nats = NatsServer(data / "nats", port=-1)
    engine = sidecar = feeder = None
    try:
        url = nats.start()
        py = sys.executable
        engine = subprocess.Popen([py, "-m", "recofast.cli", "serve", "--nats", url, "--lmdb", str(data / "lmdb"),
                                   "--model-dir", str(data / "models"), "--http-port", str(engine_port)])
        _wait_http(f"http://127.0.0.1:{engine_port}/healthz", 60, [engine])
        sidecar = subprocess.Popen([py, "-m", "recofast_sidecar.server", "--lmdb", str(data / "lmdb"),
                                    "--port", str(port), "--nats", url])
        _wait_http(f"http://127.0.0.1:{port}/healthz", 60, [engine, sidecar])
        source = events
        extra: list[str] = []
        if demo:
            source = str(data / "demo-events.jsonl")
            write_demo_events(Path(source), catalog=data / "demo-catalog.jsonl")
            extra = ["--catalog", str(data / "demo-catalog.jsonl")]
        if source:
            feeder = subprocess.Popen([py, "-m", "recofast.cli", "publish", "--events", source, "--nats", url,
                                       "--rate", str(rate), "--pack", "10", "--stamp-now", "--quiet", *extra])
        base = f"http://127.0.0.1:{port}"
        print(f"recofast is up (data in {data})", flush=True)
        print(f"  recommendations  {base}/v1/recommendations/<user>?k=10", flush=True)
        print(f"  popular          {base}/v1/popular?k=10", flush=True)
        print(f"  events (POST)    {base}/v1/events     tracker {base}/v1/track.js", flush=True)
        print(f"  API              {base}/openapi.json", flush=True)
        print(f"  engine metrics   http://127.0.0.1:{engine_port}/metrics", flush=True)
        print(f"  NATS             {url}", flush=True)
        if demo:
            print(f"  demo shoppers    {base}/v1/recommendations/shopper1?k=10", flush=True)
        print("Ctrl-C stops everything.", flush=True)
        deadline = time.monotonic() + duration if duration > 0 else None
        while not stopping and (deadline is None or time.monotonic() < deadline):
            for name, p in (("engine", engine), ("sidecar", sidecar)):
                if p.poll() is not None:
                    print(f"recofast up: the {name} exited with code {p.returncode}; stopping", file=sys.stderr)
                    return 1
            time.sleep(0.2)
        return 0
    finally:
        print("stopping...", flush=True)
        _stop(feeder, 10)
        _stop(sidecar)
        _stop(engine, 60)
        nats.stop()
        for s, h in old.items():
            signal.signal(s, h)
