"""An edge on another host: the sidecar connects to a leaf node (a nats-server without
JetStream of its own) of the three-node cluster, and reaches the cluster's JetStream through
its domain: it reads the schema registry, publishes the events it is posted, and mirrors the
lists the engine puts in the KV bucket into its own LMDB, which it serves."""

from __future__ import annotations

import asyncio
import json
import time
from contextlib import asynccontextmanager
from pathlib import Path

import nats
import pytest
from aiohttp.test_utils import TestClient, TestServer
from recofast.engine.natsserver import NatsServer, start_cluster
from recofast.engine.streams import wait_streams
from recofast_sidecar.app import create_app
from recofast_sidecar.config import SidecarConfig

pytestmark = pytest.mark.timeout(120)
DOMAIN = "hub"


@pytest.fixture
def hub_and_leaf(tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201
    root = tmp_path_factory.mktemp("nats")
    servers = start_cluster(root / "hub", 3, leafnodes=True, domain=DOMAIN)
    leaf = NatsServer(root / "leaf", name="edge", leaf_remote=",".join(s.leafnode_url for s in servers), jetstream=False)
    try:
        leaf.start()
        yield servers, leaf
    finally:
        leaf.stop()
        for s in servers:
            s.stop()


@asynccontextmanager
async def sidecar(cfg: SidecarConfig):  # noqa: ANN201
    client = TestClient(TestServer(create_app(cfg)))
    await client.start_server()
    try:
        yield client
    finally:
        await client.close()


async def _until(cond, timeout: float, what) -> None:  # noqa: ANN001
    deadline = time.monotonic() + timeout
    while not await cond():
        assert time.monotonic() < deadline, what() if callable(what) else what
        await asyncio.sleep(0.05)


async def test_a_sidecar_on_a_leaf_node_posts_events_and_serves_the_mirrored_lists(
    hub_and_leaf, tmp_path: Path, engine_config, running_engine,  # noqa: ANN001
) -> None:
    servers, leaf = hub_and_leaf
    assert "Starting JetStream" not in leaf.log_path.read_text()  # the leaf has no JetStream of its own
    cfg = engine_config(tmp_path / "engine", servers[0].url, stream_replicas=3, publish_lists=True, fetch_timeout=0.1)
    await wait_streams(servers[0].url, cfg)
    async with running_engine(cfg) as engine:
        edge = SidecarConfig(lmdb=str(tmp_path / "edge"), nats=leaf.url, jetstream_domain=DOMAIN, sync=True)
        async with sidecar(edge) as c:
            events = [{"v": 1, "id": f"leaf{i}", "type": "purchase", "user": f"u{i % 3}", "item": f"i{i % 11}",
                       "ts": 1_700_000_000_000 + i} for i in range(30)]
            body = json.dumps({"events": events}).encode()
            answers = []

            async def posted() -> bool:  # 503 until the edge has read the registry through the leaf
                r = await c.post("/v1/events", data=body, headers={"Content-Type": "application/json"})
                answers.append((r.status, await r.text()))
                return r.status == 202

            await _until(posted, 30, lambda: f"POST /v1/events: {answers[-1]}")
            assert json.loads(answers[-1][1])["accepted"] == 30

            async def applied() -> bool:
                return engine.counters["events_applied_total"] >= 30

            await _until(applied, 30, lambda: f"the engine applied {engine.counters['events_applied_total']} of 30")
            want = engine.writer.reader().user_list("u1").items  # what the engine committed to its own LMDB
            assert want

            async def ready() -> bool:  # the mirror has found the bucket the engine puts lists in
                return (await c.get("/readyz")).status == 200

            await _until(ready, 30, "the edge's mirror never became ready")

            last: list[dict] = []

            async def served() -> bool:
                last[:] = [await (await c.get("/v1/recommendations/u1?k=5")).json()]
                return last[0]["source"] == "personal" and [x["item"] for x in last[0]["items"] if x["source"] == "personal"] == list(want)[:5]

            await _until(served, 30, lambda: f"the edge serves {last} for u1, the engine wrote {want}")
        assert engine.counters["events_applied_total"] == 30
    # Without the domain, the leaf's clients have no JetStream: the registry cannot be read.
    async with await nats.connect(leaf.url) as nc:
        with pytest.raises(Exception):  # noqa: B017, PT011 - nats-py raises ServiceUnavailableError or a timeout
            await nc.jetstream(timeout=1.0).stream_info("RECOFAST_EVENTS")
        info = await nc.jetstream(domain=DOMAIN).stream_info("RECOFAST_EVENTS")
        assert info.state.messages >= 1


def test_a_jetstream_domain_that_is_no_subject_token_is_refused_by_name(tmp_path: Path) -> None:
    from recofast_sidecar.config import load_config

    with pytest.raises(ValueError, match="jetstream_domain"):
        load_config(None, {"RECOFAST_SIDECAR_JETSTREAM_DOMAIN": "hub.>"}, {"lmdb": str(tmp_path)})
    assert load_config(None, {"RECOFAST_SIDECAR_JETSTREAM_DOMAIN": "hub-1"}, {"lmdb": str(tmp_path)}).jetstream_domain == "hub-1"
