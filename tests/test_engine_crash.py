"""Crash safety: the engine process is SIGKILLed at random moments while events flow, then
restarted; at the end every published event has been applied exactly once (the counts the
engine keeps in its checkpointed state, and the model's own event count, equal what was
published), and LMDB and every checkpoint are readable."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import nats
import pytest
from recofast.engine.checkpoints import CheckpointStore
from recofast.engine.publish import subject_for
from recofast.engine.streams import ensure_streams
from recofast_sidecar.protocol import events as ev
from recofast_sidecar.protocol import liststore
from recofast_sidecar.protocol.names import MSG_ID_HEADER, STREAM

N_EVENTS = 12_000
PACK = 40
ROUNDS = 6


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _engine(url: str, tmp: Path, log, port: int = 0) -> subprocess.Popen[bytes]:  # noqa: ANN001
    return subprocess.Popen(
        [sys.executable, "-m", "recofast.cli", "serve", "--nats", url, "--lmdb", str(tmp / "lmdb"),
         "--model-dir", str(tmp / "models"), "--config", str(tmp / "recofast.toml"), "--log-level", "warning",
         "--http-port", str(port)],
        stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )  # fmt: skip


def _workload(rng: random.Random) -> tuple[list[tuple[str, bytes]], int, int]:
    """Messages of PACK events; some packs repeat an earlier event id (the engine must drop
    it) and some hold an invalid event (the DLQ gets it). Returns messages, duplicates, bad."""
    msgs: list[tuple[str, bytes]] = []
    dups = bad = 0
    i = 0
    while i < N_EVENTS:
        pack = []
        for _ in range(PACK):
            if i >= N_EVENTS:
                break
            pack.append(ev.encode(ev.make_event(f"e{i}", "view", f"u{rng.randrange(300)}", f"i{rng.randrange(500)}", ts_ms=1_700_000_000_000 + i)))
            i += 1
        if len(msgs) % 7 == 3:
            pack.append(ev.encode(ev.make_event(f"e{rng.randrange(i)}", "view", "u0", "i0")))
            dups += 1
        if len(msgs) % 11 == 5:
            pack.append(b'{"v":1,"id":"bad","type":"view","user":"u0"}')
            bad += 1
        msgs.append((f"m{len(msgs)}", b"[" + b",".join(pack) + b"]"))
    return msgs, dups, bad


def _lmdb_seq(tmp: Path) -> int:
    try:
        with liststore.ListReader(tmp / "lmdb", map_size=1 << 28) as r:
            meta = r.meta()
    except Exception:  # noqa: BLE001 — not created yet
        return 0
    return 0 if meta is None else meta.last_seq


async def _publish(url: str, msgs: list[tuple[str, bytes]], rate_msgs: float) -> None:
    async with await nats.connect(url) as nc:
        js = nc.jetstream()
        await ensure_streams(js)
        for n, (msg_id, body) in enumerate(msgs):
            await js.publish(subject_for(0), body, headers={MSG_ID_HEADER: msg_id}, timeout=10)
            if n % 10 == 9:
                await asyncio.sleep(10 / rate_msgs)


@pytest.mark.slow
@pytest.mark.timeout(240)
async def test_sigkill_while_events_flow_loses_nothing_and_applies_nothing_twice(tmp_path, nats_url):
    rng = random.Random(5)
    (tmp_path / "recofast.toml").write_text(
        "[engine]\nrefresh_seconds = 0.6\nbatch_size = 20\nfetch_timeout = 0.1\ntop_n = 5\nlmdb_map_size = 268435456\n"
        "[engine.model]\ndim = 16\nseed = 1\n"
    )
    msgs, dups, bad = _workload(rng)
    log = open(tmp_path / "engine.log", "ab")
    publisher = asyncio.create_task(_publish(nats_url, msgs, rate_msgs=22.0))  # ≈ 900 events/s for ≈ 14 s
    kills = 0
    progress: list[int] = []  # LMDB's applied stream seq after each kill
    flowing: list[bool] = []  # whether events were still being published at each kill
    try:
        for _ in range(ROUNDS):
            proc = _engine(nats_url, tmp_path, log)
            await asyncio.sleep(rng.uniform(0.8, 2.5))  # sometimes mid-start, mid-batch, mid-checkpoint
            proc.send_signal(signal.SIGKILL)
            await asyncio.to_thread(proc.wait)
            kills += 1
            progress.append(_lmdb_seq(tmp_path))
            flowing.append(not publisher.done())
        await asyncio.wait_for(publisher, 120)
        async with await nats.connect(nats_url) as nc:
            last = (await nc.jetstream().stream_info(STREAM)).state.last_seq
        assert last == len(msgs)
        deadline = time.monotonic() + 120
        health: dict = {}
        port = _free_port()
        proc = _engine(nats_url, tmp_path, log, port)
        async with aiohttp.ClientSession() as http:
            while time.monotonic() < deadline and health.get("stream_seq") != last:
                await asyncio.sleep(0.2)
                if proc.poll() is not None:  # e.g. another process took the free port first
                    port = _free_port()
                    proc = _engine(nats_url, tmp_path, log, port)
                    continue
                try:
                    async with http.get(f"http://127.0.0.1:{port}/healthz") as resp:
                        health = await resp.json()
                except aiohttp.ClientError:
                    pass
        assert health.get("stream_seq") == last, (health, (tmp_path / "engine.log").read_text()[-3000:])
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(proc.wait, 60) == 0
    finally:
        publisher.cancel()
        if proc.poll() is None:
            proc.kill()
        log.close()
    assert kills == ROUNDS
    # The kills hit an engine at work: it made progress between several of them, while
    # events were still being published.
    assert len({p for p in progress if p}) >= 3, progress
    assert sum(flowing) >= 4, flowing

    store = CheckpointStore(tmp_path / "models")
    versions = store.versions()
    assert len(versions) >= 2
    for v in versions:  # every retained checkpoint is readable
        store.load(v)
    final = store.load_latest()
    m = final.manifest
    assert m["stream_seq"] == len(msgs)
    assert m["events_applied_total"] == N_EVENTS
    assert m["events_duplicate_total"] == dups
    assert m["events_dlq_total"] == bad
    assert final.model.events_learned == N_EVENTS  # the model itself learned each event once
    with liststore.ListReader(tmp_path / "lmdb", map_size=1 << 28) as r:
        meta, lists = r.snapshot()
    assert meta.last_seq == len(msgs)
    assert len(lists) == 300 and all(len(rec.items) == 5 for rec in lists.values())
