"""Bounded memory, measured: streams events through `learn_many` in chunks with the caps on
and `expire()` called periodically, sampling the process's RSS (/proc/self/statm), and
measures the memory of one user, item and context key, and the cost of junk items in a
recommendation before and after they are retired.

    .venv/bin/python bench/memory_stream.py stream --events 10000000 --users 1000000
    .venv/bin/python bench/memory_stream.py per-row
    .venv/bin/python bench/memory_stream.py junk --junk 1000000

`bench/test_bench_memory.py` runs small versions of the same functions under
pytest-benchmark (`--benchmark-enable`).
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np
import recofast

DAY = 86_400.0
PAGE = os.sysconf("SC_PAGE_SIZE")


def rss_mib() -> float:
    """Resident memory of this process, in MiB."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE / 2**20


def stream(events: int = 10_000_000, users: int = 1_000_000, items: int = 50_000, junk_share: float = 0.05,
           chunk: int = 100_000, expire_every: int = 1_000_000, days: float = 120.0, dim: int = 64,
           max_users: int = 200_000, user_idle_days: float = 14.0, item_idle_days: float = 7.0,
           seed: int = 1, limits: bool = True, log=print) -> dict:
    """Streams `events` events over `users` users (uniform), `items` real items (shop-like
    popularity) and unique junk items (`junk_share` of the events), with event times spread
    evenly over `days` days, through `learn_many` in chunks; calls `expire()` every
    `expire_every` events (`limits=False`: no cap, no idle expiry or retirement, the
    comparison). Returns the RSS curve and the final counts."""
    rng = np.random.default_rng(seed)
    if limits:
        opts = {"max_users": max_users, "user_idle": user_idle_days * DAY, "item_idle": item_idle_days * DAY}
    else:
        opts = {"max_users": 0, "user_idle": 0, "item_idle": 0}
    rec = recofast.Recommender(dim=dim, seed=seed, **opts)
    w = 1.0 / (np.arange(items) + 10.0)
    p = w / w.sum()
    curve = [(0, rss_mib(), 0, 0)]
    evicted = 0
    retired = 0
    junk_next = 10**9
    t0 = time.perf_counter()
    learn_s = 0.0
    for start in range(0, events, chunk):
        n = min(chunk, events - start)
        u = rng.integers(0, users, n)
        i = rng.choice(items, size=n, p=p)
        is_junk = rng.random(n) < junk_share
        k = int(is_junk.sum())
        i[is_junk] = np.arange(junk_next, junk_next + k)
        junk_next += k
        ts = (start + np.arange(n)) * (days * DAY / events)
        t = time.perf_counter()
        rec.learn_many(u, i, ts=ts)
        learn_s += time.perf_counter() - t
        done = start + n
        if done % expire_every == 0 or done == events:
            evicted += len(rec.expire())
            retired += len(rec.last_expired["items"])
            info = rec.memory_info()
            curve.append((done, rss_mib(), info["users"], info["items"]))
            log(f"{done:>11,} events  RSS {curve[-1][1]:8.1f} MiB  users {info['users']:>9,}  "
                f"items {info['items']:>9,}  (rows {info['user_rows']:,} / {info['item_rows']:,})  "
                f"evicted {evicted:,}  retired {retired:,}")
    return {"curve": curve, "evicted": evicted, "retired": retired, "seconds": time.perf_counter() - t0,
            "learn_events_per_s": events / learn_s, "final": rec.memory_info()}


def per_row_one(kind: str, n: int, dim: int = 64) -> float:
    """RSS growth per row of one kind ("user", "item" or "context") in a fresh model: `n`
    users with one event each (on one item), `n` items with one event each (by one user,
    snapshot included), or `n` context keys (admitted at once). Run it in a fresh process:
    memory freed earlier in the same process is reused without showing in RSS."""
    opts = {"user": {"max_users": 0}, "item": {}, "context": {"ctx_min_count": 1, "max_context_keys": 0}}[kind]
    rec = recofast.Recommender(dim=dim, **opts)
    rec.learn_one("warm", "warm")
    ids = np.arange(n)
    step = 100_000 if kind != "context" else 10_000
    batches = []
    for s in range(0, n, step):
        m = min(step, n - s)
        if kind == "context":
            batches.append([f"segment-{k}" for k in range(s, s + m)])
    base = rss_mib()
    for k, s in enumerate(range(0, n, step)):
        m = min(step, n - s)
        if kind == "user":
            rec.learn_many(ids[s:s + m], np.zeros(m, dtype=np.int64))
        elif kind == "item":
            rec.learn_many(np.zeros(m, dtype=np.int64), ids[s:s + m])
        else:
            rec.learn_many(["u"] * m, ["i"] * m, context={"segment": batches[k]})
    rec.refresh()
    return (rss_mib() - base) * 2**20 / n


