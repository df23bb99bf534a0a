"""Memory per million users and per million items, for docs/CAPACITY.md: a fresh
``Recommender(dim=64)`` in its own process learns synthetic events, then this prints
``rec.memory_info()`` and the process's VmRSS / VmHWM (/proc/self/status) before and after.

    .venv/bin/python bench/memory_model.py            # users, items, both; 1M each, dim 64
    .venv/bin/python bench/memory_model.py --n 200000 --dim 32

* ``users``: N users, one event each, all on one item;
* ``items``: N items, one event each, all by one user (then ``refresh()``: the scoring snapshot
  holds the items too);
* ``both``: N users and N items, 2 N uniform random events (each user and item seen about twice).

Each case runs in a fresh process (memory freed earlier in a process is reused without
showing in RSS). No caps: ``max_users=0``, no idle expiry.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

import numpy as np
import recofast


def status_mib() -> dict[str, float]:
    out = {}
    with open("/proc/self/status") as f:
        for line in f:
            k, _, v = line.partition(":")
            if k in ("VmRSS", "VmHWM"):
                out[k] = int(v.split()[0]) / 1024
    return out


def one(kind: str, n: int, dim: int) -> dict:
    rec = recofast.Recommender(dim=dim, seed=1, max_users=0, user_idle=0, item_idle=0)
    rec.learn_one("warm", "warm")
    before = status_mib()
    t0 = time.perf_counter()
    step = 100_000
    ids = np.arange(n, dtype=np.int64)
    rng = np.random.default_rng(1)
    m = 2 * n if kind == "both" else n
    for s in range(0, m, step):
        k = min(step, m - s)
        if kind == "users":
            rec.learn_many(ids[s : s + k], np.zeros(k, dtype=np.int64))
        elif kind == "items":
            rec.learn_many(np.zeros(k, dtype=np.int64), ids[s : s + k])
        else:
            rec.learn_many(rng.integers(0, n, k), rng.integers(0, n, k))
    rec.refresh()
    after = status_mib()
    rss = after["VmRSS"] - before["VmRSS"]
    return {
        "kind": kind,
        "n": n,
        "dim": dim,
        "events": m,
        "seconds": round(time.perf_counter() - t0, 2),
        "rss_before_mib": before["VmRSS"],
        "rss_after_mib": after["VmRSS"],
        "hwm_mib": after["VmHWM"],
        "rss_growth_mib": round(rss, 1),
        "bytes_per_row": round(rss * 2**20 / n),
        "memory_info": rec.memory_info(),
    }


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument(
        "--kind",
        choices=["users", "items", "both"],
        default=None,
        help="one case in this process",
    )
    a = ap.parse_args()
    if a.kind:
        print(json.dumps(one(a.kind, a.n, a.dim)))
        return
    for kind in ("users", "items", "both"):
        r = subprocess.run(
            [
                sys.executable,
                __file__,
                "--kind",
                kind,
                "--n",
                str(a.n),
                "--dim",
                str(a.dim),
            ],
            check=True,
            capture_output=True,
            text=True,
        )
        print(r.stdout.strip().splitlines()[-1], flush=True)


if __name__ == "__main__":
    main()
