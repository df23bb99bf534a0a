"""``recofast metrics``: what served lists earned, per source, endpoint, variant and position;
the experiments with their intervals and decisions; off-policy estimates of another
exploration rate (``--ips explore=0.05``). Reads the engine's loop database (it may run)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from recofast.engine.attribution import DIMENSIONS


def _ips_target(text: str) -> float:
    name, sep, value = text.partition("=")
    if not sep or name.strip() != "explore":
        raise argparse.ArgumentTypeError(f"expected explore=RATE, got {text!r}")
    try:
        v = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {value!r}") from None
    if not 0.0 <= v <= 1.0:
        raise argparse.ArgumentTypeError(f"an exploration rate is between 0 and 1, got {v:g}")
    return v


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("metrics", help="online metrics of served lists, experiments and off-policy estimates",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default=None, help="the engine's recofast.toml (finds the loop database and the experiments)")
    p.add_argument("--db", default=None, help="the loop database (default: the engine's loop_db, else <model_dir>/loop.sqlite3)")
    p.add_argument("--model-dir", default=None,
                   help="the engine's checkpoint directory, whose loop.sqlite3 to read (e.g. DATA/models of `recofast up --data-dir DATA`)")
    p.add_argument("--minutes", type=float, default=None, help="only the last MINUTES (default: everything kept)")
    p.add_argument("--by", default="endpoint,source",
                   help=f"group the table by these, comma-separated, of {', '.join(DIMENSIONS)} (default endpoint,source)")
    p.add_argument("--ips", type=_ips_target, action="append", default=[], metavar="explore=RATE",
                   help="estimate the CTR of /v1/recommendations had the exploration rate been RATE (repeatable)")
    p.add_argument("--experiment", default=None, help="with --ips: only this experiment's lists")
    p.add_argument("--variant", default=None, help="with --ips: only this variant's lists")
    p.add_argument("--json", action="store_true", help="print JSON instead of tables")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from recofast.engine import report
    from recofast.engine.attribution import connect_readonly
    from recofast.engine.config import load_config
    from recofast.engine.loop import loop_db_path

    cfg = load_config(args.config, overrides={"model_dir": args.model_dir})
    db = connect_readonly(Path(args.db) if args.db else loop_db_path(cfg))
    try:
        by = [d.strip() for d in args.by.split(",") if d.strip()]
        out: dict[str, Any] = report.loop_report(db, cfg.experiments, by, args.minutes)
        ips = [report.ips_report(db, t, args.experiment, args.variant, None if args.minutes is None else args.minutes / 60) for t in args.ips]
    finally:
        db.close()
    if args.json:
        print(json.dumps({**out, "ips": ips} if ips else out, indent=1))
        return 0
    print(report.format_report(out))
    for r in ips:
        print()
        print(report.format_ips(r))
    return 0
