"""Runs one command module on its own (``python -m recofast.engine serve ...``), without
assembling the whole ``recofast`` CLI."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Any


def run_module(register: Callable[[Any], None], argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="recofast")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    register(sub)
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130
    except (ValueError, FileNotFoundError) as e:
        print(f"recofast {args.command}: error: {e}", file=sys.stderr)
        return 2
