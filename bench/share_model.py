"""Recall@K of partitioned engines against one engine, and the item-delta traffic between
them, for docs/CAPACITY.md and the README's scale-out section: the prequential protocol
(test, then learn) over a log, one ``recofast`` model against ``recofast-partitioned``
layouts (:class:`~recofast.evaluation.baselines.PartitionedRecofast`: engines that each
learn only their own partitions' users and apply the others' item deltas every
``share_every`` events), all on the same tests in one pass.

    .venv/bin/python bench/share_model.py                                  # the shop log, 2000:2:4 0:2:4
    .venv/bin/python bench/share_model.py --layouts 2000:2:4 0:2:4 10000:2:4 2000:4:8 --limit 100000
    .venv/bin/python bench/share_model.py --events other-shop.csv.gz --items other-items.csv

A layout is ``share_every:engines:partitions`` (``share_every`` 0: engines alone, no
deltas). Model options are the defaults of ``recofast eval`` (dim 64), context off.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from recofast.evaluation.data import read_catalog, read_events
from recofast.evaluation.protocol import build_models, prequential

SHARED = Path(os.environ.get("RECOFAST_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


def parse_layout(text: str) -> dict[str, int]:
    try:
        share, engines, parts = (int(x) for x in text.split(":"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"a layout is share_every:engines:partitions, got {text!r}") from None
    if share < 0 or not 1 <= engines <= parts:
        raise argparse.ArgumentTypeError(f"need share_every >= 0 and 1 <= engines <= partitions, got {text!r}")
    return {"share_every": share, "engines": engines, "partitions": parts}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("--events", default=str(SHARED / "online_retail" / "interactions.csv.gz"), help="the event log (CSV[.gz])")
    p.add_argument("--items", default=str(SHARED / "online_retail" / "items.csv"), help="item catalogue ('' for none)")
    p.add_argument("--layouts", nargs="+", type=parse_layout, default=[parse_layout("2000:2:4"), parse_layout("0:2:4")],
                   help="share_every:engines:partitions, one or more (default 2000:2:4 0:2:4)")
    p.add_argument("--limit", type=int, default=None, help="the first N events only")
    p.add_argument("--k", type=int, default=20, help="list length (default 20)")
    p.add_argument("--option", action="append", default=[], metavar="NAME=VALUE", help="a model option (repeatable)")
    p.add_argument("--json", default=None, metavar="FILE", help="also write the results as JSON")
    args = p.parse_args(argv)
    if not Path(args.events).exists():
        p.error(f"no such event log: {args.events}")
    options = dict(o.split("=", 1) for o in args.option)
    cat = read_catalog(args.items) if args.items else None
    log = read_events(args.events, limit=args.limit)
    models = build_models(["recofast"], options, cat)
    for layout in args.layouts:
        models += build_models(["recofast-partitioned"], options, cat, peers={"recofast-partitioned": layout})
    t0 = time.perf_counter()
    scores = prequential(log, models, k=args.k, progress=sys.stderr.isatty(), catalog=cat)
    secs = time.perf_counter() - t0
    one = scores[0]
    rows = [{"layout": "one engine", "recall": one.recall, "ratio": 1.0, "delta_bytes": 0, "bytes_per_event": 0.0}]
    for layout, m, s in zip(args.layouts, models[1:], scores[1:]):
        name = f"{layout['engines']} engines / {layout['partitions']} partitions, " + (
            f"deltas every {layout['share_every']} events" if layout["share_every"] else "alone")
        rows.append({"layout": name, **layout, "recall": s.recall, "ratio": s.recall / one.recall if one.recall else 0.0,
                     "delta_bytes": m.delta_bytes, "bytes_per_event": m.delta_bytes / max(1, len(log))})
    print(f"{len(log):,} events, {one.tests:,} tests, {secs:.0f} s ({args.events})")
    print(f"| layout | Recall@{args.k} | × one engine | delta bytes (all engines) | bytes per event |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['layout']} | {r['recall']:.4f} | {r['ratio']:.4f} | {r['delta_bytes']:,} | {r['bytes_per_event']:.0f} |")
    if args.json:
        Path(args.json).write_text(json.dumps({"events": len(log), "tests": one.tests, "seconds": secs, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
