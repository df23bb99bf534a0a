"""Fixtures of the benchmarks: a real nats-server on a free loopback port."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from recofast.natsserver import NatsServer


@pytest.fixture
def nats_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    server = NatsServer(tmp_path_factory.mktemp("nats"), port=-1)
    server.start()
    try:
        yield server.url
    finally:
        server.stop()
