"""Shared fixtures: a real nats-server with JetStream on a free loopback port."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from contextlib import asynccontextmanager

import pytest
from recofast.engine.natsserver import NatsServer


@pytest.fixture
def nats_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsServer]:
    """A fresh nats-server (JetStream, data in a tmp dir); its URL is ``.url``."""
    server = NatsServer(tmp_path_factory.mktemp("nats"), port=-1)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def nats_url(nats_server: NatsServer) -> str:
    return nats_server.url


# -- the engine, in this process ------------------------------------------------------------


def _engine_config(tmp_path, url, **kw):  # noqa: ANN001, ANN202
    from recofast.engine.config import EngineConfig

    base = dict(
        nats=url,
        lmdb=str(tmp_path / "lmdb"),
        model_dir=str(tmp_path / "models"),
        refresh_seconds=3600.0,
        lmdb_map_size=1 << 26,
        model={"dim": 16, "seed": 1, "snapshot_ms": 0, "ctx_min_count": 1},
        top_n=5,
    )
    base.update(kw)
    return EngineConfig(**base)


@asynccontextmanager
async def _running(cfg):  # noqa: ANN001, ANN202
    from recofast.engine import Engine

    async with Engine(cfg) as engine:
        task = asyncio.create_task(engine.run())
        try:
            yield engine
        finally:
            engine.request_stop()
            await asyncio.wait_for(task, 30)


async def _wait_applied(engine, js, timeout: float = 30.0) -> None:  # noqa: ANN001
    from recofast_sidecar.protocol.names import STREAM

    last = (await js.stream_info(STREAM)).state.last_seq
    deadline = time.monotonic() + timeout
    while engine.applied_seq < last:
        assert time.monotonic() < deadline, f"engine at seq {engine.applied_seq}, stream at {last}"
        await asyncio.sleep(0.02)


@pytest.fixture
def engine_config():  # noqa: ANN201
    """``engine_config(tmp_path, url, **options)``: a small, fast engine configuration."""
    return _engine_config


@pytest.fixture
def running_engine():  # noqa: ANN201
    """``async with running_engine(cfg) as engine``: an engine consuming in this loop."""
    return _running


@pytest.fixture
def wait_applied():  # noqa: ANN201
    """``await wait_applied(engine, js)``: until the engine has applied the whole stream."""
    return _wait_applied
