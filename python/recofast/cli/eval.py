"""``recofast eval``: prequential evaluation of recofast and its peers on an event log."""

from __future__ import annotations

import argparse
import json
import os
import time
from dataclasses import asdict
from typing import Any

from recofast.evaluation import protocol
from recofast.evaluation.baselines import EASE
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
from recofast.evaluation.tune import PEER_DEFAULTS, TUNABLE, TuneResult, build_model, read_options_file, tune, tuned_toml


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "eval", help="prequential evaluation of recofast and baselines on an event log",
        description=protocol.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--events", required=True, help="CSV or CSV.gz with user_id, item_id, timestamp[, event]")
    p.add_argument("--k", type=int, default=20, help="list length K (default 20)")
    p.add_argument("--model", default=",".join(ALL_MODELS),
                   help=f"comma-separated models to run (default: all of {','.join(ALL_MODELS)}; also "
                        f"{','.join(EXTRA_MODELS)}: recofast without context, EASE, session-kNN, recofast as partitioned "
                        "engines sharing item deltas ([peers.recofast-partitioned] engines, partitions, share_every))")
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
    add_peer_arguments(p)
    p.add_argument("--options-file", default=None, metavar="TOML",
                   help="options from a TOML file (recofast tune --out): recofast's from [engine.model], the peers' "
                        "from [peers.NAME]; --option and the peer flags given on the command line override it")
    p.add_argument("--test-from", type=float, default=0.0, metavar="N",
                   help="learn the events before N without testing them, score only the rest; N is an event count, "
                        "or a fraction of the log when below 1 (default 0: test from the start)")
    p.add_argument("--tuned", action="store_true",
                   help="first tune every tunable model (recofast, recofast-noctx, itemknn, ease, sknn) on the events "
                        "before --test-from (default then 0.3) as recofast tune does, then score all models on the rest")
    p.add_argument("--budget", type=int, default=16, metavar="N",
                   help="with --tuned: configurations tried per model (default 16; see recofast tune)")
    p.add_argument("--save-options", default=None, metavar="TOML",
                   help="with --tuned: also write the chosen options there (one recofast model's go to [engine.model])")
    p.add_argument("--default-event", default="purchase", help="event type when the log has no event column (default: purchase)")
    p.add_argument("--limit", type=int, default=None, help="use only the first N events")
    p.add_argument("--json", default=None, metavar="FILE", help="also write the results as JSON to FILE")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


PEER_FLAGS = {  # flag dest -> (peer, keyword)
    "knn_window": ("itemknn", "window"),
    "ease_items": ("ease", "max_items"), "ease_lambda": ("ease", "lam"), "ease_history": ("ease", "history"),
    "session_gap": ("sknn", "gap"), "sknn_window": ("sknn", "window"), "sknn_sample": ("sknn", "sample"),
    "sknn_k": ("sknn", "k"),
}


def add_peer_arguments(p: argparse.ArgumentParser) -> None:
    """The peers' options (None unless given, so an options file can set them)."""
    d = PEER_DEFAULTS
    p.add_argument("--knn-window", type=int, default=None, metavar="N",
                   help=f"itemknn's co-occurrence window in items (default {d['itemknn']['window']})")
    p.add_argument("--ease-items", type=int, default=None, metavar="N",
                   help=f"ease fits over the N most popular items (default {d['ease']['max_items']:,}; a fit of "
                        "2,000 takes ≈ 0.5 s here, 5,000 ≈ 4 s)")
    p.add_argument("--ease-lambda", type=float, default=None, metavar="L",
                   help=f"ease's L2 regularisation λ on the item-item weights (default {d['ease']['lam']:g})")
    p.add_argument("--ease-history", type=int, default=None, metavar="N",
                   help="ease scores a user's latest N distinct items (default 0: all of their history)")
    p.add_argument("--session-gap", type=float, default=None, metavar="SECONDS",
                   help=f"sknn: a gap longer than this between a user's events starts a new session (default {d['sknn']['gap']:g})")
    p.add_argument("--sknn-window", type=int, default=None, metavar="N",
                   help="sknn compares the latest N distinct items of the current session (default 0: all of it)")
    p.add_argument("--sknn-sample", type=int, default=None, metavar="N",
                   help=f"sknn compares the N most recently updated sessions sharing an item (default {d['sknn']['sample']})")
    p.add_argument("--sknn-k", type=int, default=None, metavar="K",
                   help=f"sknn: the K most similar of them vote (default {d['sknn']['k']})")


