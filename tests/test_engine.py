"""The engine against a real nats-server and a real LMDB: events change lists, bad events
go to the DLQ with reasons while good ones flow, duplicates are applied once, catalog
upserts land, checkpoints restore, and /metrics reports it."""

from __future__ import annotations

import asyncio
import time

import aiohttp
import nats
import pytest
from recofast.engine.publish import subject_for
from recofast.engine.service import create_app
from recofast_sidecar.protocol import events as ev
from recofast_sidecar.protocol.names import (
    CATALOG_SUBJECT,
    DLQ_REASON_HEADER,
    DLQ_STREAM,
    DLQ_SUBJECT,
    MSG_ID_HEADER,
    STREAM,
)

pytestmark = pytest.mark.timeout(120)

SUBJECT = subject_for(0)


def event(i, user, item, type="view", ts_ms=None, **kw) -> ev.Event:
    return ev.make_event(f"e{i}", type, user, item, ts_ms=1_700_000_000_000 + i if ts_ms is None else ts_ms, **kw)


async def test_events_change_the_users_list_and_bad_events_go_to_the_dlq(tmp_path, nats_url, engine_config, running_engine, wait_applied):
    async with await nats.connect(nats_url) as nc, running_engine(engine_config(tmp_path, nats_url)) as engine:
        js = nc.jetstream()
        # Everyone who bought the lamp also bought the bulb; u0 has only the lamp so far.
        evs = [event(i, f"u{i}", "lamp", "purchase") for i in range(1, 6)]
        evs += [event(10 + i, f"u{i}", "bulb", "purchase") for i in range(1, 6)]
        await js.publish(SUBJECT, ev.encode(evs), headers={MSG_ID_HEADER: "pack-1"})
        await js.publish(SUBJECT, ev.encode(event(100, "u0", "lamp", "purchase")), headers={MSG_ID_HEADER: "e100"})
        await wait_applied(engine, js)
        reader = engine.writer.reader()
        first = reader.user_list("u0")
        assert first is not None and first.items[0] == "bulb" and "lamp" not in first.items
        assert reader.meta().last_seq == engine.applied_seq == 2

        # A pack with bad events among good ones, and a message that is not JSON at all.
        bad_pack = b"[" + ev.encode(event(200, "u0", "shade")) + b',{"v":9,"id":"x"},{"v":1,"id":"y","type":"view","user":"u0"}]'
        await js.publish(SUBJECT, bad_pack, headers={MSG_ID_HEADER: "pack-2"})
        await js.publish(SUBJECT, b"\xff not json", headers={MSG_ID_HEADER: "junk"})
        await js.publish(SUBJECT, ev.encode(event(201, "u0", "cable")), headers={MSG_ID_HEADER: "e201"})
        await wait_applied(engine, js)
        assert engine.counters["events_dlq_total"] == 3
        assert engine.counters["events_applied_total"] == 13
        after = reader.user_list("u0")
        assert after != first and after.time > first.time
        assert engine.model.history("u0")[:3] == ["cable", "shade", "lamp"]

        dlq = await js.pull_subscribe(DLQ_SUBJECT, durable="t", stream=DLQ_STREAM)
        got = await dlq.fetch(3, timeout=5)
        reasons = sorted(m.headers[DLQ_REASON_HEADER] for m in got)
        assert reasons[0].startswith("malformed JSON") or "JSON" in reasons[0]
        assert "unknown schema version 9" in reasons and "view event needs an item" in reasons


async def test_a_duplicate_event_id_is_applied_once(tmp_path, nats_url, engine_config, running_engine, wait_applied):
    async with await nats.connect(nats_url) as nc, running_engine(engine_config(tmp_path, nats_url)) as engine:
        js = nc.jetstream()
        e = ev.encode(event(1, "ann", "mug", "purchase"))
        for _ in range(3):  # the stream drops the copies (same Nats-Msg-Id) ...
            await js.publish(SUBJECT, e, headers={MSG_ID_HEADER: "e1"})
        # ... and the engine drops a copy inside a pack and one sent without the header.
        await js.publish(SUBJECT, ev.encode([event(2, "ann", "tea"), event(1, "ann", "mug", "purchase")]), headers={MSG_ID_HEADER: "pack-a"})
        await js.publish(SUBJECT, e)
        await wait_applied(engine, js)
        assert (await js.stream_info(STREAM)).state.messages == 3
        assert engine.counters["events_applied_total"] == 2
        assert engine.counters["events_duplicate_total"] == 2
        assert engine.model.events_learned == 2


