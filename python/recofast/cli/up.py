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
    g.add_argument("--demo", action="store_true", help="feed generated shop traffic")
    g.add_argument("--events", default=None, help="replay this log (v1 JSON Lines or a CSV purchase log)")
    p.add_argument("--rate", type=float, default=200.0, help="events per second of --demo/--events (default 200)")
    p.add_argument("--duration", type=float, default=0.0, help="stop after this many seconds (default: run until Ctrl-C)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    return run_stack(port=args.port, data_dir=args.data_dir, engine_http_port=args.engine_http_port, demo=args.demo,
                     events=args.events, rate=args.rate, duration=args.duration)