def resolve_peers(args: argparse.Namespace, from_file: dict[str, dict[str, Any]] | None = None) -> dict[str, dict[str, Any]]:
    """The peers' keyword arguments: defaults, then the options file, then the flags given.
    Raises ValueError for a value out of range."""
    peers = {n: dict(v) for n, v in PEER_DEFAULTS.items()}
    for n, v in (from_file or {}).items():
        peers[n].update(v)
    for dest, (peer, kw) in PEER_FLAGS.items():
        v = getattr(args, dest, None)
        if v is not None:
            peers[peer][kw] = v
    checks = [("knn-window", peers["itemknn"]["window"], 1), ("ease-items", peers["ease"]["max_items"], 1),
              ("sknn-sample", peers["sknn"]["sample"], 1), ("sknn-k", peers["sknn"]["k"], 1),
              ("ease-history", peers["ease"]["history"], 0), ("session-gap", peers["sknn"]["gap"], 0),
              ("sknn-window", peers["sknn"]["window"], 0)]
    for flag, v, lo in checks:
        if v < lo:
            raise ValueError(f"--{flag} must be {'a positive integer' if lo else '≥ 0'}, got {v}")
    if peers["ease"]["lam"] <= 0:
        raise ValueError(f"--ease-lambda must be > 0, got {peers['ease']['lam']}")
    return peers


def explicit_peers(args: argparse.Namespace, from_file: dict[str, dict[str, Any]] | None = None) -> dict[str, dict[str, Any]]:
    """The peers' options set by the options file or a flag (not the defaults)."""
    out = {n: dict(v) for n, v in (from_file or {}).items()}
    for dest, (peer, kw) in PEER_FLAGS.items():
        if getattr(args, dest, None) is not None:
            out.setdefault(peer, {})[kw] = getattr(args, dest)
    return out


def split_point(value: float, n: int, flag: str = "--test-from") -> int:
    """An event index from a count, or a fraction of `n` when below 1."""
    if value < 0:
        raise ValueError(f"{flag} must be ≥ 0, got {value:g}")
    if 0 < value < 1:
        return max(1, round(value * n))
    if value != int(value):
        raise ValueError(f"{flag} takes an event count or a fraction below 1, got {value:g}")
    if value >= n and n:
        raise ValueError(f"{flag} {int(value):,} leaves no events to test of {n:,}")
    return int(value)


