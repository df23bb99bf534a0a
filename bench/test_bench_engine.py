"""Engine throughput and freshness, with a real nats-server and the publisher in another
process (``recofast publish``, via ``python -m recofast.engine.publish``).

Run (about a minute on 2 cores in quick mode)::

    .venv/bin/python -m pytest bench/test_bench_engine.py --benchmark-enable --benchmark-only -p no:randomly -s

Each benchmark prints its figures and stores them in the benchmark's ``extra_info``
(``--benchmark-json FILE`` keeps them). Figures measured on this machine are in
``bench/ENGINE.md``.

* ``consumer``: the bare pull consumer (fetch, msgspec decode, ack per batch) draining a
  backlog, the ceiling the engine's loop works under;
* ``engine_backlog``: the whole engine (decode, dedupe, enrich, learn, top-N of touched
  users, LMDB commit, ack) draining the same backlog;
* ``engine_live``: the engine while the publisher process publishes as fast as it can;
* ``freshness``: event time → list commit at 2,000 and 20,000 events/s (publisher stamps
  ``ts`` when it sends, events packed 10 to a message as the sidecar's collector would); the
  CDF's percentiles go to ``extra_info["cdf_ms"]``.

``RECOFAST_BENCH_MODE=full`` (``recofast bench --full``): 200,000 events and 10 s of freshness
traffic; quick (the default): 100,000 events and 4 s.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

import msgspec
import nats
import numpy as np
import pytest
from conftest import FULL, shop_log
from recofast.engine import Engine
from recofast.engine.config import EngineConfig
from recofast.engine.streams import ensure_streams
from recofast_sidecar.protocol import events as ev
from recofast_sidecar.protocol.names import STREAM

DATA = shop_log()

N_EVENTS = int(os.environ.get("RECOFAST_BENCH_EVENTS", "200000" if FULL else "100000"))
PACK = 100
#: Freshness rates (events/s) and how long each is measured.
FRESH_RATES = [2000, 20000]
FRESH_SECONDS = 10 if FULL else 4
#: The freshness CDF kept in extra_info: these percentiles, in ms.
CDF_PERCENTILES = [1, 5, 10, 25, 50, 75, 90, 95, 99, 99.9]

pytestmark = [pytest.mark.timeout(900), pytest.mark.skipif(not DATA.exists(), reason=f"the shop log is not there: {DATA} (set RECOFAST_SHOP_LOG)")]


def _publisher(url: str, *args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "recofast.cli", "publish", "--events", str(DATA), "--nats", url, "--quiet", *args],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip


def _publish(url: str, *args: str) -> str:
    p = _publisher(url, *args)
    out, _ = p.communicate(timeout=600)
    assert p.returncode == 0, out.decode()
    return out.decode().strip()


def _cfg(tmp: Path, url: str, **kw) -> EngineConfig:  # noqa: ANN003
    base = dict(
        nats=url, lmdb=str(tmp / "lmdb"), model_dir=str(tmp / "models"), refresh_seconds=3600.0,
        batch_size=500, top_n=20, lmdb_map_size=1 << 31, model={"dim": 64, "seed": 1},
    )  # fmt: skip
    base.update(kw)
    return EngineConfig(**base)


async def _drain_engine(cfg: EngineConfig, target_seq: int, timeout: float = 600) -> tuple[float, Engine]:
    async with Engine(cfg) as engine:
        t0 = time.perf_counter()
        task = asyncio.create_task(engine.run())
        deadline = time.monotonic() + timeout
        while engine.applied_seq < target_seq:
            assert time.monotonic() < deadline and not task.done()
            await asyncio.sleep(0.005)
        dt = time.perf_counter() - t0
        engine.request_stop()
        await task
    return dt, engine


async def _last_seq(url: str) -> int:
    async with await nats.connect(url) as nc:
        return (await nc.jetstream().stream_info(STREAM)).state.last_seq


def _report(benchmark, **figures) -> None:  # noqa: ANN001, ANN003
    benchmark.extra_info.update(figures)
    print("\n" + "  ".join(f"{k}={v:,.1f}" if isinstance(v, float) else f"{k}={v}" for k, v in figures.items()))


@pytest.fixture
def backlog(nats_url):  # noqa: ANN001, ANN201
    """The stream filled with N_EVENTS events of the shop log, 100 to a message."""
    out = _publish(nats_url, "--limit", str(N_EVENTS), "--pack", str(PACK))
    return nats_url, asyncio.run(_last_seq(nats_url)), out


@pytest.mark.benchmark(group="engine")
def test_consumer(benchmark, backlog, record_rate):
    url, last, _ = backlog

    async def consume() -> tuple[float, int]:
        decoder = msgspec.json.Decoder(list[ev.Event])
        async with await nats.connect(url) as nc:
            js = nc.jetstream()
            from nats.js.api import AckPolicy, ConsumerConfig

            cfg = ConsumerConfig(ack_policy=AckPolicy.ALL, max_ack_pending=-1)
            sub = await js.pull_subscribe("recofast.events.>", durable="bench", stream=STREAM, config=cfg)
            n = seq = 0
            t0 = time.perf_counter()
            while seq < last:
                msgs = await sub.fetch(500, timeout=5)
                for m in msgs:
                    n += len(decoder.decode(m.data))
                seq = msgs[-1].metadata.sequence.stream
                await msgs[-1].ack()
            dt = time.perf_counter() - t0
            await sub.unsubscribe()
        return dt, n

    dt, n = benchmark.pedantic(lambda: asyncio.run(consume()), rounds=1, iterations=1)
    assert n == N_EVENTS
    _report(benchmark, events=n, seconds=dt, events_per_s=n / dt, msgs_per_s=last / dt)
    record_rate("engine throughput", "bare consumer (backlog)", n / dt)


@pytest.mark.benchmark(group="engine")
def test_engine_backlog(benchmark, backlog, tmp_path, record_rate):
    url, last, _ = backlog
    dt, engine = benchmark.pedantic(lambda: asyncio.run(_drain_engine(_cfg(tmp_path, url), last)), rounds=1, iterations=1)
    assert engine.counters["events_applied_total"] == N_EVENTS
    _report(
        benchmark, events=N_EVENTS, seconds=dt, events_per_s=N_EVENTS / dt, users=engine.model.n_users,
        list_writes=engine.metrics.value("recofast_list_writes_total"), batches=engine.metrics.value("recofast_batches_total"),
        learn_s=engine.metrics.value("recofast_learn_seconds_sum"), lists_s=engine.metrics.value("recofast_list_compute_seconds_sum"), commit_s=engine.metrics.value("recofast_lmdb_commit_seconds_sum"),
    )  # fmt: skip
    record_rate("engine throughput", "engine (backlog)", N_EVENTS / dt)


@pytest.mark.benchmark(group="engine")
def test_engine_live(benchmark, nats_url, tmp_path, record_rate):
    """The publisher process and the engine run at once; the clock runs from the engine's
    start to the last event applied."""

    async def run() -> tuple[float, int, Engine, str]:
        async with await nats.connect(nats_url) as nc:
            await ensure_streams(nc.jetstream())
        cfg = _cfg(tmp_path, nats_url)
        async with Engine(cfg) as engine:
            task = asyncio.create_task(engine.run())
            pub = _publisher(nats_url, "--limit", str(N_EVENTS), "--pack", str(PACK))
            while engine.counters["events_applied_total"] == 0:
                await asyncio.sleep(0.001)
            t0, first = time.perf_counter(), engine.counters["events_applied_total"]
            while pub.poll() is None:
                await asyncio.sleep(0.005)
            out = pub.stdout.read().decode() if pub.stdout else ""
            if pub.stdout:
                pub.stdout.close()
            last = await _last_seq(nats_url)
            while engine.applied_seq < last:
                assert not task.done()
                await asyncio.sleep(0.005)
            dt = time.perf_counter() - t0
            engine.request_stop()
            await task
        return dt, first, engine, out

    dt, first, engine, out = benchmark.pedantic(lambda: asyncio.run(run()), rounds=1, iterations=1)
    assert engine.counters["events_applied_total"] == N_EVENTS
    # Rate from the first commit to the last: the events of the first batch are not counted.
    _report(benchmark, events=N_EVENTS - first, seconds=dt, events_per_s=(N_EVENTS - first) / dt, publisher=out.strip())
    record_rate("engine throughput", "engine (live publisher)", (N_EVENTS - first) / dt)


@pytest.mark.benchmark(group="engine")
@pytest.mark.parametrize("rate", FRESH_RATES)
@pytest.mark.parametrize("refresh", ["no-refresh", "refresh-2s"])
def test_freshness(benchmark, nats_url, tmp_path, refresh, rate):
    """Events at ``rate``/s (2,000 and 20,000), 10 to a message, stamped when sent; the engine measures event
    time → LMDB commit for each. The model is warmed on the first 100k events of the log.
    ``refresh-2s`` runs the periodic round (all users' lists, segments, checkpoint) every
    2 s during the measurement, in steps (100 users, segments, checkpoint) between batches."""

    async def run() -> tuple[np.ndarray, Engine]:
        warm = _publish(nats_url, "--limit", "100000", "--pack", str(PACK))
        last = await _last_seq(nats_url)
        periodic = {"refresh_seconds": 2.0} if refresh == "refresh-2s" else {}
        cfg = _cfg(tmp_path, nats_url, batch_size=200, fetch_timeout=0.05, **periodic)
        async with Engine(cfg) as engine:
            task = asyncio.create_task(engine.run())
            while engine.applied_seq < last:
                await asyncio.sleep(0.01)
            engine.freshness.clear()
            n = rate * FRESH_SECONDS
            # Events 100,001.. of the log, as live traffic.
            pub = _publisher(nats_url, "--skip", "100000", "--limit", str(n), "--pack", "10", "--rate", str(rate), "--stamp-now")
            while pub.poll() is None:
                await asyncio.sleep(0.05)
            if pub.stdout:
                pub.stdout.close()
            last = await _last_seq(nats_url)
            while engine.applied_seq < last:
                await asyncio.sleep(0.01)
            engine.request_stop()
            await task
        assert warm
        return np.array(engine.freshness), engine

    fresh, engine = benchmark.pedantic(lambda: asyncio.run(run()), rounds=1, iterations=1)
    assert len(fresh) >= rate * FRESH_SECONDS * 0.99
    p50, p90, p99 = (np.percentile(fresh, q) * 1000 for q in (50, 90, 99))
    benchmark.extra_info["cdf_ms"] = {str(q): float(np.percentile(fresh, q) * 1000) for q in CDF_PERCENTILES}
    _report(
        benchmark, events=len(fresh), rate=rate, p50_ms=p50, p90_ms=p90, p99_ms=p99, max_ms=float(fresh.max() * 1000),
        checkpoints=engine.metrics.value("recofast_checkpoints_total"),
    )  # fmt: skip
