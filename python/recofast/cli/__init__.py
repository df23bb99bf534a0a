"""The ``recofast`` command line: one module per command, each with ``register(subparsers)``
(argument parsing, and a call into the library); this module assembles them."""

from __future__ import annotations

import argparse
import importlib
import sys

# Command modules, in the order of `recofast --help`.
_COMMANDS = ["eval", "tune", "train", "serve", "publish", "model", "forget", "schema", "metrics", "report", "up", "simulate", "bench"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="recofast",
        description="Real-time product recommendations: evaluate, train and serve recofast models.",
    )
    parser.add_argument("--version", action="version", version=f"recofast {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in _COMMANDS:
        importlib.import_module(f"recofast.cli.{name}").register(sub)
    return parser


def _version() -> str:
    from recofast import __version__

    return __version__


def main(argv: list[str] | None = None) -> int:
    from recofast.errors import LoopStoreError

    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (ValueError, FileNotFoundError, LoopStoreError) as e:
        print(f"recofast {args.command}: error: {e}", file=sys.stderr)
        return 2


__all__ = ["build_parser", "main"]
