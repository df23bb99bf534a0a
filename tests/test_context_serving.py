"""Context from the engine to the edge: the engine learns events in their context and applies
searches; its refresh exports context affinities and fresh items to LMDB (and the list
bucket); the sidecar re-ranks personal lists for the request's context and explores new items."""

from __future__ import annotations

import asyncio
import random
import time
from contextlib import asynccontextmanager
from datetime import datetime
from zoneinfo import ZoneInfo

import nats
import pytest
from aiohttp.test_utils import TestClient, TestServer
from recofast.engine.publish import subject_for
from recofast_sidecar.protocol import codec, liststore
from recofast_sidecar.protocol import events as ev
from recofast_sidecar.protocol.names import CATALOG_SUBJECT, MSG_ID_HEADER
from recofast_sidecar.protocol.settings import SharedSettings
from recofast_sidecar.app import STATE, create_app
from recofast_sidecar.config import SidecarConfig

pytestmark = pytest.mark.timeout(120)

SUBJECT = subject_for(0)
T_MS = 1_700_000_000_000
MOBILE, DESKTOP = ("m1", "m2", "m3"), ("d1", "d2", "d3")


def shop_events() -> list[ev.Event]:
    """Mobile shoppers buy m-items, desktop shoppers d-items; ``both`` has viewed one of each;
    ``anon`` events have no context at all (device and country are ``unknown``)."""
    rnd = random.Random(0)
    out = []
    for i in range(600):
        device = rnd.choice(["mobile", "desktop"])
        item = rnd.choice(MOBILE if device == "mobile" else DESKTOP)
        out.append(ev.make_event(f"s{i}", "purchase", f"u{i % 30}", item, ts_ms=T_MS + i, context={"device": device, "country": "GB"}))
    out.append(ev.make_event("b1", "view", "both", "m1", ts_ms=T_MS + 1000, context={"device": "mobile"}))
    out.append(ev.make_event("b2", "view", "both", "d1", ts_ms=T_MS + 1001, context={"device": "desktop"}))
    out += [ev.make_event(f"a{i}", "view", "anon", "m1", ts_ms=T_MS + 2000 + i) for i in range(5)]
    return out


async def publish_shop(js) -> None:  # noqa: ANN001
    # Items that arrive while the shop runs are new (the catalogue before the first event is not).
    await js.publish(SUBJECT, ev.encode(shop_events()), headers={MSG_ID_HEADER: "shop"})
    await js.publish(CATALOG_SUBJECT, b'[{"v":1,"item":"new1","title":"shiny desk lamp"},{"v":1,"item":"new2","title":"red floor lamp"}]')


@asynccontextmanager
async def sidecar(cfg: SidecarConfig, reader=None):  # noqa: ANN001, ANN201
    client = TestClient(TestServer(create_app(cfg, reader=reader)))
    await client.start_server()
    try:
        yield client
    finally:
        await client.close()


async def items(client: TestClient, url: str) -> list[str]:
    r = await client.get(url)
    body = await r.json()
    assert r.status == 200, body
    return [x["item"] for x in body["items"]]


def rank_of(lst: list[str], group: tuple[str, ...]) -> int:
    """Position of the first item of ``group`` in ``lst``."""
    return min(lst.index(i) for i in group if i in lst)


# -- the engine -------------------------------------------------------------------------------


async def test_the_engine_learns_context_and_searches_and_exports_them(tmp_path, nats_url, engine_config, running_engine, wait_applied):
    async with await nats.connect(nats_url) as nc, running_engine(engine_config(tmp_path, nats_url)) as engine:
        js = nc.jetstream()
        await publish_shop(js)
        # A search without an item, then a view: the search is applied and sets the intent.
        search = ev.make_event("q1", "search", "shopper", query="Desk LAMP", ts_ms=T_MS + 5000)
        view = ev.make_event("q2", "view", "shopper", "m1", ts_ms=T_MS + 5001, context={"intent": "gift"})
        await js.publish(SUBJECT, ev.encode([search, view]), headers={MSG_ID_HEADER: "search"})
        await wait_applied(engine, js)
        assert engine.counters["events_applied_total"] == 600 + 2 + 5 + 2
        assert engine.model.intent("shopper") == "Desk LAMP"
        # The list the engine stored for the shopper now leads with lamps (new items, known by
        # their catalog text only).
        stored = engine.writer.reader().user_list("shopper")
        assert stored is not None and stored.items[0] in ("new1", "new2"), stored.items

        aff = engine.model.context_affinities(top=10)
        assert {"device=mobile", "device=desktop", "country=gb", "intent=gift"} <= set(aff)
        assert "device=unknown" not in aff and "country=unknown" not in aff  # placeholders are not context
        assert aff["device=mobile"][0][0] in MOBILE and aff["device=desktop"][0][0] in DESKTOP

        reader = engine.writer.reader()
        assert reader.affinity("device=mobile") is None  # exported by the refresh, not per batch
        await asyncio.to_thread(engine.refresh_all)
        mobile = reader.affinity("device=mobile")
        assert mobile is not None and mobile.items[0] in MOBILE
        assert mobile.scores == sorted(mobile.scores, reverse=True) and all(s > 0 for s in mobile.scores)
        assert mobile.model_version == 0 and reader.meta().model_version == 1  # written before the checkpoint
        assert set(reader.affinity_keys()) == set(engine.model.context_affinities(top=200))
        assert reader.affinity("device=unknown") is None
        fresh = reader.fresh()
        assert fresh is not None and set(fresh.items) == set(engine.model.fresh_items()) and fresh.items


