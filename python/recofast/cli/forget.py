"""``recofast forget``: erase users (the right to erasure)."""

from __future__ import annotations

import asyncio
import sys

from recofast.engine.erasure import forget


def _cmd_forget(args) -> int:  # noqa: ANN001

    users = list(args.users)
    for u in users:
        if not u or len(u.encode("utf-8", "surrogatepass")) > 256:
            raise ValueError(f"not a user id: {u!r}")
    got = asyncio.run(forget(args.nats, users, wait=args.wait))
    missing = [u for u in users if u not in got]
    for u in got:
        print(f"forgotten: {u}" if args.wait > 0 else f"forget request stored: {u}")
    if missing:
        print(
            f"not confirmed within {args.wait:g} s (the request is stored in the stream and is applied when the "
            f"engine reaches it): {', '.join(missing)}",
            file=sys.stderr,
        )
        return 1
    return 0


def register(sub) -> None:  # noqa: ANN001
    """Adds ``recofast forget``."""
    p = sub.add_parser(
        "forget",
        help="erase users (the right to erasure): model, lists, KV bucket, edges and checkpoints",
        description="Publishes a forget request for each USER into the event stream. The engine applies it in "
        "stream order: the user disappears from the model, the LMDB lists, the KV bucket (and so the --sync edges) "
        "and every kept checkpoint, and their events are never learned again, also on a replay. Waits for the "
        "engine's confirmation (exit 1 if it does not come in time; the request stays stored and is applied later).",
    )
    p.add_argument("users", nargs="+", metavar="USER", help="user id(s) to erase")
    p.add_argument("--nats", required=True, help="NATS URL of the engine's server (see <nats_data_dir>/url for an embedded one)")
    p.add_argument("--wait", type=float, default=30.0, help="seconds to wait for the engine's confirmation; 0 = do not wait (default 30)")
    p.set_defaults(func=_cmd_forget)
