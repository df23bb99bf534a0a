"""What applying another engine's item deltas costs, for docs/CAPACITY.md: two models (dim
64) split the first ``--events`` events of a log by user partition (``crc32(user) % 4``:
0-1 to engine A, 2-3 to B), as two engines on four partitions do; A's deltas are taken
every ``--every`` events (:meth:`recofast.Recommender.take_item_delta`), then B applies all
of them (:meth:`~recofast.Recommender.apply_item_delta`) against the clock. Prints the delta
bytes per event of A and B's apply rate in bytes and in A's events per second, next to A's
own ``learn_one`` rate.

    .venv/bin/python bench/delta_cost.py
    .venv/bin/python bench/delta_cost.py --events 400000 --every 20000
"""

from __future__ import annotations

import argparse
import os
import time
import zlib
from pathlib import Path

from recofast.evaluation.data import read_events
from recofast.recommender import Recommender

SHARED = Path(os.environ.get("RECOFAST_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--events-file", default=str(SHARED / "online_retail" / "interactions.csv.gz"), help="the event log")
    p.add_argument("--events", type=int, default=200_000, help="events to learn (default 200,000)")
    p.add_argument("--every", type=int, default=2000, help="take A's delta every N events (default 2000)")
    p.add_argument("--dim", type=int, default=64, help="model dimension (default 64)")
    args = p.parse_args(argv)
    if args.every < 1:
        p.error("--every must be positive")
    log = read_events(args.events_file, limit=args.events)
    a, b = Recommender(dim=args.dim), Recommender(dim=args.dim)
    a.share_items()
    b.share_items()
    deltas: list[bytes] = []
    learn_a, n_a = 0.0, 0
    default = "purchase"
    for i, (user, item) in enumerate(zip(log.users, log.items)):
        if item is None:
            continue
        mine = zlib.crc32(user.encode()) % 4 < 2
        t = time.perf_counter()
        (a if mine else b).learn_one(user, item, log.events[i] if log.events else default, float(log.ts[i]))
        if mine:
            learn_a += time.perf_counter() - t
            n_a += 1
        if (i + 1) % args.every == 0:
            deltas += a.take_item_delta()
            b.take_item_delta()  # B's own deltas are not part of this measurement
    deltas += a.take_item_delta()
    size = sum(map(len, deltas))
    t = time.perf_counter()
    for d in deltas:
        b.apply_item_delta(d)
    dt = time.perf_counter() - t
    print(f"engine A: {n_a:,} events, learn_one {n_a / learn_a:,.0f} events/s; {len(deltas)} deltas every {args.every} events, "
          f"{size:,} bytes ({size / max(1, n_a):.0f} B per event)")
    print(f"engine B applied them in {dt:.3f} s: {size / dt / 1e6:.1f} MB/s, {n_a / dt:,.0f} of A's events per second")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