async def test_context_top_zero_exports_nothing(tmp_path, nats_url, engine_config, running_engine, wait_applied):
    async with await nats.connect(nats_url) as nc, running_engine(engine_config(tmp_path, nats_url, context_top=0)) as engine:
        js = nc.jetstream()
        await publish_shop(js)
        await wait_applied(engine, js)
        await asyncio.to_thread(engine.refresh_all)
        reader = engine.writer.reader()
        assert reader.segment("popular", "all") is not None
        assert reader.affinity_keys() == [] and reader.fresh() is None


async def test_the_sidecar_reranks_the_engines_lists_by_the_exported_context(
    tmp_path, nats_url, engine_config, running_engine, wait_applied
):
    async with await nats.connect(nats_url) as nc, running_engine(engine_config(tmp_path, nats_url, top_n=8)) as engine:
        js = nc.jetstream()
        await publish_shop(js)
        await wait_applied(engine, js)
        await asyncio.to_thread(engine.refresh_all)
        stored = engine.writer.reader().user_list("both").items
        assert set(MOBILE[1:]) <= set(stored) and set(DESKTOP[1:]) <= set(stored)
        async with sidecar(SidecarConfig(lmdb=None), reader=engine.writer.reader()) as c:
            base = "/v1/recommendations/both?k=8&hour=3"
            mobile = await items(c, base + "&device=mobile")
            desktop = await items(c, base + "&device=Desktop")
            assert mobile != desktop
            assert mobile[0] in MOBILE and desktop[0] in DESKTOP
            assert rank_of(mobile, MOBILE) < rank_of(mobile, DESKTOP) and rank_of(desktop, DESKTOP) < rank_of(desktop, MOBILE)


# -- the sidecar over a store written here ----------------------------------------------------


def write_store(path, affinities: dict[str, dict[str, float]], fresh: list[str] | None = None) -> None:  # noqa: ANN001
    def rec(pairs: dict[str, float]) -> codec.ListRecord:
        return codec.ListRecord(items=list(pairs), scores=list(pairs.values()), model_version=2, time=1.0)

    with liststore.ListWriter(path, map_size=1 << 22) as w:
        w.commit(
            codec.Commit(
                user_lists={"u1": rec({"d1": 1.0, "m1": 0.95, "d2": 0.9, "m2": 0.85, "x": -0.5, "lamp": -0.6})},
                segments={"trending:all": rec({"t1": 3.0, "t2": 2.0})},
                affinities={k: rec(v) for k, v in affinities.items()},
                fresh=None if fresh is None else codec.ListRecord(fresh, [0.0] * len(fresh), 2, 1.0),
                meta=codec.MetaRecord(2, 1, 1.0),
            )
        )


AFFINITIES = {
    "device=mobile": {"m1": 2.0, "m2": 1.5},
    "device=desktop": {"d2": 2.0, "d1": 0.1},
    "intent=lamp": {"lamp": 3.0},
    "device=empty": {},
}


