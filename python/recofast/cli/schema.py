"""``recofast schema check``: events against the schema registry."""

from __future__ import annotations

import argparse
import asyncio
import sys

from recofast_sidecar.protocol import events

from recofast.engine.streams import check_file, registry_versions


def _cmd_check(args: argparse.Namespace) -> int:
    accepted = events.ACCEPTED_VERSIONS
    if args.nats:
        accepted = asyncio.run(registry_versions(args.nats))
        if not accepted:
            print("the schema registry is empty: has an engine run on this NATS?", file=sys.stderr)
            return 2
    ok, bad = check_file(args.file, accepted)
    for line, reason in bad[: args.show]:
        print(f"{args.file}:{line}: {reason}")
    if len(bad) > args.show:
        print(f"... and {len(bad) - args.show} more")
    versions = ", ".join(f"v{v}" for v in accepted)
    print(f"{ok} events pass, {len(bad)} fail (accepted versions: {versions})")
    return 1 if bad else 0


def register(sub: argparse._SubParsersAction) -> None:
    """Adds ``recofast schema check``."""
    p = sub.add_parser("schema", help="check events against the schema registry")
    ssub = p.add_subparsers(dest="schema_command", metavar="SUBCOMMAND")
    ssub.required = True
    c = ssub.add_parser("check", help="tell whether the events in a JSON Lines file pass (exit 1 if any fails)")
    c.add_argument("file", help="JSON Lines file (.jsonl or .jsonl.gz), one event or array of events a line")
    c.add_argument("--nats", default=None, help="check against the versions in this NATS's registry (default: this package's)")
    c.add_argument("--show", type=int, default=20, help="how many failures to print (default 20)")
    c.set_defaults(func=_cmd_check)
