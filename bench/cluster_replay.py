"""A shop log replayed through real engines over NATS, one engine against two on four
partitions, scored on the same tests: Recall@K of the lists the engines write to LMDB.

The log is cut into chunks. Before each chunk is published, every event of it is tested
against the list its user has in the store of the engine owning the user's partition (a
hit: the event's item is in the first K); then the chunk is published to
``recofast.events.p<crc32(user) % 4>`` (:func:`recofast.engine.publish.partitioned`), and
the next chunk waits until the engines have applied all of it and ``settle`` seconds more
(two delta cadences, so the engines have exchanged what the chunk taught them). Both layouts
run the same protocol on the same events, so they have the same tests; the first chunk is
learned only.

* ``one``: ``recofast serve --partitions 0-3``;
* ``two``: ``--partitions 0-1`` and ``--partitions 2-3``, exchanging item deltas;
* ``alone``: the same two without item deltas (``share_items = false``).

    .venv/bin/python bench/cluster_replay.py                          # the shop log, whole
    .venv/bin/python bench/cluster_replay.py --limit 60000 --chunk 1000
    .venv/bin/python bench/cluster_replay.py --events other-shop.csv.gz --layouts one two

Engines: ``recofast serve`` processes on a fresh nats-server each layout, model dim 64,
``top_n`` K, no periodic refresh round (``refresh_seconds = 3600``), ``share_seconds``
0.1 s, the scoring snapshot rebuilt for every batch (``snapshot_ms = 0``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from recofast.engine.natsserver import NatsServer, free_ports
from recofast.engine.publish import partition_of, partitioned, publish, read_events

SHARED = Path(os.environ.get("RECOFAST_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
PARTS = 4
LAYOUTS: dict[str, tuple[list[str], bool]] = {  # engines' partitions, item deltas
    "one": (["0-3"], True),
    "two": (["0-1", "2-3"], True),
    "alone": (["0-1", "2-3"], False),
}


def _healthz(port: int) -> dict[str, Any]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as r:
            return dict(json.loads(r.read()))
    except urllib.error.HTTPError as err:  # 503 while starting: still a JSON body
        return dict(json.loads(err.read() or b"{}"))
    except (OSError, ValueError):
        return {}


def _serve(home: Path, url: str, parts: str, share: bool, port: int, k: int, share_seconds: float) -> subprocess.Popen[bytes]:
    home.mkdir(parents=True, exist_ok=True)
    conf = home / "engine.toml"
    conf.write_text(
        f"[engine]\nrefresh_seconds = 3600.0\ntop_n = {k}\nlmdb_map_size = {1 << 30}\nlmdb_sync = false\n"
        f"expire_seconds = 0.0\nattribution = false\nshare_items = {'true' if share else 'false'}\n"
        f"share_seconds = {share_seconds}\nfetch_timeout = 0.05\n"
        "[engine.model]\ndim = 64\nseed = 1\nsnapshot_ms = 0\n"
    )
    cmd = [sys.executable, "-m", "recofast.cli", "serve", "--config", str(conf), "--nats", url, "--lmdb", str(home / "lmdb"),
           "--model-dir", str(home / "models"), "--partitions", parts, "--engine-id", f"engine-{parts}",
           "--http-port", str(port), "--log-level", "warning"]  # fmt: skip
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=open(home / "stderr.log", "wb"))  # noqa: SIM115


def _owner_of(layout: list[str]) -> list[int]:
    from recofast.engine.partitions import parse_partitions

    owner = [-1] * PARTS
    for i, parts in enumerate(layout):
        for p in parse_partitions(parts):
            owner[p] = i
    if -1 in owner:
        raise ValueError(f"layout {layout} leaves a partition unowned")
    return owner


def replay(events: Sequence[Any], layout: list[str], share: bool, root: Path, chunk: int = 2000, k: int = 20,
           share_seconds: float = 0.1, progress: bool = False) -> dict[str, Any]:
    """Replays ``events`` (v1 events) through the engines of ``layout`` and returns the
    tests, hits, Recall@K and what the engines counted."""
    from recofast_sidecar.protocol.liststore import ListReader

    shutil.rmtree(root, ignore_errors=True)
    server = NatsServer(root / "nats", port=-1)
    server.start()
    ports = free_ports(len(layout))
    owner = _owner_of(layout)
    procs = [_serve(root / f"engine{i}", server.url, parts, share, port, k, share_seconds)
             for i, (parts, port) in enumerate(zip(layout, ports, strict=True))]
    settle = 2 * share_seconds + 0.05 if len(layout) > 1 or share else 0.05
    try:
        deadline = time.monotonic() + 120
        while any(_healthz(p).get("status") != "ok" for p in ports):
            if time.monotonic() > deadline or any(p.poll() is not None for p in procs):
                raise RuntimeError(f"the engines did not start: see {root}/engine*/stderr.log")
            time.sleep(0.05)
        readers: list[Any] = [None] * len(layout)
        tests = hits = 0
        t0 = time.perf_counter()
        for c in range(0, len(events), chunk):
            part = events[c:c + chunk]
            if c:
                for i, r in enumerate(readers):
                    if r is None and (root / f"engine{i}" / "lmdb").exists():
                        readers[i] = ListReader(root / f"engine{i}" / "lmdb")
                for e in part:
                    tests += 1
                    r = readers[owner[partition_of(e.user, PARTS)]]
                    rec = r.user_list(e.user) if r is not None else None
                    if rec is not None and e.item in list(rec.items)[:k]:
                        hits += 1
            asyncio.run(publish(server.url, partitioned(part, 100, PARTS)))
            want = c + len(part)
            deadline = time.monotonic() + 300
            while sum(int(h.get("events_applied_total", 0)) + int(h.get("events_dlq_total", 0))
                      for h in map(_healthz, ports)) < want:
                if time.monotonic() > deadline or any(p.poll() is not None for p in procs):
                    raise RuntimeError(f"the engines stopped applying at {want}: see {root}/engine*/stderr.log")
                time.sleep(0.01)
            time.sleep(settle)
            if progress:
                print(f"\r  {want:,} of {len(events):,} events, Recall@{k} {hits / max(1, tests):.4f}", end="",
                      file=sys.stderr, flush=True)
        if progress:
            print(file=sys.stderr)
        states = [_healthz(p) for p in ports]
        for r in readers:
            if r is not None:
                r.close()
        return {"layout": layout, "share": share, "tests": tests, "hits": hits, "recall": hits / max(1, tests),
                "seconds": time.perf_counter() - t0,
                "engines": [{key: s.get(key) for key in ("partitions", "events_applied_total", "events_dlq_total",
                                                         "item_deltas_published_total", "item_delta_bytes_published_total",
                                                         "item_deltas_applied_total", "item_deltas_rejected_total")}
                            for s in states]}
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(60)
            except subprocess.TimeoutExpired:
                p.kill()
        server.stop()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("--events", default=str(SHARED / "online_retail" / "interactions.csv.gz"),
                   help="the event log: a CSV purchase log or v1 JSON Lines (default: the shop log)")
    p.add_argument("--limit", type=int, default=None, help="the first N events only")
    p.add_argument("--chunk", type=int, default=2000, help="events published between two test rounds (default 2000)")
    p.add_argument("--k", type=int, default=20, help="list length (default 20)")
    p.add_argument("--layouts", nargs="+", choices=sorted(LAYOUTS), default=["one", "two", "alone"],
                   help="layouts to run, in this order (default: one two alone)")
    p.add_argument("--json", default=None, metavar="FILE", help="also write the results as JSON")
    args = p.parse_args(argv)
    if not Path(args.events).exists():
        p.error(f"no such event log: {args.events}")
    if args.chunk < 1 or args.k < 1:
        p.error("--chunk and --k must be positive")
    from recofast_sidecar.protocol import events as ev

    evs = []
    for e in read_events(args.events):
        for x in ev.decode_events(e, window=None)[0] if isinstance(e, bytes) else [e]:
            if x.item:  # a search has no item to test
                evs.append(x)
        if args.limit and len(evs) >= args.limit:
            break
    out = []
    with tempfile.TemporaryDirectory(prefix="recofast-replay-") as tmp:
        for name in args.layouts:
            layout, share = LAYOUTS[name]
            print(f"{name}: engines {layout}, item deltas {'on' if share else 'off'}", file=sys.stderr)
            r = replay(evs, layout, share, Path(tmp) / name, chunk=args.chunk, k=args.k, progress=sys.stderr.isatty())
            out.append({"name": name, **r})
    base = next((r["recall"] for r in out if r["name"] == "one"), None)
    print(f"{len(evs):,} events in chunks of {args.chunk}, {out[0]['tests']:,} tests ({args.events})")
    print(f"| layout | Recall@{args.k} | × one engine | events applied per engine | delta bytes published | seconds |")
    print("|---|---|---|---|---|---|")
    for r in out:
        ratio = f"{r['recall'] / base:.4f}" if base else "—"
        applied = " + ".join(f"{e['events_applied_total']:,}" for e in r["engines"])
        sent = sum(int(e["item_delta_bytes_published_total"] or 0) for e in r["engines"])
        print(f"| {r['name']} ({', '.join(r['layout'])}) | {r['recall']:.4f} | {ratio} | {applied} | {sent:,} | {r['seconds']:.0f} |")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
