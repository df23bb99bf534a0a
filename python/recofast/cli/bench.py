"""``recofast bench``: runs the benchmark suites in ``bench/`` (pytest-benchmark, peers side
by side in one run) and writes ``DIR/REPORT.md`` with PNG plots, the machine and the peers,
the command that reruns each figure, and the raw results in ``DIR/results.json``.

Quick mode (the default) takes under 5 minutes on 2 cores; full mode (``--full``) runs every
size (N up to 10M, every dimension, longer engine and sidecar runs) and takes about an hour.
``--compare A.json B.json`` puts two runs (two machines, or before and after) side by side.
Run it at the root of a recofast checkout."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    from recofast.benchreport.suites import SECTIONS

    p = sub.add_parser("bench", help="run the benchmarks and write a report (REPORT.md, PNGs, results.json)",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--quick", dest="mode", action="store_const", const="quick",
                      help="the small sizes, under 5 minutes on 2 cores (the default)")
    mode.add_argument("--full", dest="mode", action="store_const", const="full",
                      help="every size: top-K to N = 10M, all dimensions, 200k-event engine runs (about an hour)")
    mode.add_argument("--compare", nargs=2, metavar=("A", "B"),
                      help="compare two runs' results.json (or their folders): ratios B / A per figure; runs nothing")
    mode.add_argument("--rewrite", metavar="RESULTS",
                      help="write REPORT.md and the PNGs again from a results.json into --out; runs nothing")
    p.add_argument("--out", default="runs/bench", metavar="DIR",
                   help="the folder for REPORT.md, the PNGs, results.json, raw/ and logs/ (default runs/bench); "
                        "with --compare, where COMPARE.md goes (default: printed only)")
    p.add_argument("--section", action="append", choices=SECTIONS, metavar="NAME",
                   help=f"run only this section (repeatable): {', '.join(SECTIONS)}")
    p.add_argument("--verbose", action="store_true", help="show the suites' pytest output as they run")
    p.set_defaults(func=run, mode=None)


def run(args: argparse.Namespace) -> int:
    from recofast.benchreport import report

    out = Path(args.out)
    if args.compare:
        a, b = (report.load(x) for x in args.compare)
        text = report.compare(a, b, *args.compare)
        print(text)
        if args.out != "runs/bench":
            out.mkdir(parents=True, exist_ok=True)
            (out / "COMPARE.md").write_text(text)
            print(f"wrote {out / 'COMPARE.md'}")
        return 0
    if args.rewrite:
        results = report.load(args.rewrite)
        path = report.write_report(results, out)
        if not (out / "results.json").exists():
            (out / "results.json").write_text(json.dumps(results, indent=1, default=str))
        print(f"wrote {path}")
        return 0
    results = report.run_bench(args.mode or "quick", out, sections=args.section, verbose=args.verbose,
                               progress=lambda s: print(s, flush=True))
    failed = [s for s in results["suites"].values() if s["returncode"] != 0]
    if failed:
        print(f"{len(failed)} suite(s) had failures or errors: {', '.join(s['suite'] for s in failed)} "
              f"(see {out}/logs/); the report shows what ran", file=sys.stderr)
        return 1
    return 0