def per_row(n: int = 1_000_000, dim: int = 64, keys: int = 100_000, log=print) -> dict:
    """RSS growth per user, per item and per context key, each measured in its own process."""
    import subprocess
    import sys

    out = {}
    for kind, count in [("user", n), ("item", n), ("context", keys)]:
        r = subprocess.run([sys.executable, __file__, "per-row-one", "--kind", kind, "--n", str(count), "--dim", str(dim)],
                           check=True, capture_output=True, text=True)
        out[f"{kind}_bytes"] = float(r.stdout.strip().splitlines()[-1])
    out["context_key_bytes"] = out.pop("context_bytes")
    log(f"per user {out['user_bytes']:.0f} B, per item {out['item_bytes']:.0f} B (with the scoring snapshot), "
        f"per context key {out['context_key_bytes']:.0f} B  (dim {dim})")
    return out


def junk(real: int = 5_000, junk_items: int = 1_000_000, dim: int = 64, calls: int = 200, log=print) -> dict:
    """Median recommend latency with `real` live items, then after `junk_items` one-event
    items arrived, then after `expire()` retired them."""
    rng = np.random.default_rng(2)
    rec = recofast.Recommender(dim=dim, seed=2, item_idle=30 * DAY, snapshot_ms=0)
    n = 200_000
    rec.learn_many(rng.integers(0, 20_000, n), rng.integers(0, real, n), ts=np.linspace(0, DAY, n))

    def median_ms() -> float:
        rec.refresh()
        users = rng.integers(0, 20_000, calls)
        times = []
        for u in users:
            t = time.perf_counter()
            rec.recommend(int(u), k=10)
            times.append(time.perf_counter() - t)
        return float(np.median(times) * 1e3)

    out = {"live_only_ms": median_ms()}
    for s in range(0, junk_items, 100_000):
        m = min(100_000, junk_items - s)
        rec.learn_many(rng.integers(0, 20_000, m), np.arange(10**9 + s, 10**9 + s + m), ts=np.full(m, 2 * DAY))
    rec.learn_many(rng.integers(0, 20_000, n), rng.integers(0, real, n), ts=np.full(n, 40 * DAY))
    out["with_junk_ms"] = median_ms()
    t = time.perf_counter()
    rec.expire()
    out["expire_s"] = time.perf_counter() - t
    out["retired"] = len(rec.last_expired["items"])
    out["after_retire_ms"] = median_ms()
    out["items_after"] = rec.n_items
    log(f"recommend median: {out['live_only_ms']:.3f} ms with {real:,} items; {out['with_junk_ms']:.3f} ms with "
        f"{junk_items:,} junk items more; {out['after_retire_ms']:.3f} ms after expire() retired "
        f"{out['retired']:,} of them in {out['expire_s']:.2f} s")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("stream")
    s.add_argument("--events", type=int, default=10_000_000)
    s.add_argument("--users", type=int, default=1_000_000)
    s.add_argument("--items", type=int, default=50_000)
    s.add_argument("--junk-share", type=float, default=0.05)
    s.add_argument("--max-users", type=int, default=200_000)
    s.add_argument("--expire-every", type=int, default=1_000_000)
    s.add_argument("--no-limits", action="store_true", help="no cap, no expiry (the comparison)")
    s.add_argument("--json")
    r = sub.add_parser("per-row")
    r.add_argument("--n", type=int, default=1_000_000)
    o = sub.add_parser("per-row-one")
    o.add_argument("--kind", choices=["user", "item", "context"], required=True)
    o.add_argument("--n", type=int, default=1_000_000)
    o.add_argument("--dim", type=int, default=64)
    j = sub.add_parser("junk")
    j.add_argument("--junk", type=int, default=1_000_000)
    a = ap.parse_args()
    if a.cmd == "stream":
        out = stream(a.events, a.users, a.items, a.junk_share, expire_every=a.expire_every, max_users=a.max_users,
                     limits=not a.no_limits)
        print(f"learn_many {out['learn_events_per_s']:,.0f} events/s, {out['seconds']:.0f} s in all")
        if a.json:
            with open(a.json, "w") as f:
                json.dump(out, f, indent=1)
    elif a.cmd == "per-row":
        per_row(a.n)
    elif a.cmd == "per-row-one":
        print(per_row_one(a.kind, a.n, a.dim))
    else:
        junk(junk_items=a.junk)


if __name__ == "__main__":
    main()
