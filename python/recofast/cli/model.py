"""``recofast model list`` and ``recofast model rollback``: the engine's checkpoints."""

from __future__ import annotations

import json
import time
from typing import Any

from recofast.engine.checkpoints import CheckpointStore


def _cmd_list(args: Any) -> int:
    rows = CheckpointStore(args.model_dir, keep=10**9).listing()
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    if not rows:
        print(f"no checkpoints in {args.model_dir}")
        return 0
    print(f"{'version':>8}  {'time (UTC)':19}  {'stream seq':>10}  {'events applied':>14}  note")
    for r in rows:
        if "error" in r:
            print(f"{r['version']:>8}  {'':19}  {'':>10}  {'':>14}  CORRUPT: {r['error']}")
            continue
        t = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(r["time"] or 0))
        note = f"rollback from v{r['rolled_back_from']}" if r.get("rolled_back_from") else ""
        print(f"{r['version']:>8}  {t:19}  {r['stream_seq'] or 0:>10}  {r['events_applied_total'] or 0:>14}  {note}")
    return 0


def _cmd_rollback(args: Any) -> int:
    store = CheckpointStore(args.model_dir, keep=10**9)
    version = int(str(args.version).lstrip("v"))
    if version not in store.versions():
        raise ValueError(f"no checkpoint v{version:06d} in {args.model_dir}")
    cp = store.rollback(version, replay=args.replay)
    print(f"v{cp.version:06d} now holds the model of v{version:06d} (stream seq {cp.manifest['stream_seq']})")
    return 0


def register(sub: Any) -> None:
    """Adds ``recofast model list`` and ``recofast model rollback``."""
    p = sub.add_parser("model", help="list and roll back the engine's checkpoints")
    msub = p.add_subparsers(dest="model_command", metavar="SUBCOMMAND")
    msub.required = True
    ls = msub.add_parser("list", help="list the checkpoints in the model directory")
    ls.add_argument("--model-dir", default="data/models", help="checkpoint directory (default data/models)")
    ls.add_argument("--json", action="store_true", help="print JSON")
    ls.set_defaults(func=_cmd_list)
    rb = msub.add_parser("rollback", help="make an earlier checkpoint's model the newest (stop the engine first)")
    rb.add_argument("version", help="checkpoint version, e.g. 12 or v000012")
    rb.add_argument("--model-dir", default="data/models", help="checkpoint directory (default data/models)")
    rb.add_argument(
        "--replay", action="store_true",
        help="also go back to that checkpoint's stream position, so the engine learns the later events again",
    )  # fmt: skip
    rb.set_defaults(func=_cmd_rollback)
