"""Shared fixtures: a real nats-server with JetStream on a free loopback port."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from recofast.natsserver import NatsServer


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
