"""``recofast report``: a static HTML page of the closed loop, to share: CTR, conversion and
revenue over time by source and by experiment variant, lists served, CTR by position, the
experiments with their intervals, the model's versions. One file, its plots embedded as
images. Reads the engine's loop database and checkpoints (the engine may run)."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path


def _since(text: str) -> float:
    from recofast.engine.htmlreport import parse_since

    try:
        return parse_since(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e).removeprefix("--since: ")) from None


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("report", help="a static HTML report of served lists, experiments and model versions",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default=None, help="the engine's recofast.toml (finds the loop database, the model folder and the experiments)")
    p.add_argument("--db", default=None, help="the loop database (default: the engine's loop_db, else <model_dir>/loop.sqlite3)")
    p.add_argument("--model-dir", default=None, help="the engine's checkpoint folder, for the model versions (default: the engine's model_dir)")
    p.add_argument("--since", type=_since, default=60.0, metavar="AGE",
                   help="the window plotted: a number and a unit, s, m, h or d, like 30m, 1h (the default) or 2d")
    p.add_argument("--out", default="report.html", help="the HTML file to write (default report.html)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from recofast.engine import htmlreport
    from recofast.engine.attribution import connect_readonly
    from recofast.engine.checkpoints import CheckpointStore
    from recofast.engine.config import load_config
    from recofast.engine.loop import loop_db_path

    cfg = load_config(args.config)
    model_dir = Path(args.model_dir or cfg.model_dir)
    checkpoints = CheckpointStore(model_dir).listing() if model_dir.is_dir() else []
    t0 = time.monotonic()

    def progress(what: str) -> None:  # only once it takes long enough to wonder
        if time.monotonic() - t0 > 1.0:
            print(f"recofast report: {what} ...", file=sys.stderr, flush=True)

    db = connect_readonly(Path(args.db) if args.db else loop_db_path(cfg))
    try:
        out = htmlreport.write(args.out, db, minutes=args.since, experiments=cfg.experiments, checkpoints=checkpoints,
                               progress=progress)
    finally:
        db.close()
    print(f"wrote {out} ({out.stat().st_size:,} bytes)")
    return 0