async def test_catalog_upserts_merge_into_item_metadata(tmp_path, nats_url, engine_config, running_engine, wait_applied):
    async with await nats.connect(nats_url) as nc, running_engine(engine_config(tmp_path, nats_url)) as engine:
        js = nc.jetstream()
        await js.publish(CATALOG_SUBJECT, b'{"v":1,"item":"mug","category":"kitchen","price":4.5,"in_stock":true}')
        await js.publish(CATALOG_SUBJECT, b'[{"v":1,"item":"mug","in_stock":false},{"v":1,"price":"x"}]')
        await wait_applied(engine, js)
        item = engine.writer.reader().item("mug")
        assert (item.category, item.price, item.in_stock) == ("kitchen", 4.5, False)
        assert engine.counters["items_upserted_total"] == 2 and engine.counters["events_dlq_total"] == 1
        # The catalog text reaches the model: a brand-new item is recommendable at once.
        await js.publish(CATALOG_SUBJECT, b'[{"v":1,"item":"mug-red","title":"red coffee mug"},{"v":1,"item":"mug-blue","title":"blue coffee mug"}]')
        await js.publish(SUBJECT, ev.encode([event(900, "shopper", "mug-red")]), headers={MSG_ID_HEADER: "cat-ev"})
        await wait_applied(engine, js)
        assert engine.model.recommend("shopper", k=1)[0][0] == "mug-blue"


async def test_restart_resumes_from_the_checkpoint_without_double_learning(tmp_path, nats_url, engine_config, running_engine, wait_applied):
    cfg = engine_config(tmp_path, nats_url)
    async with await nats.connect(nats_url) as nc:
        js = nc.jetstream()
        async with running_engine(cfg) as engine:
            await js.publish(SUBJECT, ev.encode([event(i, f"u{i % 3}", f"i{i % 7}") for i in range(50)]), headers={MSG_ID_HEADER: "p1"})
            await wait_applied(engine, js)
            await asyncio.to_thread(engine.refresh_all)  # full refresh, segment lists, checkpoint v1
            reader = engine.writer.reader()
            assert reader.segment("popular", "all").items
            assert reader.segment("trending", "device=unknown").items
            assert reader.meta().model_version == 1
        # Graceful stop wrote v2. Events published while the engine is down are learned on start.
        await js.publish(SUBJECT, ev.encode([event(i, f"u{i % 3}", f"i{i % 7}") for i in range(50, 80)]), headers={MSG_ID_HEADER: "p2"})
        async with running_engine(cfg) as engine:
            # v2 at least (the engine's own periodic checkpoint may also have run beside the
            # test's refresh: saves into one folder take turns, each a version of its own).
            assert engine.model_version >= 2 and engine.counters["events_applied_total"] == 50
            await wait_applied(engine, js)
            assert engine.counters["events_applied_total"] == 80
            assert engine.model.events_learned == 80


async def test_metrics_and_healthz(tmp_path, nats_url, engine_config, running_engine, wait_applied):
    async with await nats.connect(nats_url) as nc, running_engine(engine_config(tmp_path, nats_url)) as engine:
        js = nc.jetstream()
        await js.publish(SUBJECT, ev.encode([event(i, "u", f"i{i}", ts_ms=int(time.time() * 1000)) for i in range(20)]))
        await wait_applied(engine, js)
        from aiohttp.test_utils import TestClient, TestServer

        async with TestClient(TestServer(create_app(engine))) as client:
            health = await client.get("/healthz")
            assert health.status == 200 and (await health.json())["stream_seq"] == 1
            text = await (await client.get("/metrics")).text()
        assert "recofast_events_applied_total 20" in text
        assert "recofast_events_dlq_total 0" in text
        assert 'recofast_freshness_seconds_bucket{le="+Inf"} 20' in text
        assert "recofast_list_writes_total 1" in text
        assert isinstance(aiohttp.__version__, str)


