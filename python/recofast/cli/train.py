"""``recofast train``: backfill a model from an event log and save it."""

from __future__ import annotations

import argparse
import time

from tqdm import tqdm

from recofast.evaluation.data import read_events
from recofast.evaluation.train import make_recommender, parse_options


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="backfill a model from an event log and save it",
                       description="Learn from every event of a log, in file order, and save the model snapshot.")
    p.add_argument("--events", required=True, help="CSV or CSV.gz with user_id, item_id, timestamp[, event]")
    p.add_argument("--out", required=True, help="where to write the model snapshot")
    p.add_argument("--default-event", default="purchase", help="event type when the log has no event column (default: purchase)")
    p.add_argument("--option", action="append", metavar="NAME=VALUE", help="a model option (repeatable), e.g. dim=32")
    p.add_argument("--batch", type=int, default=50_000, help="events per learn_many call (default 50000)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    log = read_events(args.events)
    rec = make_recommender(parse_options(args.option))
    events = log.events if log.events is not None else args.default_event
    t0 = time.perf_counter()
    with tqdm(total=len(log), unit="ev", desc="train") as bar:
        for s in range(0, len(log), args.batch):
            e = slice(s, s + args.batch)
            ev = events[e] if isinstance(events, list) else events
            rec.learn_many(log.users[e], log.items[e], ev, log.ts[e])
            bar.update(len(log.users[e]))
    dt = time.perf_counter() - t0
    rec.save(args.out)
    print(f"learned {len(log):,} events ({rec.n_users:,} users, {rec.n_items:,} items) in {dt:.1f} s; saved {args.out}")
    return 0