def run(args: argparse.Namespace) -> int:
    if args.k <= 0:
        raise ValueError(f"--k must be a positive integer, got {args.k}")
    names = [n.strip() for n in args.model.split(",") if n.strip()]
    unknown = [n for n in names if n not in ALL_MODELS + EXTRA_MODELS]
    if unknown:
        raise ValueError(f"unknown model {unknown[0]!r}; choose from {', '.join(ALL_MODELS + EXTRA_MODELS)}")
    for opt in ("explore", "cold_events", "new_item_window"):
        if getattr(args, opt) < 0:
            raise ValueError(f"--{opt.replace('_', '-')} must be ≥ 0, got {getattr(args, opt)}")
    if args.budget <= 0:
        raise ValueError(f"--budget must be a positive integer, got {args.budget}")
    file_options, file_peers = read_options_file(args.options_file) if args.options_file else ({}, {})
    options = {**file_options, **parse_options(args.option)}
    peers = resolve_peers(args, file_peers)
    fields = [f.strip() for f in args.context.split(",") if f.strip()]
    if fields == ["all"]:
        fields = list(CONTEXT_ALL)
    catalog = read_catalog(args.items) if args.items else None
    keep = tuple(f for f in fields if f not in ("hour", "weekday"))
    log = read_events(args.events, limit=args.limit, keep=keep)
    contexts = event_contexts(log, fields)
    test_from = split_point(args.test_from or (0.3 if args.tuned else 0.0), len(log))
    t0 = time.perf_counter()
    tuned: list[TuneResult] = []
    if args.tuned:
        for name in names:
            if name not in TUNABLE:
                continue
            # What the command line or the options file set is kept fixed; the rest is searched.
            base = options if name.startswith("recofast") else explicit_peers(args, file_peers).get(name, {})
            tuned.append(tune(log, name, prefix_events=test_from, budget=args.budget, k=args.k, base=base,
                              catalog=catalog, contexts=contexts, explore=args.explore,
                              default_event=args.default_event, progress=not args.no_progress))
        print(f"tuned on events 0 to {test_from:,} of {len(log):,} (Recall@{args.k} of each model on them):")
        for r in tuned:
            gain = f", defaults {r.default_score:.4f}" if r.default_score is not None else ""
            print(f"  {r.model:<15}{r.score:.4f}{gain}: {' '.join(f'{k}={v}' for k, v in r.best.items())} "
                  f"({r.seconds:.0f} s)")
    chosen = {r.model: r.options for r in tuned}
    models = []
    for name in names:
        if name in chosen:
            models.append(build_model(name, chosen[name], catalog, args.explore, build_models))
        elif name.startswith("recofast"):
            models += build_models([name], options, catalog, explore=args.explore)
        else:
            models += build_models([name], options, catalog, peers["itemknn"]["window"], args.explore, peers)
    t1 = time.perf_counter()
    scores = prequential(log, models, k=args.k, default_event=args.default_event, progress=not args.no_progress,
                         contexts=contexts, catalog=catalog, cold_events=args.cold_events,
                         new_item_window=args.new_item_window, test_from=test_from)
    if test_from:
        print(f"scored on events {test_from:,} to {len(log):,} (the models learned the events before untested)")
    table = format_table(scores, args.k, args.cold_events, args.new_item_window)
    print(table)
    print(f"evaluation {time.perf_counter() - t1:.0f} s" + (f", tuning {t1 - t0:.0f} s" if tuned else ""))
    for m in models:
        if isinstance(m, EASE) and m.fits:
            print(f"ease: {m.fits} fits over up to {m.max_items:,} items, {m.fit_seconds / m.fits:.2f} s each on average "
                  f"(XᵀX {m.gram_seconds / m.fits:.2f} s, inversion {(m.fit_seconds - m.gram_seconds) / m.fits:.2f} s)")
    if args.save_options and tuned:
        rec = [r for r in tuned if r.model.startswith("recofast")][:1]
        text = tuned_toml(rec + [r for r in tuned if not r.model.startswith("recofast")],
                          comment=f"recofast eval --tuned on {args.events}, tuned on events 0 to {test_from:,}")
        with open(args.save_options, "w") as f:
            f.write(text)
        print(f"wrote {args.save_options}")
    if args.json:
        d = os.path.dirname(args.json)
        if d:
            os.makedirs(d, exist_ok=True)
        with open(args.json, "w") as f:
            json.dump({
                "events_file": os.fspath(args.events), "events": len(log), "k": args.k,
                "seconds": time.perf_counter() - t0, "options": options, "options_file": args.options_file,
                "items_file": args.items, "knn_window": peers["itemknn"]["window"], "peers": peers, "context": fields,
                "explore": args.explore, "cold_events": args.cold_events, "new_item_window": args.new_item_window,
                "test_from": test_from,
                "tuned": [{"model": r.model, "chosen": r.best, "options": r.options, "score": r.score,
                           "default_score": r.default_score, "seconds": r.seconds,
                           "trials": [{"options": t.options, "scores": t.scores} for t in r.trials]} for r in tuned],
                "scores": [asdict(s) for s in scores],
            }, f, indent=2)
        print(f"wrote {args.json}")
    return 0
