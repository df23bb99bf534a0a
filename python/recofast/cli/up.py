"""``recofast up``: NATS, the engine and the sidecar together."""

from __future__ import annotations

import argparse

from recofast.engine import stack
from recofast.engine.stack import run_stack


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("up", help="start NATS, the engine and the sidecar together and print the URLs",
                       description=stack.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--port", type=int, default=8080, help="the sidecar's HTTP port (default 8080)")
    p.add_argument("--data-dir", default="data", help="where NATS, LMDB and checkpoints live (default ./data)")
    p.add_argument("--engine-http-port", type=int, default=0, help="the engine's /metrics port (default: a free one)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--demo", action="store_true",
                   help="a simulated shop: a generated history warms the model, then simulated shoppers act on "
                        "the lists they are shown (clicks, carts, purchases with the list's rec_id) and browse on their own")
    g.add_argument("--events", default=None, help="replay this log (v1 JSON Lines or a CSV purchase log)")
    p.add_argument("--rate", type=float, default=200.0,
                   help="events per second: of the --events replay, or of the --demo shoppers (default 200; "
                        "the demo's history is published at full speed)")
    p.add_argument("--concurrency", type=int, default=8, help="--demo shoppers in flight at once (default 8)")
    p.add_argument("--experiment-file", default=None, metavar="FILE",
                   help="copy this file's [[experiments]] (e.g. examples/demo-experiment.toml) into the engine's "
                        "configuration DATA/recofast.toml, which the engine re-reads when it changes")
    p.add_argument("--drift-at", type=int, default=None, metavar="SESSION",
                   help="--demo: at this session number half of the shoppers switch taste (the engine's drift "
                        "detectors should notice; see the README, \"Drift and staleness\")")
    p.add_argument("--engines", type=int, default=1,
                   help="engines sharing the event stream's partitions through leases, each with its own data "
                        "(DATA/engine<N>), exchanging item deltas (default 1)")
    p.add_argument("--nats-nodes", type=int, default=1,
                   help="nats-servers in a JetStream cluster on loopback, the streams replicated min(3, N) ways; "
                        "with more than 1, the sidecar is an edge on a leaf node, its lists mirrored from the KV "
                        "bucket (default 1)")
    p.add_argument("--partitions", type=int, default=0,
                   help="event partitions (recofast.events.p<N>) the engines share (default: 1 for one engine, "
                        "else max(4, 2 x engines))")
    p.add_argument("--duration", type=float, default=0.0, help="stop after this many seconds (default: run until Ctrl-C)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.concurrency < 1:
        raise ValueError(f"--concurrency must be at least 1, got {args.concurrency}")
    if args.drift_at is not None and (args.drift_at < 0 or not args.demo):
        raise ValueError("--drift-at takes a session number (≥ 0) and goes with --demo")
    return run_stack(port=args.port, data_dir=args.data_dir, engine_http_port=args.engine_http_port, demo=args.demo,
                     events=args.events, rate=args.rate, duration=args.duration, experiment_file=args.experiment_file,
                     concurrency=args.concurrency, drift_at=args.drift_at, engines=args.engines,
                     nats_nodes=args.nats_nodes, partitions=args.partitions)
