"""``recofast simulate``: write a seeded, simulated shop stream."""

from __future__ import annotations

import argparse
import json
import os
import sys

from recofast.evaluation import simulate as sim
from recofast.evaluation.simulate import CATEGORY_NAMES, simulate


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("simulate", help="write a seeded, simulated shop stream (v1 events with context)",
                       description=sim.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--users", type=int, default=2_000, help="shoppers (default 2000)")
    p.add_argument("--items", type=int, default=1_000, help="items (default 1000)")
    p.add_argument("--events", type=int, default=100_000, help="events (default 100000)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--categories", type=int, default=12, help=f"categories, 1 to {len(CATEGORY_NAMES)} (default 12)")
    p.add_argument("--drift-at", type=int, action="append", default=[], metavar="EVENT",
                   help="at this event, half of the shoppers switch taste (repeatable)")
    p.add_argument("--out", required=True, help="the JSON Lines file to write ('-' for stdout)")
    p.add_argument("--catalog", default=None,
                   help="also write item metadata here: catalog upserts (JSON Lines), each new item's with the time it arrives")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    for path in (args.out, args.catalog):
        if path and path != "-" and os.path.dirname(path):
            os.makedirs(os.path.dirname(path), exist_ok=True)
    out = sys.stdout if args.out == "-" else open(args.out, "w")
    cat = open(args.catalog, "w") if args.catalog else None
    try:
        stats = simulate(out, users=args.users, items=args.items, events=args.events, seed=args.seed,
                         categories=args.categories, drift_at=tuple(args.drift_at), catalog=cat)
    finally:
        if out is not sys.stdout:
            out.close()
        if cat is not None:
            cat.close()
    print(json.dumps(stats), file=sys.stderr)
    return 0