async def test_two_contexts_order_a_personal_list_differently(tmp_path):
    write_store(tmp_path, AFFINITIES)
    async with sidecar(SidecarConfig(lmdb=str(tmp_path), context_weight=1.0)) as c:
        url = "/v1/recommendations/u1?k=6&hour=3"
        assert await items(c, url) == ["d1", "m1", "d2", "m2", "x", "lamp"]  # no affinity for the clock's keys
        assert await items(c, url + "&device=mobile") == ["m1", "m2", "d1", "d2", "x", "lamp"]
        assert await items(c, url + "&device=desktop") == ["d2", "d1", "m1", "m2", "x", "lamp"]
        # A negative score moves up too (divided, not multiplied); the re-ranked score is served.
        r = await (await c.get(url + "&intent=a+desk+LAMP")).json()
        assert [x["item"] for x in r["items"]][-2:] == ["lamp", "x"] and r["items"][-2]["score"] == pytest.approx(-0.6 * 2.718281828 ** -3.0, rel=1e-4)
        # Several keys with lists: their affinities add up.
        assert await items(c, url + "&device=mobile&intent=lamp") == ["m1", "m2", "d1", "d2", "lamp", "x"]
        # Unknown fields' values, values without affinities, empty records: the list as stored.
        for q in ("&device=smartwatch&weather=hail&intent=zzzz&country=ZZ", "&device=empty", "&intent=%20%20", "&weather=rain"):
            assert await items(c, url + q) == ["d1", "m1", "d2", "m2", "x", "lamp"], q
        # k below the list: items below k still move up.
        assert await items(c, "/v1/recommendations/u1?k=2&hour=3&device=mobile") == ["m1", "m2"]
    async with sidecar(SidecarConfig(lmdb=str(tmp_path), context_weight=0.0)) as c:
        assert await items(c, "/v1/recommendations/u1?k=6&hour=3&device=mobile") == ["d1", "m1", "d2", "m2", "x", "lamp"]


async def test_the_hour_comes_from_the_clock_in_the_configured_zone(tmp_path):
    zone = "Asia/Kolkata"  # UTC+05:30, so the hour differs from UTC's
    write_store(tmp_path, {f"hour={h}": {"m2": 0.5 + h} for h in range(24)} | {"hour=3": {"m1": 20.0}})
    async with sidecar(SidecarConfig(lmdb=str(tmp_path), timezone=zone, context_weight=1.0)) as c:
        for _ in range(3):  # retried across an hour boundary
            now = datetime.now(ZoneInfo(zone)).hour
            got = await (await c.get("/v1/recommendations/u1?k=6")).json()
            if datetime.now(ZoneInfo(zone)).hour == now:
                break
        assert got["items"][0]["item"] == ("m1" if now == 3 else "m2")
        expected = 0.85 * 2.718281828 ** (0.5 + now) if now != 3 else None
        if expected is not None:
            assert got["items"][0]["score"] == pytest.approx(expected, rel=1e-4)
        # A given hour wins over the clock.
        assert (await items(c, "/v1/recommendations/u1?k=6&hour=3"))[0] == "m1"


def shared_meta(**shared: object) -> codec.Commit:
    """A commit of the meta record with the engine's shared settings (as the engine writes it)."""
    return codec.Commit(meta=codec.MetaRecord(2, 1, 1.0, shared=SharedSettings(**shared)))


PLAIN = ["d1", "m1", "d2", "m2", "x", "lamp"]  # u1's list as stored
MOBILE_FIRST = ["m1", "m2", "d1", "d2", "x", "lamp"]
MOBILE_URL = "/v1/recommendations/u1?k=6&hour=3&device=mobile"


async def test_the_engines_shared_settings_turn_the_rerank_off_without_a_sidecar_option(tmp_path):
    write_store(tmp_path, AFFINITIES)
    async with sidecar(SidecarConfig(lmdb=str(tmp_path))) as c:  # an old store: no shared settings, w 0.4
        assert await items(c, MOBILE_URL) == MOBILE_FIRST
    with liststore.ListWriter(tmp_path, map_size=1 << 22) as w:
        w.commit(shared_meta(context_weight=0.0))
    async with sidecar(SidecarConfig(lmdb=str(tmp_path))) as c:
        assert c.server.app[STATE].config.context_weight is None
        assert await items(c, MOBILE_URL) == PLAIN
    # The engine changes its mind: the edge follows within about a second, without a restart.
    with liststore.ListWriter(tmp_path, map_size=1 << 22) as w:
        async with sidecar(SidecarConfig(lmdb=None), reader=w.reader()) as c:
            assert await items(c, MOBILE_URL) == PLAIN
            w.commit(shared_meta(context_weight=1.0, timezone="Asia/Kolkata"))
            deadline = time.monotonic() + 10
            while await items(c, MOBILE_URL) != MOBILE_FIRST:
                assert time.monotonic() < deadline, "the new meta record was not read"
                await asyncio.sleep(0.1)
            assert c.server.app[STATE].serving()[1].timezone == "Asia/Kolkata"


