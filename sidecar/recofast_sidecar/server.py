"""The command ``recofast-sidecar``: options from the defaults, ``--config``, the environment
and the flags (:mod:`recofast_sidecar.config`), then one server process, or ``--processes N``
sharing the port (SO_REUSEPORT) under a supervisor that stops them on SIGTERM or SIGINT.

``recofast-sidecar --lmdb DIR [--port 8080] [--nats URL]``; the app itself is
:func:`recofast_sidecar.app.create_app`.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Mapping
from typing import Any

from aiohttp import web

from recofast_sidecar.app import create_app
from recofast_sidecar.config import SidecarConfig, load_config
from recofast_sidecar.metrics import MULTIPROC_ENV
from recofast_sidecar.protocol.names import LISTS_BUCKET


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="recofast-sidecar",
        description="Serve recofast recommendation lists from a local LMDB store, with filters, "
        "context, diversity, exploration and fallbacks; accept events and publish them to NATS. "
        "Options come from the defaults, then --config, then RECOFAST_SIDECAR_<OPTION> variables, then these flags.",
    )
    p.add_argument("--config", metavar="FILE", help="TOML file with a [sidecar] table (see sidecar/recofast-sidecar.toml)")
    p.add_argument("--lmdb", metavar="DIR", help="the list store the engine writes (opened read-only; retried while missing)")
    p.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, help="port to listen on (default 8080)")
    p.add_argument("--nats", metavar="URL", help="NATS URL for POST /v1/events and impressions (without it, events answer 503)")
    p.add_argument("--partitions", type=int, help="publish events to recofast.events.p0..pN-1 by user (default 1)")
    p.add_argument("--fallback", metavar="IDS", help="comma-separated item ids served when no list can be read")
    p.add_argument("--cors", action="append", metavar="ORIGIN", help="allow this CORS origin (repeatable; * for any)")
    p.add_argument("--max-body", type=int, metavar="BYTES", help="largest request body (default 262144)")
    p.add_argument("--processes", type=int, metavar="N", help="server processes sharing the port (default 1)")
    p.add_argument(
        "--sync", action="store_true", default=None,
        help=f"mirror the list store from the NATS KV bucket {LISTS_BUCKET} into --lmdb (needs --nats; this sidecar then writes its own store)",
    )
    p.add_argument("--no-impressions", action="store_true", help="do not publish served lists to recofast.impressions")
    p.add_argument("--log-level", default="INFO", help="logging level (default INFO)")
    p.epilog = (
        "User tokens: set RECOFAST_SIDECAR_TOKEN_SECRET; then GET /v1/recommendations/{user} needs "
        "hex(HMAC-SHA256(secret, user)) as a Bearer token or ?token=."
    )
    return p


def config_from_args(args: argparse.Namespace, env: Mapping[str, str] | None = None) -> SidecarConfig:
    """The configuration a command line asks for (file, environment, then flags)."""
    overrides = {
        "lmdb": args.lmdb,
        "host": args.host,
        "port": args.port,
        "nats": args.nats,
        "partitions": args.partitions,
        "fallback_items": [x for x in args.fallback.split(",") if x] if args.fallback is not None else None,
        "cors_origins": tuple(args.cors) if args.cors else None,
        "max_body": args.max_body,
        "processes": args.processes,
        "sync": args.sync,
        "impressions": False if args.no_impressions else None,
    }
    try:
        cfg = load_config(args.config, env, overrides)
    except (OSError, ValueError) as e:
        raise SystemExit(f"recofast-sidecar: {e}") from None
    if not cfg.lmdb:
        raise SystemExit("recofast-sidecar: give --lmdb DIR (or lmdb in the [sidecar] table)")
    return cfg


def _serve(cfg: SidecarConfig, log_level: str, reuse_port: bool, ready: Any = None) -> None:
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(process)d %(levelname)s %(name)s: %(message)s")
    app = create_app(cfg)
    if ready is not None:
        async def started(app: web.Application) -> None:
            ready.set()

        app.on_startup.append(started)
    web.run_app(app, host=cfg.host, port=cfg.port, reuse_port=reuse_port or None, print=None, access_log=None,
                loop=_event_loop())


def _event_loop() -> Any:
    """uvloop's event loop where it is installed (a dependency on Linux and macOS: its
    transports write answers in C), else None (asyncio's)."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop()


def _supervise(cfg: SidecarConfig, log_level: str) -> int:
    """Runs ``cfg.processes`` server processes on the port until SIGTERM or SIGINT; their
    metrics meet in a temporary folder (removed at the end), so each serves all of them."""
    import multiprocessing
    import signal

    metrics_dir = tempfile.mkdtemp(prefix="recofast-sidecar-metrics-")
    os.environ[MULTIPROC_ENV] = metrics_dir  # read by prometheus_client in each child as it starts
    try:
        ctx = multiprocessing.get_context("spawn")
        ready = [ctx.Event() for _ in range(cfg.processes)]
        procs = [
            ctx.Process(target=_serve, args=(cfg, log_level, True, ready[i]), name=f"recofast-sidecar-{i}")
            for i in range(cfg.processes)
        ]
        for p in procs:
            p.start()

        def stop(signum: int, frame: object) -> None:
            deadline = time.monotonic() + 30.0
            for p, r in zip(procs, ready):
                # A child still starting would die of the interrupt in its imports: let it
                # finish starting first (up to 30 s; it then shuts down gracefully, draining NATS).
                while p.is_alive() and not r.wait(0.1) and time.monotonic() < deadline:
                    pass
                if p.is_alive() and p.pid is not None:
                    os.kill(p.pid, signal.SIGINT)

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        for p in procs:
            p.join()
        return max((p.exitcode or 0) for p in procs)
    finally:
        os.environ.pop(MULTIPROC_ENV, None)
        shutil.rmtree(metrics_dir, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    cfg = config_from_args(args)
    if cfg.processes == 1:
        _serve(cfg, args.log_level, False)
        return 0
    return _supervise(cfg, args.log_level)


__all__ = ["config_from_args", "main"]


if __name__ == "__main__":
    raise SystemExit(main())
