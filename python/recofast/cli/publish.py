"""``recofast publish``: replay events (v1 JSON Lines or a CSV purchase log) into the stream."""

from __future__ import annotations

import argparse
import asyncio
import itertools
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from recofast_sidecar.protocol import events as ev
from recofast_sidecar.protocol.names import CATALOG_SUBJECT
from tqdm import tqdm

from recofast.engine.publish import (
    catalog_messages,
    interleaved,
    partitioned,
    publish,
    read_events,
)


def _default_url() -> str:
    p = Path("data/nats/url")
    if p.is_file():
        return p.read_text().strip()
    return "nats://127.0.0.1:4222"


def _cmd_publish(args: argparse.Namespace) -> int:

    url = args.nats or _default_url()
    if args.pack <= 0:
        raise ValueError(f"--pack must be a positive integer, got {args.pack}")
    if not (args.events or args.catalog):
        raise ValueError("give --events, --catalog or both")
    if args.catalog and not args.events:
        n_msgs, n_items = asyncio.run(publish(url, catalog_messages(Path(args.catalog), args.pack), subject=CATALOG_SUBJECT))
        print(f"published {n_items} catalog upserts in {n_msgs} messages to {url}")
        return 0
    evs: Iterable[ev.Event | bytes] = read_events(args.events)
    if args.skip or args.limit:
        evs = itertools.islice(evs, args.skip, None if args.limit is None else args.skip + args.limit)
    if args.partitions < 1:
        raise ValueError(f"--partitions must be at least 1, got {args.partitions}")
    msgs: Iterable[Any] = (interleaved(Path(args.catalog), evs, args.pack, args.stamp_now, args.partitions) if args.catalog
                           else partitioned(evs, args.pack, args.partitions, args.stamp_now))
    with tqdm(total=args.limit or None, unit="ev", unit_scale=True, disable=args.quiet, desc="publish") as bar:
        t0 = time.perf_counter()
        n_msgs, n_events = asyncio.run(publish(url, msgs, rate=args.rate, progress=bar))
        dt = time.perf_counter() - t0
    what = "events and catalog upserts" if args.catalog else "events"
    print(f"published {n_events} {what} in {n_msgs} messages to {url} in {dt:.1f}s ({n_events / max(dt, 1e-9):,.0f}/s)")
    return 0


def register(sub: Any) -> None:
    """Adds ``recofast publish``."""
    p = sub.add_parser("publish", help="replay events (v1 JSON Lines or a CSV purchase log) into the stream")
    p.add_argument("--events", default=None, help=".jsonl[.gz] of v1 events or .csv[.gz] purchase log")
    p.add_argument("--catalog", default=None,
                   help="catalog upserts (JSON Lines, e.g. from recofast simulate --catalog); with --events, "
                        "each is published in time order with the events (items arrive mid-stream as they did)")
    p.add_argument("--nats", default=None, help="NATS URL (default: the embedded server's, data/nats/url, else nats://127.0.0.1:4222)")
    p.add_argument("--rate", type=float, default=None, help="events per second (default: as fast as acks come)")
    p.add_argument("--limit", type=int, default=None, help="publish at most this many events")
    p.add_argument("--skip", type=int, default=0, help="skip the first N events of the file (default 0)")
    p.add_argument("--pack", type=int, default=100, help="events per message (default 100; 1 = one event a message)")
    p.add_argument("--partitions", type=int, default=1, help="publish each user's events to recofast.events.p<crc32(user) %% N>, as the sidecar "
                        "does, packed --pack to a message per partition (default 1: all to p0)")
    p.add_argument("--stamp-now", action="store_true", help="set each event's ts to the publish time (freshness tests)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_publish)