async def test_an_explicit_sidecar_option_wins_over_the_engines_settings(tmp_path):
    write_store(tmp_path, AFFINITIES)
    with liststore.ListWriter(tmp_path, map_size=1 << 22) as w:
        w.commit(shared_meta(context_weight=0.0, timezone="Asia/Kolkata"))
    async with sidecar(SidecarConfig(lmdb=str(tmp_path), context_weight=1.0)) as c:
        assert await items(c, MOBILE_URL) == MOBILE_FIRST
        assert c.server.app[STATE].serving()[1].timezone == "Asia/Kolkata"  # not set here: the engine's
    async with sidecar(SidecarConfig(lmdb=str(tmp_path), timezone="UTC")) as c:
        assert await items(c, MOBILE_URL) == PLAIN  # not set here: the engine's 0
        assert c.server.app[STATE].serving()[1].timezone == "UTC"


async def test_the_exploration_slot_shows_fresh_items_then_trending_ones(tmp_path):
    write_store(tmp_path / "a", {}, fresh=["n1", "n2", "m1"])
    async with sidecar(SidecarConfig(lmdb=str(tmp_path / "a"), seed=3)) as c:
        explored = []
        for _ in range(8):
            body = await (await c.get("/v1/recommendations/u1?k=3&hour=3&explore=1")).json()
            explored += [x["item"] for x in body["items"] if x["reason"] == "explore"]
        # Each time one slot, always a fresh item not already listed, the least shown first.
        assert len(explored) == 8 and set(explored) == {"n1", "n2"}
    write_store(tmp_path / "b", {}, fresh=[])
    async with sidecar(SidecarConfig(lmdb=str(tmp_path / "b"), seed=3)) as c:
        body = await (await c.get("/v1/recommendations/u1?k=3&hour=3&explore=1")).json()
        assert [x["item"] for x in body["items"] if x["reason"] == "explore"][0] in {"t1", "t2"}


async def test_decoded_context_records_are_reused_until_rewritten(tmp_path):
    write_store(tmp_path, AFFINITIES)
    w = liststore.ListWriter(tmp_path, map_size=1 << 22)
    async with sidecar(SidecarConfig(lmdb=None), reader=w.reader()) as c:
        url = "/v1/recommendations/u1?k=6&hour=3&device=mobile"
        assert (await items(c, url))[0] == "m1"
        store = c.server.app[STATE].store
        first = store._ctx["aff:device=mobile"][1]
        assert (await items(c, url))[0] == "m1" and store._ctx["aff:device=mobile"][1] is first
        # The engine rewrites the record (a later refresh): the new one is served.
        w.commit(codec.Commit(affinities={"device=mobile": codec.ListRecord(["m2"], [4.0], 3, 2.0)}))
        assert (await items(c, url))[0] == "m2" and store._ctx["aff:device=mobile"][1] == {"m2": 4.0}
    w.close()


# -- a remote edge ----------------------------------------------------------------------------


async def test_a_remote_sync_sidecar_gets_the_context_records(tmp_path, nats_url, engine_config, running_engine, wait_applied):
    cfg = engine_config(tmp_path / "engine-host", nats_url, publish_lists=True, top_n=8)
    async with await nats.connect(nats_url) as nc, running_engine(cfg) as engine:
        js = nc.jetstream()
        await publish_shop(js)
        await wait_applied(engine, js)
        await asyncio.to_thread(engine.refresh_all)
        want = engine.writer.reader().affinity("device=mobile")
        fresh = engine.writer.reader().fresh()
        assert want is not None and fresh is not None
        edge = SidecarConfig(lmdb=str(tmp_path / "edge-host"), nats=nats_url, sync=True)
        async with sidecar(edge) as c:
            store = c.server.app[STATE].store
            deadline = time.monotonic() + 30
            # Compare the lists, not the records: a periodic refresh may rewrite them with a new time.
            def arrived() -> bool:
                a = store.reader.affinity("device=mobile") if store.reader is not None else None
                f = store.reader.fresh() if store.reader is not None else None
                return a is not None and f is not None and a.items == want.items and f.items == fresh.items

            while not arrived():
                assert time.monotonic() < deadline, "the context records did not reach the edge"
                await asyncio.sleep(0.05)
            base = "/v1/recommendations/both?k=8&hour=3"
            while (await c.get(base)).status != 200 or not await items(c, base):
                assert time.monotonic() < deadline
                await asyncio.sleep(0.05)
            mobile, desktop = await items(c, base + "&device=mobile"), await items(c, base + "&device=desktop")
            assert mobile[0] in MOBILE and desktop[0] in DESKTOP
