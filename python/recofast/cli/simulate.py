"""``recofast simulate``: write a seeded, simulated shop stream (``--out``), or run simulated
shoppers against a stack of their own (``--shoppers``)."""

from __future__ import annotations

import argparse
import json
import os
import sys

from recofast.evaluation import simulate as sim
from recofast.evaluation.simulate import CATEGORY_NAMES, simulate

DESCRIPTION = f"""{sim.__doc__}
With --shoppers N instead of --out, it runs simulated shoppers who act on what they are
shown (recofast.evaluation.shoppers): it starts NATS, the engine and the sidecar in
--data-dir, warms the model with a generated history of the same shop, runs --sessions
sessions in lockstep rounds (each round's lists fetched, its events posted, then the engine
waited for), stops the stack, and prints the shoppers' ground-truth tallies as JSON: lists,
items shown, clicks, add-to-carts, purchases and revenue per experiment variant, per source
and per position, the organic traffic, and digests of the sessions, lists and actions (the
same seed gives the same sessions and contexts; see the README for what else is reproducible).
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("simulate", help="write a seeded, simulated shop stream, or run simulated shoppers against the stack",
                       description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=None, help="the JSON Lines file to write ('-' for stdout)")
    p.add_argument("--shoppers", type=int, default=None, metavar="N",
                   help="instead of --out: run N simulated shoppers against a stack started in --data-dir")
    p.add_argument("--users", type=int, default=None, help="shoppers of the written stream (default 2000; --out only)")
    p.add_argument("--items", type=int, default=1_000, help="items (default 1000)")
    p.add_argument("--events", type=int, default=None,
                   help="events to write (default 100000); with --shoppers, events of the generated history that "
                        "warms the model first (default 20 per shopper)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--categories", type=int, default=12, help=f"categories, 1 to {len(CATEGORY_NAMES)} (default 12)")
    p.add_argument("--drift-at", type=int, action="append", default=[], metavar="EVENT",
                   help="--out: at this event, half of the shoppers switch taste (repeatable); --shoppers: at this "
                        "session number (once), and the engine's drift alerts are reported with when they came")
    p.add_argument("--catalog", default=None,
                   help="also write item metadata here: catalog upserts (JSON Lines), each new item's with the time it "
                        "arrives (--out only)")
    g = p.add_argument_group("simulated shoppers (--shoppers)")
    g.add_argument("--sessions", type=int, default=None, metavar="S", help="sessions to run (required with --shoppers)")
    g.add_argument("--data-dir", default=None, metavar="D",
                   help="an empty or new folder for the stack's NATS, LMDB, checkpoints, configuration and logs "
                        "(required with --shoppers)")
    g.add_argument("--experiment-file", default=None, metavar="F",
                   help="copy this file's [[experiments]] (e.g. examples/demo-experiment.toml) into the engine's "
                        "configuration, so shoppers are served by their variant")
    g.add_argument("--explore", type=float, default=0.0, metavar="E",
                   help="ask for lists with explore=E (0 to 1; default 0); above 0 the lists of a round are fetched "
                        "one at a time, since the sidecar draws exploration in request order")
    g.add_argument("--json", default=None, metavar="OUT", help="also write the tallies to this file")
    g.add_argument("--log", default=None, metavar="FILE",
                   help="write every session (context, list shown, positions clicked, carted, bought, events posted) as JSON Lines")
    g.add_argument("--k", type=int, default=10, help="items per list asked for (default 10)")
    g.add_argument("--concurrency", type=int, default=8, help="list requests in flight at once (default 8)")
    g.add_argument("--round-size", type=int, default=None,
                   help="sessions per lockstep round, each of a different shopper (default: 50, at most the shoppers)")
    g.add_argument("--browse", type=float, default=0.5,
                   help="share of sessions in which the shopper also browses on its own, events without a rec_id "
                        "(default 0.5)")
    g.add_argument("--beta", type=float, default=1.0,
                   help="position bias: position p (0 at the top) is looked at with probability 1/(1+p)^beta (default 1)")
    g.add_argument("--hours", choices=["seeded", "wall"], default="seeded",
                   help="the hour of a session's context: drawn from the seed (default), or the UTC hour now, which "
                        "is the hour the engine learns events in (it takes it from their wall-clock ts)")
    g.add_argument("--dim", type=int, default=32, help="the model's factor width in the simulator's engine (default 32)")
    g.add_argument("--port", type=int, default=0, help="the sidecar's port (default: a free one)")
    g.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if (args.out is None) == (args.shoppers is None):
        raise ValueError("give --out FILE (write a stream) or --shoppers N (run shoppers against the stack)")
    if args.shoppers is not None:
        return run_shoppers(args)
    if args.sessions is not None or args.data_dir is not None or args.experiment_file or args.json or args.log:
        raise ValueError("--sessions, --data-dir, --experiment-file, --json and --log go with --shoppers")
    for path in (args.out, args.catalog):
        if path and path != "-" and os.path.dirname(path):
            os.makedirs(os.path.dirname(path), exist_ok=True)
    out = sys.stdout if args.out == "-" else open(args.out, "w")
    cat = open(args.catalog, "w") if args.catalog else None
    try:
        stats = simulate(out, users=2_000 if args.users is None else args.users, items=args.items,
                         events=100_000 if args.events is None else args.events, seed=args.seed,
                         categories=args.categories, drift_at=tuple(args.drift_at), catalog=cat)
    finally:
        if out is not sys.stdout:
            out.close()
        if cat is not None:
            cat.close()
    print(json.dumps(stats), file=sys.stderr)
    return 0


def run_shoppers(args: argparse.Namespace) -> int:
    from recofast.engine.stack import run_simulation

    if args.users is not None or args.catalog:
        raise ValueError("--users and --catalog go with --out (with --shoppers the shop has N shoppers)")
    if len(args.drift_at) > 1 or any(d < 0 for d in args.drift_at):
        raise ValueError("with --shoppers, --drift-at takes one session number (≥ 0)")
    if args.sessions is None or args.data_dir is None:
        raise ValueError("--shoppers needs --sessions S and --data-dir D")
    if not 0.0 <= args.explore <= 1.0 or not 0.0 <= args.browse <= 1.0:
        raise ValueError("--explore and --browse must be between 0 and 1")
    if args.beta < 0 or args.concurrency < 1 or not 1 <= args.k <= 200 or (args.round_size is not None and args.round_size < 1):
        raise ValueError("--beta must be ≥ 0, --concurrency and --round-size ≥ 1, --k between 1 and 200")
    tallies = run_simulation(shoppers=args.shoppers, sessions=args.sessions, seed=args.seed, data_dir=args.data_dir,
                             items=args.items, categories=args.categories, history=args.events,
                             experiment_file=args.experiment_file, explore=args.explore, k=args.k,
                             concurrency=args.concurrency, round_size=args.round_size, browse=args.browse, beta=args.beta,
                             dim=args.dim, port=args.port, progress=not args.quiet, log=args.log, hours=args.hours,
                             drift_at=args.drift_at[0] if args.drift_at else None)
    text = json.dumps(tallies, indent=2)
    if args.json:
        if os.path.dirname(args.json):
            os.makedirs(os.path.dirname(args.json), exist_ok=True)
        with open(args.json, "w") as f:
            f.write(text + "\n")
    print(text)
    return 0
