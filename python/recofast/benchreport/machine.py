"""What the report says about the machine and the peers: CPU model, cores, SIMD level,
measured read bandwidth, memory, load, and the peers' versions and BLAS kernels."""

from __future__ import annotations

import importlib.metadata as md
import os
import platform
import shutil
import subprocess
import time
import warnings
from typing import Any

import numpy as np

#: Distributions whose versions the report lists.
PEERS = ["recofast", "numpy", "scipy", "river", "faiss-cpu", "implicit", "usearch", "threadpoolctl",
         "aiohttp", "nats-py", "lmdb", "msgspec", "pytest-benchmark", "matplotlib"]  # fmt: skip


def _cpuinfo() -> dict[str, str]:
    out: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if ":" in line:
                    k, v = (x.strip() for x in line.split(":", 1))
                    out.setdefault(k, v)
    except OSError:
        pass
    return out


def _meminfo_gib() -> float | None:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) / 2**20
    except OSError:
        pass
    return None


def read_bandwidth_gbs(mib: int = 512, rounds: int = 5) -> float:
    """One thread's read bandwidth in GB/s: the best of ``rounds`` plain sums over a
    ``mib``-MiB float32 matrix (recofast's ``kernels.read_bandwidth``, the top-K line)."""
    from recofast import kernels

    a = np.ones((mib * 2**20 // 256, 64), dtype=np.float32)
    kernels.read_bandwidth(a)
    best = min(_timed(kernels.read_bandwidth, a) for _ in range(rounds))
    return a.nbytes / best / 1e9


def _timed(fn, *args) -> float:  # noqa: ANN001
    t = time.perf_counter()
    fn(*args)
    return time.perf_counter() - t


def machine_info(bandwidth: bool = True) -> dict[str, Any]:
    import recofast

    cpu = _cpuinfo()
    flags = set(cpu.get("flags", "").split())
    info = recofast.build_info()
    return {
        "hostname": platform.node(),
        "cpu": cpu.get("model name") or platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "cpu_flags": sorted(f for f in flags if f.startswith(("avx", "fma", "sse4", "neon", "amx"))),
        "simd": info.get("simd"),
        "simd_available": info.get("simd_available"),
        "build": info.get("profile"),
        "memory_gib": _meminfo_gib(),
        "read_bandwidth_gbs": read_bandwidth_gbs() if bandwidth else None,
        "load_average": list(os.getloadavg()),
        "python": platform.python_version(),
        "os": platform.platform(),
        "openblas_coretype_unset": True,
    }


def peers_info() -> dict[str, Any]:
    """Versions of the peers and tools, and the BLAS / OpenMP libraries threadpoolctl sees
    once numpy, faiss and implicit are loaded."""
    versions = {}
    for name in PEERS:
        try:
            versions[name] = md.version(name)
        except md.PackageNotFoundError:
            versions[name] = None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for mod in ("faiss", "implicit.cpu.als", "scipy.linalg"):
            try:
                __import__(mod)
            except Exception:  # noqa: BLE001 - a missing peer is listed as missing
                pass
    from threadpoolctl import threadpool_info

    blas = [
        {k: i.get(k) for k in ("user_api", "internal_api", "version", "architecture", "num_threads", "threading_layer")}
        | {"library": os.path.basename(i.get("filepath", ""))}
        for i in threadpool_info()
    ]
    tools = {}
    if shutil.which("wrk"):
        out = subprocess.run(["wrk", "-v"], capture_output=True, text=True).stdout.splitlines()
        tools["wrk"] = out[0] if out else "?"
    try:
        from recofast.engine.natsserver import find_nats_server as binary

        tools["nats-server"] = subprocess.run([binary(), "--version"], capture_output=True, text=True, timeout=10).stdout.strip()
    except Exception:  # noqa: BLE001
        pass
    return {"versions": versions, "threadpools": blas, "tools": tools}
