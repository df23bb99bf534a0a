"""The schema registry (a NATS KV bucket) and ``recofast schema check``.

The engine registers the event versions it accepts under ``event.v<N>`` (the value is the
version's JSON Schema); a producer checks a file of events (JSON Lines) against the
versions the registry holds, or against this package's versions without ``--nats``.
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import json
import sys
from collections.abc import Iterator
from pathlib import Path

from recofast_sidecar.protocol import events
from recofast_sidecar.protocol.names import SCHEMA_BUCKET

_KEY = "event.v{}"


async def _bucket(js):  # noqa: ANN001, ANN202
    from nats.js.errors import BucketNotFoundError

    try:
        return await js.key_value(SCHEMA_BUCKET)
    except BucketNotFoundError:
        return await js.create_key_value(bucket=SCHEMA_BUCKET, history=1, description="recofast event schema versions")


async def register_versions(js, versions: tuple[int, ...] = events.ACCEPTED_VERSIONS) -> None:  # noqa: ANN001
    """Puts each accepted version and its JSON Schema into the registry bucket."""
    kv = await _bucket(js)
    schema = json.dumps(events.json_schema(), sort_keys=True).encode()
    for v in versions:
        await kv.put(_KEY.format(v), schema)


async def registered_versions(js) -> tuple[int, ...]:  # noqa: ANN001
    """The versions in the registry (empty if the bucket is empty)."""
    from nats.js.errors import NoKeysError

    kv = await _bucket(js)
    try:
        keys = await kv.keys()
    except NoKeysError:
        return ()
    out = []
    for k in keys:
        if k.startswith("event.v") and k[len("event.v") :].isdigit():
            out.append(int(k[len("event.v") :]))
    return tuple(sorted(out))


def _lines(path: Path) -> Iterator[bytes]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        yield from f


def check_file(path: str | Path, accepted: tuple[int, ...]) -> tuple[int, list[tuple[int, str]]]:
    """(events that pass, [(line number, reason)] of those that fail). A line may hold one
    event or a JSON array of events."""
    ok_n = 0
    bad: list[tuple[int, str]] = []
    for n, line in enumerate(_lines(Path(path)), 1):
        line = line.strip()
        if not line:
            continue
        ok, rejected = events.decode_events(line, accepted)
        ok_n += len(ok)
        for r in rejected:
            bad.append((n, r.reason if not line.startswith(b"[") else f"[{r.index}] {r.reason}"))
    return ok_n, bad


async def _registry_versions(url: str) -> tuple[int, ...]:
    import nats

    async with await nats.connect(url, connect_timeout=5, max_reconnect_attempts=1) as nc:
        versions = await registered_versions(nc.jetstream())
        await nc.drain()
        return versions


def _cmd_check(args: argparse.Namespace) -> int:
    accepted = events.ACCEPTED_VERSIONS
    if args.nats:
        accepted = asyncio.run(_registry_versions(args.nats))
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



if __name__ == "__main__":
    import sys

    from recofast._cmd import run_module

    sys.exit(run_module(register))
