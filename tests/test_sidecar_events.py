"""POST /v1/events decodes a body once (msgspec, through protocol.events): the answers for
odd bodies, the token check over valid and rejected events, and the dead-letter copy of a
rejected event is the producer's own bytes."""

from __future__ import annotations

import asyncio
import json
import time

import nats
import pytest
from recofast_sidecar.config import SidecarConfig
from recofast_sidecar.params import user_token
from recofast_sidecar.protocol.names import DLQ_SUBJECT, EVENTS_SUBJECTS, STREAM
from test_sidecar import sidecar, view, write_store

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def store(tmp_path):  # noqa: ANN001, ANN201
    path = tmp_path / "lmdb"
    write_store(path)
    return str(path)


async def post(c, data: bytes, **kw) -> tuple[int, dict]:  # noqa: ANN001, ANN003
    r = await c.post("/v1/events", data=data, **kw)
    return r.status, await r.json()


async def test_odd_bodies_are_a_400_or_413_with_the_reason(store):
    async with sidecar(SidecarConfig(lmdb=store, max_events=3)) as c:
        # NaN is not JSON (msgspec reads RFC 8259 JSON only).
        for data in (b"", b"not json", b'[{"v":1,', b"[1] junk", b'{"v":1,"price":NaN}'):
            assert await post(c, data) == (400, {"error": "the body is not JSON (or nested too deeply)", "status": 400}), data
        assert await post(c, b'{"events": {"v": 1}}') == (400, {"error": "`events` must be an array", "status": 400})
        for data in (b"[]", b' {"events": [ ]} '):
            assert await post(c, data) == (400, {"error": "no events", "status": 400}), data
        status, body = await post(c, json.dumps([{"v": 1}] * 4).encode())
        assert status == 413 and body["error"] == "at most 3 events per request"
        # Valid JSON that is no event: each one rejected with its reason, by position.
        status, body = await post(c, json.dumps([5, {"v": 2, "id": "x"}, view(1, "u1", "a")]).encode())
        assert status == 503  # the valid one would be published, but there is no NATS
        status, body = await post(c, b'[5, {"v": 2, "id": "x"}]')
        assert status == 400 and body["accepted"] == 0 and [e["index"] for e in body["errors"]] == [0, 1]
        assert body["errors"][1]["reason"] == "unknown schema version 2"
        # An event carrying an `events` field is read as the envelope, as before.
        status, body = await post(c, json.dumps(dict(view(2, "u1", "a"), events=[{"v": 2, "id": "y"}])).encode())
        assert status == 400 and body["errors"] == [{"index": 0, "reason": "unknown schema version 2"}]


async def test_tokens_cover_rejected_events_and_odd_users_are_a_4xx(store):
    secret = "s3cret"
    mine = {"Authorization": "Bearer " + user_token(secret, "u1")}
    async with sidecar(SidecarConfig(lmdb=store, token_secret=secret)) as c:
        # A rejected event of another user (even a number) makes the whole body a 403.
        for other in ({"v": 2, "id": "x", "user": "u2"}, {"v": 1, "user": 2}):
            status, body = await post(c, json.dumps([view(1, "u1", "a"), other]).encode(), headers=mine)
            assert status == 403, other
        # A user that is no user id (a flag, a float) is not anybody's: the valid event decides.
        status, _ = await post(c, json.dumps([view(1, "u1", "a"), {"v": 1, "user": True}, {"user": 1.5}]).encode(), headers=mine)
        assert status == 503
        # A lone surrogate is not JSON text msgspec reads: a 400, never an error of the server.
        status, _ = await post(c, b'{"v":1,"id":"e","type":"view","user":"\\ud800","item":"a"}', headers=mine)
        assert status == 400


async def test_a_rejected_event_is_dead_lettered_as_the_producer_sent_it(store, nats_url):
    async with await nats.connect(nats_url) as nc:
        await nc.jetstream().add_stream(name=STREAM, subjects=[EVENTS_SUBJECTS])
        dlq = await nc.subscribe(DLQ_SUBJECT)
        await nc.flush()
        async with sidecar(SidecarConfig(lmdb=store, nats=nats_url)) as c:
            deadline = time.monotonic() + 10
            while (await c.get("/readyz")).status != 200:
                assert time.monotonic() < deadline
                await asyncio.sleep(0.02)
            odd = b'{"v": 1,  "id": "bad", "type": "view", "user": "u1"}'
            status, body = await post(c, b'{"events": [' + json.dumps(view(1, "u1", "a")).encode() + b", " + odd + b"]}")
            assert status == 202 and body["accepted"] == 1 and body["errors"] == [{"index": 1, "reason": "view event needs an item"}]
            assert (await dlq.next_msg(timeout=5)).data == odd
