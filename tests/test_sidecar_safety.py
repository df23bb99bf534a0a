"""Production safety of the sidecar and the codec, through real LMDB and a real nats-server:
authenticated writes, non-ASCII tokens, a store that grows while it is served (in this
process and from another one), a full store, the mirror failing loudly, /similar without a
scan, erasure, and the writer lock."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import threading
import time
import urllib.request

import nats
import pytest
from recofast_sidecar.protocol import codec, liststore
from recofast_sidecar.protocol.keys import kv_key
from recofast_sidecar.protocol.names import (
    DB_USER_LISTS,
    EVENTS_SUBJECTS,
    LISTS_BUCKET,
    PRODUCER_KEY_HEADER,
    STREAM,
)
from recofast_sidecar.app import STATE
from recofast_sidecar.config import SidecarConfig
from recofast_sidecar.openapi import openapi_document
from recofast_sidecar.params import user_token
from recofast_sidecar.protocol.keys import put_commit
from test_sidecar import get_json, items_of, lst, metric, sidecar, view, write_store

pytestmark = pytest.mark.timeout(120)

SECRET = "s3cret"
KEY = "backend-key-0123456789"


@pytest.fixture
def store(tmp_path):  # noqa: ANN001, ANN201
    path = tmp_path / "lmdb"
    write_store(path)
    return str(path)


async def _ready(c, deadline: float = 15.0) -> None:  # noqa: ANN001
    end = time.monotonic() + deadline
    while (r := await c.get("/readyz")).status != 200:
        assert time.monotonic() < end, await r.text()
        await asyncio.sleep(0.02)


# -- 1. authenticated writes ------------------------------------------------------------------


async def test_with_tokens_events_need_the_shoppers_token_or_a_producer_key(store, nats_url):
    async with await nats.connect(nats_url) as nc:
        js = nc.jetstream()
        await js.add_stream(name=STREAM, subjects=[EVENTS_SUBJECTS])
        cfg = SidecarConfig(lmdb=store, nats=nats_url, token_secret=SECRET, producer_keys=(KEY,))
        async with sidecar(cfg) as c:
            await _ready(c)
            mine = user_token(SECRET, "u1")
            spoof = dict(view(1, "victim", "a"), type="purchase")
            r = await c.post("/v1/events", json=spoof)
            assert r.status == 401 and (await r.json())["status"] == 401
            r = await c.post("/v1/events", json=spoof, headers={"Authorization": f"Bearer {mine}"})
            assert r.status == 403 and (await r.json())["status"] == 403
            # One foreign event in a body of one's own is refused whole.
            mixed = {"events": [view(2, "u1", "a"), spoof]}
            assert (await c.post(f"/v1/events?token={mine}", json=mixed)).status == 403
            assert (await c.post("/v1/events", json=spoof, headers={PRODUCER_KEY_HEADER: "wrong-key-0123456789"})).status == 403
            assert (await js.stream_info(STREAM)).state.messages == 0  # nothing reached the stream

            r = await c.post("/v1/events", json=view(3, "u1", "a"), headers={"Authorization": f"Bearer {mine}"})
            assert r.status == 202, await r.text()
            assert (await c.post(f"/v1/events?token={mine}", json=[view(4, "u1", "b")])).status == 202
            r = await c.post("/v1/events", json={"events": [spoof, view(5, "u9", "c")]}, headers={PRODUCER_KEY_HEADER: KEY})
            assert r.status == 202 and (await r.json())["accepted"] == 2
            sub = await js.pull_subscribe(EVENTS_SUBJECTS, durable="t", stream=STREAM)
            got = await sub.fetch(10, timeout=5)
            evs = [e for m in got for e in (lambda d: d if isinstance(d, list) else [d])(json.loads(m.data))]
            assert sorted((e["user"], e["id"]) for e in evs) == [("u1", "s3"), ("u1", "s4"), ("u9", "s5"), ("victim", "s1")]
            metrics = await (await c.get("/metrics")).text()
            assert metric(metrics, "recofast_sidecar_events_total", result="forbidden") == 3
        # The OpenAPI document names the token and the header.
        params = {p["name"] for p in openapi_document()["paths"]["/v1/events"]["post"]["parameters"]}
        assert params == {"token", PRODUCER_KEY_HEADER}


async def _raw(port: int, request: bytes) -> tuple[int, dict]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(request)
    await writer.drain()
    data = await reader.read()
    writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body)


async def test_a_non_ascii_token_is_a_4xx_json_error(store):
    async with sidecar(SidecarConfig(lmdb=store, token_secret=SECRET, producer_keys=(KEY,))) as c:
        for url in ("/v1/recommendations/u1?token=%C3%A9t%C3%A9", "/v1/recommendations/u1?token=%FF"):
            body = await get_json(c, url, status=403)
            assert body["status"] == 403 and body["error"]
        r = await c.post("/v1/events?token=%C3%A9", json=view(1, "u1", "a"))
        assert r.status == 403 and (await r.json())["status"] == 403
        port = c.server.port
        for path, method in (("/v1/recommendations/u1", b"GET"), ("/v1/events", b"POST")):
            for header in ("Authorization: Bearer \u00e9t\u00e9".encode(), f"{PRODUCER_KEY_HEADER}: \u00e9\u00e9".encode()):
                req = method + b" " + path.encode() + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n" + header
                req += b"\r\nContent-Length: 2\r\n\r\n{}"
                status, body = await _raw(port, req)
                assert 400 <= status < 500 and body["status"] == status, (path, header, status)


# -- 3. the store grows while it is served -----------------------------------------------------


def _lists(start: int, n: int, version: int) -> dict[str, codec.ListRecord]:
    return {f"u{i}": codec.ListRecord([f"item-{(i + j) % 997:04d}" for j in range(50)], [1.0 - j / 50 for j in range(50)], version, 0.0)
            for i in range(start, start + n)}


def _write_growing(w: liststore.ListWriter, commits: int, done: threading.Event) -> None:
    try:
        for v in range(1, commits + 1):
            w.commit(codec.Commit(user_lists=_lists(v * 2000, 2000, v), meta=codec.MetaRecord(v, v, 0.0)))
            w.commit(codec.Commit(user_lists=_lists(0, 200, v)))  # the users being served, rewritten
    finally:
        done.set()


async def test_the_store_grows_while_an_in_process_sidecar_serves_it(tmp_path):
    w = liststore.ListWriter(tmp_path / "s", map_size=1 << 20, max_map_size=1 << 28)
    w.commit(codec.Commit(user_lists=_lists(0, 200, 0)))
    try:
        async with sidecar(SidecarConfig(lmdb=None), reader=w.reader()) as c:
            done = threading.Event()
            t = threading.Thread(target=_write_growing, args=(w, 12, done))
            t.start()
            served = 0
            while not done.is_set() or served < 50:
                body = await get_json(c, f"/v1/recommendations/u{served % 200}?k=5")
                assert body["source"] == "personal", body
                served += 1
            t.join(30)
        assert w.growths >= 3 and w.map_size >= 16 << 20, (w.growths, w.map_size)
        assert w.reader().user_list("u24001").model_version == 12
    finally:
        w.close()


def test_the_store_grows_while_a_sidecar_process_serves_it_without_fallbacks(tmp_path):
    import socket

    path = tmp_path / "s"
    w = liststore.ListWriter(path, map_size=1 << 20, max_map_size=1 << 28)
    w.commit(codec.Commit(user_lists=_lists(0, 200, 0)))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, "-m", "recofast_sidecar.server", "--lmdb", str(path), "--port", str(port), "--log-level", "WARNING",
         "--fallback", "FALLBACK"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    try:
        def get(url: str) -> dict:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{url}", timeout=5) as r:
                return json.loads(r.read())

        deadline = time.monotonic() + 20
        while True:
            try:
                get("/healthz")
                break
            except OSError:
                assert time.monotonic() < deadline and proc.poll() is None
                time.sleep(0.1)
        done = threading.Event()
        t = threading.Thread(target=_write_growing, args=(w, 12, done))
        t.start()
        sources = []
        while not done.is_set() or len(sources) < 50:
            sources.append(get(f"/v1/recommendations/u{len(sources) % 200}?k=5")["source"])
        t.join(30)
        assert set(sources) == {"personal"}, sources
        assert get("/v1/recommendations/u24001")["model_version"] == 12  # the newest commit, past every growth
        metrics = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
        remaps = metric(metrics, "recofast_sidecar_lmdb_remaps")
        assert remaps >= 1 and w.growths >= 3
    finally:
        proc.terminate()
        err = proc.communicate(timeout=20)[1].decode()
        w.close()
    assert "unavailable" not in err, err[-2000:]


def test_a_full_store_raises_store_full_with_nothing_written_and_resumes(tmp_path):
    with liststore.ListWriter(tmp_path, map_size=1 << 20, max_map_size=1 << 21) as w:
        w.commit(codec.Commit(user_lists=_lists(0, 10, 1), meta=codec.MetaRecord(1, 1, 0.0)))
        big = codec.Commit(user_lists=_lists(100, 5000, 2), meta=codec.MetaRecord(2, 2, 0.0))
        with pytest.raises(liststore.StoreFullError, match="is full") as e:
            w.commit(big)
        assert isinstance(e.value, codec.CodecError) and e.value.max_map_size == 1 << 21
        r = w.reader()
        assert r.meta().last_seq == 1 and r.user_list("u100") is None and r.user_list("u5") is not None
        w.max_map_size = 1 << 26  # room again: the same commit goes in whole
        w.commit(big)
        assert r.meta().last_seq == 2 and r.user_list("u5099").model_version == 2


def test_map_full_aborts_grows_and_retries_the_commit(tmp_path):
    with liststore.ListWriter(tmp_path, map_size=1 << 20, max_map_size=1 << 26) as w:
        w.HEADROOM = 0  # no growth before the commit: MDB_MAP_FULL must do it
        w.GROW_AT = 1.0
        w.commit(codec.Commit(user_lists=_lists(0, 4000, 3)))
        assert w.growths >= 1 and w.reader().user_list("u3999").model_version == 3
        assert len(w.reader().keys(DB_USER_LISTS)) == 4000


# -- 4. the mirror fails loudly ---------------------------------------------------------------


async def test_a_failing_mirror_makes_readyz_503_with_the_reason_and_recovers(tmp_path, nats_url, caplog):
    async with await nats.connect(nats_url) as nc:
        kv = await nc.jetstream().create_key_value(bucket=LISTS_BUCKET)
        await put_commit(kv, codec.Commit(user_lists=_lists(0, 10, 1)))
        cfg = SidecarConfig(lmdb=str(tmp_path / "mirror"), nats=nats_url, sync=True, map_size=1 << 20, max_map_size=1 << 20)
        with caplog.at_level("ERROR", logger="recofast.sidecar.sync"):
            async with sidecar(cfg) as c:
                await _ready(c)
                st = c.app[STATE]
                st.mirror.retry_initial = st.mirror.retry_max = 0.05
                await put_commit(kv, codec.Commit(user_lists=_lists(100, 3000, 2)))  # more than 1 MiB
                end = time.monotonic() + 15
                while (r := await c.get("/readyz")).status != 503:
                    assert time.monotonic() < end
                    await asyncio.sleep(0.02)
                body = await r.json()
                assert body["sync"].startswith("failing: writing") and "StoreFullError" in body["sync"], body
                metrics = await (await c.get("/metrics")).text()
                assert metric(metrics, "recofast_sidecar_sync_failing") == 1
                assert metric(metrics, "recofast_sidecar_sync_failures") > 0
                # Room again: the retried batches go in, nothing lost, ready again.
                st.writer.max_map_size = 1 << 28
                await _ready(c)
                while (await get_json(c, "/v1/recommendations/u3099"))["source"] != "personal":
                    assert time.monotonic() < end
                    await asyncio.sleep(0.02)
                assert st.mirror.error is None and st.writer.growths >= 1
                # The mirror's task dies: not ready, and says so.
                st.mirror_task.cancel()
                await asyncio.sleep(0.05)
                body = await get_json(c, "/readyz", status=503)
                assert body["sync"] == "stopped"
    assert any("StoreFullError" in r.message for r in caplog.records)


# -- 5. /similar reads the exported neighbours, never scans ------------------------------------


async def test_similar_answers_an_unknown_item_fast_and_a_known_one_from_its_neighbours(tmp_path):
    path = tmp_path / "s"
    with liststore.ListWriter(path, map_size=1 << 26) as w:
        w.commit(codec.Commit(user_lists=_lists(0, 30000, 1), segments={"popular:all": lst(["p1", "p2", "p3"])},
                              similar={"item-0001": lst(["item-0002", "item-0003"], 4)}))
    async with sidecar(SidecarConfig(lmdb=str(path))) as c:
        t0 = time.perf_counter()
        for i in range(20):
            body = await get_json(c, f"/v1/items/nobody-{i}/similar?k=3")
            assert body["source"] == "popular" and items_of(body) == ["p1", "p2", "p3"]
        assert (time.perf_counter() - t0) / 20 < 0.05  # a scan of 30,000 lists took ~0.3 s a miss
        known = await get_json(c, "/v1/items/item-0001/similar?k=3")
        assert known["source"] == "similar" and items_of(known) == ["item-0002", "item-0003", "p1"]
        assert known["model_version"] == 4


async def test_similar_records_travel_through_the_bucket(tmp_path, nats_url):
    async with await nats.connect(nats_url) as nc:
        kv = await nc.jetstream().create_key_value(bucket=LISTS_BUCKET)
        await put_commit(kv, codec.Commit(similar={"lamp": lst(["bulb", "shade"])}, segments={"popular:all": lst(["x"])}))
        async with sidecar(SidecarConfig(lmdb=str(tmp_path / "m"), nats=nats_url, sync=True)) as c:
            await _ready(c)
            body = await get_json(c, "/v1/items/lamp/similar?k=2")
            assert body["source"] == "similar" and items_of(body) == ["bulb", "shade"]


# -- 6. erasure ---------------------------------------------------------------------------------


def test_delete_users_removes_records_in_the_same_transaction_and_merges_in_order(tmp_path):
    a, b = lst(["a"]), lst(["b"])
    c = codec.Commit(user_lists={"u1": a, "u2": a})
    c.merge(codec.Commit(delete_users=["u1", "u3"]))
    c.merge(codec.Commit(user_lists={"u3": b}))
    assert c.user_lists == {"u2": a, "u3": b} and c.delete_users == ["u1"]
    c.merge(codec.Commit(user_lists={"u1": b}, delete_users=["u2"]))  # in one commit the erasure wins over nothing
    assert c.user_lists == {"u3": b, "u1": b} and c.delete_users == ["u2"]
    with liststore.ListWriter(tmp_path, map_size=1 << 22) as w:
        w.commit(codec.Commit(user_lists={"u1": a, "u2": a, "u3": a}))
        w.commit(codec.Commit(user_lists={"u4": b, "u3": b}, delete_users=["u1", "u3", "nobody"]))
        r = w.reader()
        assert sorted(r.keys(DB_USER_LISTS)) == ["u2", "u4"]  # deletes apply after the puts


async def test_an_erased_user_disappears_from_a_sync_mirror(tmp_path, nats_url):
    async with await nats.connect(nats_url) as nc:
        kv = await nc.jetstream().create_key_value(bucket=LISTS_BUCKET)
        await put_commit(kv, codec.Commit(user_lists={"gone": lst(["a"]), "purged": lst(["b"]), "kept": lst(["c"])},
                                          segments={"popular:all": lst(["p"])}))
        async with sidecar(SidecarConfig(lmdb=str(tmp_path / "m"), nats=nats_url, sync=True)) as c:
            await _ready(c)
            st = c.app[STATE]
            assert (await get_json(c, "/v1/recommendations/gone"))["source"] == "personal"
            assert await put_commit(kv, codec.Commit(delete_users=["gone"])) == 1
            await kv.purge(kv_key(DB_USER_LISTS, "purged"))
            end = time.monotonic() + 10
            while st.store.reader.user_list("gone") is not None or st.store.reader.user_list("purged") is not None:
                assert time.monotonic() < end
                await asyncio.sleep(0.02)
            assert (await get_json(c, "/v1/recommendations/gone"))["source"] == "popular"
            assert st.store.reader.user_list("kept").items == ["c"] and st.mirror.deleted == 2


# -- 7. one writer per store --------------------------------------------------------------------


def test_a_second_writer_is_refused_until_the_first_closes(tmp_path):
    w = liststore.ListWriter(tmp_path, map_size=1 << 20)
    with pytest.raises(liststore.StoreLockedError, match=str(tmp_path)) as e:
        liststore.ListWriter(tmp_path, map_size=1 << 20)
    assert "writer.lock" in str(e.value) and isinstance(e.value, codec.CodecError)
    other = subprocess.run(
        [sys.executable, "-c", f"from recofast_sidecar.protocol import liststore\nliststore.ListWriter({str(tmp_path)!r})"],
        capture_output=True, text=True, timeout=60,
    )
    assert other.returncode != 0 and "StoreLockedError" in other.stderr and "pid" in other.stderr
    w.close()
    w.close()  # idempotent
    with liststore.ListWriter(tmp_path, map_size=1 << 20) as again:
        again.commit(codec.Commit(user_lists={"u": lst(["a"])}))
