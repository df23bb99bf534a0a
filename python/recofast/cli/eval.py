"""``recofast eval``: prequential evaluation of recofast and its peers on an event log."""

from __future__ import annotations

import argparse
import json
import os
import time
from dataclasses import asdict

from recofast.evaluation import protocol
from recofast.evaluation.data import read_catalog, read_events
from recofast.evaluation.protocol import (
    ALL_MODELS,
    CONTEXT_ALL,
    EXTRA_MODELS,
    build_models,
    event_contexts,
    format_table,
    prequential,
)
from recofast.evaluation.train import parse_options


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "eval", help="prequential evaluation of recofast and baselines on an event log",
        description=protocol.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--events", required=True, help="CSV or CSV.gz with user_id, item_id, timestamp[, event]")
    p.add_argument("--k", type=int, default=20, help="list length K (default 20)")
    p.add_argument("--model", default=",".join(ALL_MODELS),
                   help=f"comma-separated models to run (default: all of {','.join(ALL_MODELS)}; also "
                        f"{','.join(EXTRA_MODELS)}: recofast without context)")
    p.add_argument("--option", action="append", metavar="NAME=VALUE", help="a recofast model option (repeatable)")
    p.add_argument("--items", default=None, metavar="FILE",
                   help="item catalogue: CSV (item_id and description/title/text), or JSON Lines of catalog "
                        "upserts whose ts says when an item arrives (recofast simulate --catalog); recofast uses the text")
    p.add_argument("--context", default="", metavar="FIELDS",
                   help="context fields recofast learns and recommends with, comma-separated, or 'all' "
                        f"({','.join(CONTEXT_ALL)}); hour and weekday come from the event time (UTC)")
    p.add_argument("--explore", type=int, default=0, metavar="N",
                   help="recofast gives up to N of the last slots to new items (default 0)")
    p.add_argument("--cold-events", type=int, default=5, metavar="N",
                   help="report Recall@K over tests of users in their first N events (default 5)")
    p.add_argument("--new-item-window", type=int, default=1000, metavar="N",
                   help="count impressions and hits of new items within N events of arriving (default 1000)")
    p.add_argument("--knn-window", type=int, default=2,
                   help="itemknn's co-occurrence window in items (default 2, the best plain setting on the shop log)")
    p.add_argument("--default-event", default="purchase", help="event type when the log has no event column (default: purchase)")
    p.add_argument("--limit", type=int, default=None, help="use only the first N events")
    p.add_argument("--json", default=None, metavar="FILE", help="also write the results as JSON to FILE")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.k <= 0:
        raise ValueError(f"--k must be a positive integer, got {args.k}")
    names = [n.strip() for n in args.model.split(",") if n.strip()]
    if args.knn_window <= 0:
        raise ValueError(f"--knn-window must be a positive integer, got {args.knn_window}")
    for opt in ("explore", "cold_events", "new_item_window"):
        if getattr(args, opt) < 0:
            raise ValueError(f"--{opt.replace('_', '-')} must be ≥ 0, got {getattr(args, opt)}")
    fields = [f.strip() for f in args.context.split(",") if f.strip()]
    if fields == ["all"]:
        fields = list(CONTEXT_ALL)
    catalog = read_catalog(args.items) if args.items else None
    models = build_models(names, parse_options(args.option), catalog, args.knn_window, args.explore)
    keep = tuple(f for f in fields if f not in ("hour", "weekday"))
    log = read_events(args.events, limit=args.limit, keep=keep)
    contexts = event_contexts(log, fields)
    t0 = time.perf_counter()
    scores = prequential(log, models, k=args.k, default_event=args.default_event, progress=not args.no_progress,
                         contexts=contexts, catalog=catalog, cold_events=args.cold_events,
                         new_item_window=args.new_item_window)
    table = format_table(scores, args.k, args.cold_events, args.new_item_window)
    print(table)
    if args.json:
        d = os.path.dirname(args.json)
        if d:
            os.makedirs(d, exist_ok=True)
        with open(args.json, "w") as f:
            json.dump({
                "events_file": os.fspath(args.events), "events": len(log), "k": args.k,
                "seconds": time.perf_counter() - t0, "options": parse_options(args.option),
                "items_file": args.items, "knn_window": args.knn_window, "context": fields,
                "explore": args.explore, "cold_events": args.cold_events, "new_item_window": args.new_item_window,
                "scores": [asdict(s) for s in scores],
            }, f, indent=2)
        print(f"wrote {args.json}")
    return 0