async def test_periodic_refresh_runs_in_steps_between_batches(tmp_path, nats_url, engine_config, running_engine, wait_applied):
    cfg = engine_config(tmp_path, nats_url, refresh_seconds=0.2, refresh_chunk=2, popular_n=3)
    async with await nats.connect(nats_url) as nc, running_engine(cfg) as engine:
        js = nc.jetstream()
        evs = [event(i, f"u{i % 5}", f"i{i % 4}", "purchase", context={"country": "GB", "device": "mobile"}) for i in range(40)]
        await js.publish(SUBJECT, ev.encode(evs))
        await wait_applied(engine, js)
        deadline = time.monotonic() + 30
        while engine.metrics.value("recofast_checkpoints_total") < 2:  # the first round may have started before the events
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
        reader = engine.writer.reader()
        assert all(reader.user_list(f"u{i}").model_version >= 1 for i in range(5))
        gb = reader.segment("popular", "country=GB")
        assert len(gb.items) == 3 and gb.scores == sorted(gb.scores, reverse=True)
        # 1,700,000,000 s is 22:13 UTC: the evening band.
        assert reader.segment("trending", "country=GB|device=mobile|hour=evening").items[0] in {"i0", "i1", "i2", "i3"}
        assert engine.metrics.value("recofast_refresh_seconds_count") >= 1


async def test_rollback_then_start_uses_the_older_model_and_goes_on_from_the_stream_position(
    tmp_path, nats_url, engine_config, running_engine, wait_applied
):
    from recofast.engine.checkpoints import CheckpointStore

    cfg = engine_config(tmp_path, nats_url)
    async with await nats.connect(nats_url) as nc:
        js = nc.jetstream()
        async with running_engine(cfg) as engine:
            await js.publish(SUBJECT, ev.encode([event(i, "ann", f"i{i}") for i in range(10)]), headers={MSG_ID_HEADER: "a"})
            await wait_applied(engine, js)
            await asyncio.to_thread(engine.checkpoint)  # v1: 10 events learned
            await js.publish(SUBJECT, ev.encode([event(i, "ann", f"i{i}") for i in range(10, 30)]), headers={MSG_ID_HEADER: "b"})
            await wait_applied(engine, js)
        # The stop wrote v2 (30 events). Roll the model back to v1, keeping the stream position.
        rolled = CheckpointStore(cfg.model_dir).rollback(1)
        assert rolled.version == 3 and rolled.manifest["stream_seq"] == 2
        await js.publish(SUBJECT, ev.encode(event(99, "bob", "i1")), headers={MSG_ID_HEADER: "c"})
        async with running_engine(cfg) as engine:
            assert engine.model_version == 3 and engine.model.events_learned == 10
            await wait_applied(engine, js)
            assert engine.model.events_learned == 11  # only the new event; events 10..29 are not replayed
            assert engine.counters["events_applied_total"] == 31


async def test_the_meta_record_carries_what_the_edges_take_from_the_engine(tmp_path, nats_url, engine_config, running_engine, wait_applied):
    cfg = engine_config(tmp_path, nats_url, timezone="Europe/Berlin", model={"dim": 8, "seed": 1, "snapshot_ms": 0, "w_ctx": 0.7})
    async with await nats.connect(nats_url) as nc, running_engine(cfg) as engine:
        js = nc.jetstream()
        await js.publish(SUBJECT, ev.encode(event(1, "u1", "lamp", "purchase")), headers={MSG_ID_HEADER: "s1"})
        await wait_applied(engine, js)
        shared = engine.writer.reader().meta().shared
        assert shared is not None and shared.timezone == "Europe/Berlin" and shared.context_weight == pytest.approx(0.7)
