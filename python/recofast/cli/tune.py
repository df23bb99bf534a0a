"""``recofast tune``: search a model's options on a prefix of a shop's own log."""

from __future__ import annotations

import argparse
import os

from recofast.evaluation import tune as tuning
from recofast.evaluation.data import read_catalog, read_events
from recofast.evaluation.protocol import CONTEXT_ALL, event_contexts
from recofast.evaluation.train import parse_options


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "tune", help="search a model's options on a prefix of an event log (prequential)",
        description=tuning.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--events", required=True, help="the event log, as recofast eval takes it")
    p.add_argument("--items", default=None, metavar="FILE", help="item catalogue, as recofast eval takes it")
    p.add_argument("--model", default="recofast", metavar="M[,M...]",
                   help=f"the model(s) to tune, comma-separated, from {', '.join(tuning.TUNABLE)} (default recofast)")
    p.add_argument("--prefix", type=float, default=0.3, metavar="F",
                   help="tune on the first F of the log (a fraction below 1, or an event count; default 0.3)")
    p.add_argument("--budget", type=int, default=16, metavar="N", help="configurations tried per model (default 16)")
    p.add_argument("--search", choices=("halving", "random"), default="halving",
                   help="successive halving (default), or every configuration on the whole prefix")
    p.add_argument("--eta", type=int, default=2, metavar="ETA",
                   help="successive halving keeps the best 1/ETA each round (default 2)")
    p.add_argument("--metric", choices=("recall", "ndcg"), default="recall", help="what is maximised (default recall)")
    p.add_argument("--k", type=int, default=20, help="list length K (default 20)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random draws (default 0)")
    p.add_argument("--space", action="append", metavar="NAME=V1,V2,...",
                   help="search these values of an option (repeatable; replaces or adds to the built-in space; with "
                        "several models it applies to each, so name one model)")
    p.add_argument("--option", action="append", metavar="NAME=VALUE",
                   help="a fixed recofast option the search starts from (repeatable)")
    p.add_argument("--context", default="", metavar="FIELDS", help="context fields, as recofast eval takes them")
    p.add_argument("--explore", type=int, default=0, metavar="N", help="recofast's exploration slots (default 0)")
    p.add_argument("--default-event", default="purchase", help="event type when the log has no event column")
    p.add_argument("--limit", type=int, default=None, help="read only the first N events")
    p.add_argument("--out", default="tuned.toml", metavar="TOML",
                   help="write the chosen options here (default tuned.toml): recofast's under [engine.model] "
                        "(recofast serve --config reads it), the peers' under [peers.NAME] (recofast eval --options-file)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from recofast.cli.eval import split_point

    names = [n.strip() for n in args.model.split(",") if n.strip()]
    bad = [n for n in names if n not in tuning.TUNABLE]
    if bad or not names:
        raise ValueError(f"cannot tune {', '.join(bad) or 'nothing'}; choose from {', '.join(tuning.TUNABLE)}")
    if sum(n.startswith("recofast") for n in names) > 1:
        raise ValueError("tune one recofast model at a time (its options go to [engine.model])")
    for flag, v in (("--budget", args.budget), ("--k", args.k)):
        if v <= 0:
            raise ValueError(f"{flag} must be a positive integer, got {v}")
    if args.eta < 2:
        raise ValueError(f"--eta must be at least 2, got {args.eta}")
    if args.prefix <= 0:
        raise ValueError(f"--prefix must be > 0, got {args.prefix:g}")
    space = tuning.parse_space(args.space)
    options = parse_options(args.option)
    fields = [f.strip() for f in args.context.split(",") if f.strip()]
    if fields == ["all"]:
        fields = list(CONTEXT_ALL)
    spaces = _spaces(names, space)  # bad spaces fail before the log is read
    catalog = read_catalog(args.items) if args.items else None
    log = read_events(args.events, limit=args.limit, keep=tuple(f for f in fields if f not in ("hour", "weekday")))
    contexts = event_contexts(log, fields)
    n = split_point(args.prefix, len(log), "--prefix")
    results = []
    for name in names:
        sp = spaces[name]
        r = tuning.tune(log, name, prefix_events=n, budget=args.budget, search=args.search, eta=args.eta, k=args.k,
                        metric=args.metric, seed=args.seed, space=sp, base=options if name.startswith("recofast") else None,
                        catalog=catalog, contexts=contexts, explore=args.explore, default_event=args.default_event,
                        progress=not args.no_progress)
        results.append(r)
        d = f" (defaults {r.default_score:.4f})" if r.default_score is not None else ""
        print(f"{name}: {args.metric}@{args.k} {r.score:.4f}{d} on events 0 to {n:,} of {len(log):,} with "
              f"{' '.join(f'{k}={v}' for k, v in r.best.items())} ({r.seconds:.0f} s)")
    d = os.path.dirname(args.out)
    if d:
        os.makedirs(d, exist_ok=True)
    with open(args.out, "w") as f:
        f.write(tuning.tuned_toml(results, comment=f"recofast tune --events {args.events} --prefix {args.prefix:g}: "
                                  f"chosen on events 0 to {n:,} of {len(log):,}; test on the rest "
                                  f"(recofast eval --options-file {args.out} --test-from {n})"))
    print(f"wrote {args.out}")
    return 0


def _spaces(names: list[str], space: dict) -> dict[str, dict]:
    """Each model's share of ``--space``: one model takes all of it (an option it lacks is an
    error); several take the options their spaces have, and an option none has is an error."""
    if len(names) == 1:
        tuning.model_space(names[0], space)
        return {names[0]: space}
    out = {n: {k: v for k, v in space.items() if k in tuning.model_space(n)} for n in names}
    lost = sorted(set(space) - {k for v in out.values() for k in v})
    if lost:
        raise ValueError(f"no model in {', '.join(names)} searches {', '.join(lost)}; name one model to add an option")
    return out
