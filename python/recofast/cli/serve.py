"""``recofast serve``: run the engine."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from recofast.engine.config import load_config
from recofast.engine.service import serve

log = logging.getLogger("recofast.engine")


def _cmd_serve(args: Any) -> int:

    logging.basicConfig(level=getattr(logging, args.log_level.upper()), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    overrides = {"nats": args.nats, "lmdb": args.lmdb, "model_dir": args.model_dir, "http_port": args.http_port,
                 "partitions": args.partitions, "lease_partitions": args.lease_partitions, "engine_id": args.engine_id}
    cfg = load_config(args.config, overrides=overrides)
    counts = asyncio.run(serve(cfg))
    log.info("stopped: %s", counts)
    return 0


def register(sub: Any) -> None:
    """Adds ``recofast serve``."""
    p = sub.add_parser(
        "serve",
        help="run the engine: NATS JetStream in, learning, LMDB lists out, checkpoints",
        description="Consumes events from the RECOFAST_EVENTS stream, learns, writes each touched "
        "user's list to LMDB, and checkpoints. Without --nats it starts an embedded nats-server. "
        "Options not given here come from the configuration file, then RECOFAST_* variables.",
    )
    p.add_argument("--nats", default=None, help="NATS URL (default: start an embedded nats-server)")
    p.add_argument("--lmdb", default=None, help="LMDB directory for the lists (default data/lmdb)")
    p.add_argument("--model-dir", default=None, help="checkpoint directory (default data/models)")
    p.add_argument("--config", default=None, help="recofast.toml with an [engine] table")
    p.add_argument("--http-port", type=int, default=None, help="serve /healthz and /metrics on this port (default: off)")
    p.add_argument("--partitions", default=None, help='consume only these partitions, e.g. "0-3" or "0,2" (default: all, one consumer)')
    p.add_argument("--lease-partitions", type=int, default=None,
                   help="claim a share of this many partitions through leases in the KV bucket recofast-leases")
    p.add_argument("--engine-id", default=None, help="this engine's name in the leases (default host-pid)")
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"], help="log level (default info)")
    p.set_defaults(func=_cmd_serve)
