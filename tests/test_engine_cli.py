"""The engine's commands end to end: ``publish`` of the CSV shop log, ``schema check``
against the registry, ``serve`` with an embedded nats-server, and the configuration."""

from __future__ import annotations

import asyncio
import gzip
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import nats
import pytest
from recofast.cli import main as cli_main
from recofast.engine import streams
from recofast.engine.config import load_config
from recofast_sidecar.protocol import liststore
from recofast_sidecar.protocol.names import STREAM

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "online_retail" / "interactions.csv.gz"
if not DATA.exists():
    DATA = Path("/work/shared/data/online_retail/interactions.csv.gz")

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def small_csv(tmp_path) -> Path:
    """The first 300 rows of the bundled shop log (a tiny stand-in if it is absent)."""
    out = tmp_path / "log.csv"
    if DATA.exists():
        with gzip.open(DATA, "rt") as f:
            out.write_text("".join(next(f) for _ in range(301)))
    else:
        rows = [f"{1000 + i % 7},{200 + i % 11},{1291191960 + i},{5000 + i // 5},1,2.5,United Kingdom" for i in range(300)]
        out.write_text("user_id,item_id,timestamp,invoice,quantity,unit_price,country\n" + "\n".join(rows) + "\n")
    return out


async def test_publish_a_csv_log_and_replay_it_idempotently(tmp_path, nats_url, small_csv, engine_config, running_engine, wait_applied):
    args = ["publish", "--events", str(small_csv), "--nats", nats_url, "--limit", "250", "--pack", "50", "--quiet"]
    assert await asyncio.to_thread(cli_main, args) == 0
    assert await asyncio.to_thread(cli_main, args) == 0  # same ids: stored once
    async with await nats.connect(nats_url) as nc, running_engine(engine_config(tmp_path, nats_url)) as engine:
        js = nc.jetstream()
        assert (await js.stream_info(STREAM)).state.messages == 5
        await wait_applied(engine, js)
        assert engine.counters["events_applied_total"] == 250
        users = {line.split(",")[0] for line in small_csv.read_text().splitlines()[1:251]}
        reader = engine.writer.reader()
        assert all(reader.user_list(u) is not None for u in users)


async def test_schema_registry_and_check(tmp_path, nats_url, capsys, engine_config, running_engine):
    good = b'{"v":1,"id":"a","type":"view","user":"u","item":"i"}\n'
    bad = b'{"v":2,"id":"b","type":"view","user":"u","item":"i"}\n{"v":1,"id":"c","type":"purchase","user":"u"}\n'
    (tmp_path / "good.jsonl").write_bytes(good * 3)
    (tmp_path / "bad.jsonl").write_bytes(good + bad)
    async with await nats.connect(nats_url) as nc, running_engine(engine_config(tmp_path, nats_url)):
        assert await streams.registered_versions(nc.jetstream()) == (1,)
        ok = await asyncio.to_thread(cli_main, ["schema", "check", str(tmp_path / "good.jsonl"), "--nats", nats_url])
        assert ok == 0 and "3 events pass, 0 fail (accepted versions: v1)" in capsys.readouterr().out
        fail = await asyncio.to_thread(cli_main, ["schema", "check", str(tmp_path / "bad.jsonl"), "--nats", nats_url])
        out = capsys.readouterr().out
        assert fail == 1
        assert "bad.jsonl:2: unknown schema version 2" in out and "bad.jsonl:3: purchase event needs an item" in out
        assert "1 events pass, 2 fail" in out


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
async def test_serve_starts_and_stops_an_embedded_nats_server(tmp_path, small_csv):
    port = _free_port()
    env = {**os.environ, "RECOFAST_REFRESH_SECONDS": "3600", "RECOFAST_MODEL__DIM": "16", "RECOFAST_LMDB_MAP_SIZE": str(1 << 26)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "recofast.cli", "serve", "--http-port", str(port)],
        cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        url_file = tmp_path / "data" / "nats" / "url"
        deadline = time.monotonic() + 60
        while not url_file.exists():
            assert time.monotonic() < deadline and proc.poll() is None
            await asyncio.sleep(0.1)
        url = url_file.read_text().strip()
        # `publish` finds the embedded server by itself (data/nats/url in the working dir).
        cwd = os.getcwd()
        os.chdir(tmp_path)
        try:
            assert await asyncio.to_thread(cli_main, ["publish", "--events", str(small_csv), "--limit", "100", "--quiet"]) == 0
        finally:
            os.chdir(cwd)
        health: dict = {}
        async with aiohttp.ClientSession() as http:
            while health.get("events_applied_total") != 100:
                assert time.monotonic() < deadline
                await asyncio.sleep(0.1)
                try:
                    async with http.get(f"http://127.0.0.1:{port}/healthz") as resp:
                        health = await resp.json()
                except aiohttp.ClientError:
                    pass
            async with http.get(f"http://127.0.0.1:{port}/metrics") as resp:
                assert "recofast_events_applied_total 100" in await resp.text()
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(proc.wait, 30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        assert proc.stderr is not None
        err = proc.stderr.read().decode()
        proc.stderr.close()
    assert "embedded nats-server at nats://127.0.0.1:" in err
    host, p = url.removeprefix("nats://").split(":")
    with pytest.raises(OSError), socket.create_connection((host, int(p)), timeout=2):
        pass  # the embedded server is gone with the engine
    with liststore.ListReader(tmp_path / "data" / "lmdb", map_size=1 << 26) as r:
        assert r.meta().last_seq == 1 and r.meta().model_version == 1  # the stop wrote checkpoint v1


def test_config_layers(tmp_path):
    toml = tmp_path / "recofast.toml"
    toml.write_text('[engine]\ntop_n = 7\nlmdb_sync = false\n[engine.model]\ndim = 32\n[engine.weather_table]\n"*" = "sun"\n')
    cfg = load_config(toml, env={"RECOFAST_TOP_N": "9", "RECOFAST_LMDB_SYNC": "yes", "OTHER": "1"}, overrides={"top_n": None, "http_port": 8080})
    assert (cfg.top_n, cfg.lmdb_sync, cfg.http_port, cfg.model["dim"], cfg.weather_table) == (9, True, 8080, 32, {"*": "sun"})
    assert load_config(toml, env={}, overrides={"top_n": 3}).top_n == 3
    toml.write_text("[engine]\ntopn = 7\n")
    with pytest.raises(ValueError, match="unknown engine option 'topn'"):
        load_config(toml, env={})


def test_the_repository_recofast_toml_is_the_default_configuration():
    root = Path(__file__).resolve().parents[1]
    got = load_config(root / "recofast.toml", env={})
    assert got.config_file == str(root / "recofast.toml")
    assert got.replace(config_file="") == load_config(None, env={})
