"""The edge sidecar over a real LMDB store (written through the codec) and a real nats-server:
every endpoint, the filters, diversity and exploration, the fallbacks, user tokens, CORS,
4xx JSON on bad input, events and impressions through NATS, and the engine end to end."""

from __future__ import annotations

import asyncio
import doctest
import importlib
import json
import os
import subprocess
import sys
import time
import urllib.parse
from contextlib import asynccontextmanager
from pathlib import Path

try:
    import tomllib
except ImportError:  # Python 3.10
    import tomli as tomllib

import msgspec
import nats
import pytest
from aiohttp.test_utils import TestClient, TestServer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families
from recofast_sidecar.protocol import codec, liststore
from recofast_sidecar.protocol.names import (
    DLQ_REASON_HEADER,
    DLQ_SOURCE_HEADER,
    DLQ_SUBJECT,
    EVENTS_SUBJECTS,
    IMPRESSIONS_SUBJECT,
    STREAM,
)
from recofast_sidecar.app import create_app
from recofast_sidecar.config import SidecarConfig, load_config
from recofast_sidecar.openapi import openapi_document
from recofast_sidecar.params import user_token
from recofast_sidecar.server import _parser, config_from_args

pytestmark = pytest.mark.timeout(60)

T = 1_700_000_000.0
ITEMS = {
    "a": codec.ItemRecord(category="mugs", price=5.0, in_stock=True),
    "b": codec.ItemRecord(category="mugs", price=12.0, in_stock=True),
    "c": codec.ItemRecord(category="tea", price=3.0, in_stock=True),
    "d": codec.ItemRecord(category="tea", price=8.0, in_stock=False),  # out of stock
    "e": codec.ItemRecord(category="pots", price=30.0),
    "f": codec.ItemRecord(category="mugs"),  # price unknown
    "g": codec.ItemRecord(category="tea", price=4.0, in_stock=True),
    "new1": codec.ItemRecord(category="pots", price=9.0, in_stock=True),
    "new2": codec.ItemRecord(category="pots", price=9.5, in_stock=True),
}


def lst(items: list[str], version: int = 7) -> codec.ListRecord:
    return codec.ListRecord(items=items, scores=[1.0 - 0.1 * i for i in range(len(items))], model_version=version, time=T)


def write_store(path, **user_lists: list[str]) -> None:  # noqa: ANN001
    lists = {"u1": ["a", "b", "d", "c", "f", "e"], "u2": ["b", "a", "g"], "u3": ["c", "g"], **user_lists}
    with liststore.ListWriter(path, map_size=1 << 22) as w:
        w.commit(
            codec.Commit(
                user_lists={u: lst(i) for u, i in lists.items()},
                items=ITEMS,
                segments={
                    "popular:all": lst(["c", "a", "b"], 6),
                    "popular:country=GB": lst(["g", "c"], 6),
                    "popular:country=GB|device=mobile|hour=evening": lst(["e", "g"], 6),
                    "trending:all": lst(["new1", "new2", "a"], 6),
                },
                similar={"a": lst(["b", "d", "c", "e"], 5), "lonely": lst([], 5)},
                meta=codec.MetaRecord(model_version=7, last_seq=3, time=T),
            )
        )


@pytest.fixture
def store(tmp_path):  # noqa: ANN001, ANN201
    path = tmp_path / "lmdb"
    write_store(path)
    return str(path)


@asynccontextmanager
async def sidecar(cfg: SidecarConfig, reader=None):  # noqa: ANN001, ANN201
    client = TestClient(TestServer(create_app(cfg, reader=reader)))
    await client.start_server()
    try:
        yield client
    finally:
        await client.close()


async def get_json(client: TestClient, url: str, status: int = 200, **kw) -> dict:  # noqa: ANN003
    r = await client.get(url, **kw)
    body = await r.json()
    assert r.status == status, body
    return body


def items_of(body: dict) -> list[str]:
    return [x["item"] for x in body["items"]]


def metric(text: str, name: str, **labels: str) -> float | None:
    """The value of one sample of a /metrics answer (None when there is no such sample)."""
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and s.labels == labels:
                return s.value
    return None


# -- lists ------------------------------------------------------------------------------------


async def test_a_known_user_gets_the_personal_list_without_out_of_stock_items(store):
    async with sidecar(SidecarConfig(lmdb=store)) as c:
        body = await get_json(c, "/v1/recommendations/u1?k=4")
        assert body["user"] == "u1" and body["source"] == "personal" and body["model_version"] == 7
        assert items_of(body) == ["a", "b", "c", "f"]  # d is out of stock
        assert all(x["reason"] == "personal" for x in body["items"])
        assert body["items"][0]["score"] == pytest.approx(1.0) and len(body["rec_id"]) == 32
        again = await get_json(c, "/v1/recommendations/u1?k=4")
        assert again["rec_id"] != body["rec_id"]
        # k larger than the personal list: the popular list fills the rest.
        full = await get_json(c, "/v1/recommendations/u3?k=4")
        assert items_of(full) == ["c", "g", "a", "b"]  # then popular:all without the repeated c
        assert full["source"] == "personal" and full["items"][2]["reason"] == "popular in all"


async def test_filters_category_price_and_exclusions(store):
    async with sidecar(SidecarConfig(lmdb=store)) as c:
        assert items_of(await get_json(c, "/v1/recommendations/u1?category=MUGS")) == ["a", "b", "f"]
        # Price bounds drop items of unknown price (f), and out-of-stock ones (d) always.
        assert items_of(await get_json(c, "/v1/recommendations/u1?min_price=4&max_price=12")) == ["a", "b"]
        assert items_of(await get_json(c, "/v1/recommendations/u1?exclude=a,c&k=3")) == ["b", "f", "e"]
        # Everything of u1 filtered out: the segment and popular lists are filtered the same way.
        body = await get_json(c, "/v1/recommendations/u1?category=tea&exclude=c&country=GB")
        assert items_of(body) == ["g"] and body["source"] == "segment"
        nothing = await get_json(c, "/v1/recommendations/u1?category=tea&exclude=c,g")
        assert nothing["items"] == [] and nothing["source"] == "fallback"


async def test_diversity_spreads_categories_and_zero_keeps_the_order(store):
    async with sidecar(SidecarConfig(lmdb=store)) as c:
        plain = items_of(await get_json(c, "/v1/recommendations/u1?k=4&diversity=0"))
        assert plain == ["a", "b", "c", "f"]
        diverse = items_of(await get_json(c, "/v1/recommendations/u1?k=3&diversity=1"))
        assert diverse == ["a", "c", "e"]  # mugs, tea, pots: one of each before a second mug
        cats = [ITEMS[i].category for i in diverse]
        assert len(set(cats)) == 3


async def test_explore_puts_an_under_exposed_trending_item_in_one_slot(store):
    async with sidecar(SidecarConfig(lmdb=store, seed=1)) as c:
        seen = []
        for _ in range(2):
            body = await get_json(c, "/v1/recommendations/u1?k=4&explore=1")
            explored = [x["item"] for x in body["items"] if x["reason"] == "explore"]
            assert len(explored) == 1 and len(body["items"]) == 4
            seen.append(explored[0])
        # new1 and new2 were never served; the second draw takes the one still unexposed.
        assert sorted(seen) == ["new1", "new2"]
        # explore=0 never explores.
        body = await get_json(c, "/v1/recommendations/u1?k=4&explore=0")
        assert all(x["reason"] != "explore" for x in body["items"])


async def test_unknown_user_gets_the_segment_list_then_the_shop_list(store):
    async with sidecar(SidecarConfig(lmdb=store)) as c:
        full = await get_json(c, "/v1/recommendations/nobody?country=gb&device=Mobile&hour=20&weather=rain&intent=gift ideas")
        assert full["source"] == "segment" and items_of(full)[:2] == ["e", "g"]
        assert full["items"][0]["reason"] == "popular in country=GB|device=mobile|hour=evening"
        country = await get_json(c, "/v1/recommendations/nobody?country=GB&device=desktop")
        assert country["source"] == "segment" and items_of(country)[:2] == ["g", "c"]
        shop = await get_json(c, "/v1/recommendations/nobody")
        assert shop["source"] == "popular" and items_of(shop) == ["c", "a", "b"] and shop["model_version"] == 7


async def test_no_store_serves_the_static_fallback_then_picks_the_store_up(tmp_path, caplog):
    path = tmp_path / "later"
    cfg = SidecarConfig(lmdb=str(path), fallback_items=("x1", "x2"), reopen_seconds=0.05)
    with caplog.at_level("WARNING", logger="recofast.sidecar"):
        async with sidecar(cfg) as c:
            body = await get_json(c, "/v1/recommendations/u1?k=5")
            assert body["source"] == "fallback" and items_of(body) == ["x1", "x2"]
            assert (await get_json(c, "/v1/popular"))["source"] == "fallback"
            assert (await get_json(c, "/v1/items/a/similar"))["source"] == "fallback"
            ready = await get_json(c, "/readyz")
            assert ready["status"] == "ready" and "does not exist" in ready["lmdb"]
            # The engine creates the store: the sidecar opens it without a restart.
            write_store(tmp_path / "staging")
            os.rename(tmp_path / "staging", path)  # appears whole, as a deployed store would
            deadline = time.monotonic() + 10
            while (await get_json(c, "/v1/recommendations/u1"))["source"] != "personal":
                assert time.monotonic() < deadline
                await asyncio.sleep(0.05)
    unavailable = [r for r in caplog.records if "list store unavailable" in r.message]
    assert len(unavailable) == 1, [r.message for r in caplog.records]


async def test_no_store_and_no_fallback_is_an_empty_list_and_not_ready(tmp_path):
    async with sidecar(SidecarConfig(lmdb=str(tmp_path / "missing"))) as c:
        body = await get_json(c, "/v1/recommendations/u1")
        assert body["source"] == "fallback" and body["items"] == []
        assert (await get_json(c, "/readyz", status=503))["status"] == "not ready"
        assert (await get_json(c, "/healthz"))["status"] == "ok"


async def test_similar_items_from_the_exported_neighbours_else_popular(store):
    async with sidecar(SidecarConfig(lmdb=store)) as c:
        body = await get_json(c, "/v1/items/a/similar?k=3")
        assert body["item"] == "a" and body["source"] == "similar" and body["model_version"] == 5
        # The engine's neighbours of a, in order; d (out of stock) never shows.
        assert items_of(body) == ["b", "c", "e"] and {x["reason"] for x in body["items"]} == {"similar"}
        # Filters apply; a short list is filled from the popular list (without a itself).
        assert items_of(await get_json(c, "/v1/items/a/similar?k=4&category=tea&country=GB")) == ["c", "g"]
        unknown = await get_json(c, "/v1/items/zzz/similar")
        assert unknown["source"] == "popular" and items_of(unknown) == ["c", "a", "b"]
        in_gb = await get_json(c, "/v1/items/zzz/similar?country=GB&k=2")
        assert in_gb["source"] == "popular" and items_of(in_gb) == ["g", "c"]
        lonely = await get_json(c, "/v1/items/lonely/similar?k=2")  # exported, but no neighbours
        assert lonely["source"] == "popular" and items_of(lonely) == ["c", "a"]


async def test_popular_per_segment_and_kind(store):
    async with sidecar(SidecarConfig(lmdb=store)) as c:
        assert items_of(await get_json(c, "/v1/popular?k=2")) == ["c", "a"]
        gb = await get_json(c, "/v1/popular?segment=country=GB")
        assert gb["segment"] == "country=GB" and gb["source"] == "popular" and items_of(gb) == ["g", "c"]
        assert items_of(await get_json(c, "/v1/popular?kind=trending&max_price=9.2")) == ["new1", "a"]
        assert (await get_json(c, "/v1/popular?segment=country=FR"))["source"] == "fallback"


# -- tokens, CORS, bad input ------------------------------------------------------------------


async def test_user_tokens_let_a_shopper_fetch_only_its_own_list(store):
    async with sidecar(SidecarConfig(lmdb=store, token_secret="s3cret")) as c:
        assert (await get_json(c, "/v1/recommendations/u1", status=401))["status"] == 401
        mine = user_token("s3cret", "u1")
        assert items_of(await get_json(c, "/v1/recommendations/u1?k=1", headers={"Authorization": f"Bearer {mine}"})) == ["a"]
        assert items_of(await get_json(c, f"/v1/recommendations/u1?k=1&token={mine}")) == ["a"]
        await get_json(c, "/v1/recommendations/u2", status=403, headers={"Authorization": f"Bearer {mine}"})
        await get_json(c, "/v1/recommendations/u1?token=" + user_token("other", "u1"), status=403)


async def test_cors_for_configured_origins_only(store):
    async with sidecar(SidecarConfig(lmdb=store, cors_origins=("https://shop.example",))) as c:
        pre = await c.options("/v1/events", headers={"Origin": "https://shop.example", "Access-Control-Request-Method": "POST"})
        assert pre.status == 204 and pre.headers["Access-Control-Allow-Origin"] == "https://shop.example"
        r = await c.get("/v1/popular", headers={"Origin": "https://shop.example"})
        assert r.status == 200 and r.headers["Access-Control-Allow-Origin"] == "https://shop.example"
        other = await c.get("/v1/popular", headers={"Origin": "https://evil.example"})
        assert "Access-Control-Allow-Origin" not in other.headers


BAD_GETS = [
    "/v1/recommendations/u1?k=0",
    "/v1/recommendations/u1?k=abc",
    "/v1/recommendations/u1?k=100000",
    "/v1/recommendations/u1?hour=24",
    "/v1/recommendations/u1?hour=x",
    "/v1/recommendations/u1?country=G1",
    "/v1/recommendations/u1?device=" + "x" * 100,
    "/v1/recommendations/u1?weather=<script>",
    "/v1/recommendations/u1?diversity=2",
    "/v1/recommendations/u1?explore=-0.1",
    "/v1/recommendations/u1?explore=nan",
    "/v1/recommendations/u1?min_price=10&max_price=5",
    "/v1/recommendations/u1?max_price=inf",
    "/v1/recommendations/u1?category=",
    "/v1/recommendations/" + "u" * 600,
    "/v1/recommendations/u%01",
    "/v1/items/a/similar?k=-1",
    "/v1/popular?segment=a%20b",
    "/v1/popular?kind=weekly",
    "/v1/nothing-here",
]


async def test_bad_input_is_a_4xx_json_error_never_a_5xx(store):
    async with sidecar(SidecarConfig(lmdb=store, max_body=2048)) as c:
        for url in BAD_GETS:
            r = await c.get(url)
            assert 400 <= r.status < 500, (url, r.status)
            body = await r.json()
            assert body["error"] and body["status"] == r.status, url
        r = await c.delete("/v1/popular")
        assert r.status == 405 and (await r.json())["status"] == 405 and "GET" in r.headers["Allow"]
        for data in (b"not json", b"", b"\xff", b"42", b'{"events": 5}', b"[]", b'{"v":1,"id":"x","type":"view","user":"u1"}'):
            r = await c.post("/v1/events", data=data)
            assert r.status == 400, (data, r.status)
            body = await r.json()
            assert body["status"] == 400 and body["error"], data
        r = await c.post("/v1/events", data=b"[" + b" " * 4000 + b"]")
        assert r.status == 413 and (await r.json())["status"] == 413
    # One process opens a store once: the second sidecar comes after the first is closed.
    too_many = json.dumps([{"v": 1}] * 1001).encode()
    async with sidecar(SidecarConfig(lmdb=store)) as c2:
        assert (await c2.post("/v1/events", data=too_many)).status == 413
        deep = await c2.post("/v1/events", data=b"[" * 60000 + b"]" * 60000)
        assert deep.status == 400 and "nested" in (await deep.json())["error"]
        odd = await get_json(c2, "/v1/recommendations/%ff%fe")  # not UTF-8: kept as text, no list
        assert odd["source"] == "popular"


async def test_non_finite_scores_in_the_store_still_make_json(tmp_path):
    with liststore.ListWriter(tmp_path / "s", map_size=1 << 22) as w:
        w.commit(codec.Commit(user_lists={"u": codec.ListRecord(["a", "b"], [float("nan"), float("inf")], 1, T)}))
    async with sidecar(SidecarConfig(lmdb=str(tmp_path / "s"))) as c:
        r = await c.get("/v1/recommendations/u")
        assert r.status == 200 and "NaN" not in await r.text() and "Infinity" not in await r.text()
        assert [x["score"] for x in (await r.json())["items"]] == [0.0, 0.0]


# -- events and impressions through NATS ------------------------------------------------------


def view(i: int, user: str, item: str, **kw) -> dict:  # noqa: ANN003
    return {"v": 1, "id": f"s{i}", "type": "view", "user": user, "item": item, "ts": 1_700_000_000_000 + i, **kw}


async def test_events_without_nats_answer_503(store):
    async with sidecar(SidecarConfig(lmdb=store)) as c:
        r = await c.post("/v1/events", json=view(1, "u1", "a"))
        assert r.status == 503 and "no NATS" in (await r.json())["error"]


async def test_events_are_validated_and_published_and_lists_are_logged_as_impressions(store, nats_url):
    async with await nats.connect(nats_url) as nc:
        js = nc.jetstream()
        await js.add_stream(name=STREAM, subjects=[EVENTS_SUBJECTS])
        imps = await nc.subscribe(IMPRESSIONS_SUBJECT)
        dlq = await nc.subscribe(DLQ_SUBJECT)
        await nc.flush()
        async with sidecar(SidecarConfig(lmdb=store, nats=nats_url, partitions=4)) as c:
            deadline = time.monotonic() + 10
            while (await c.get("/readyz")).status != 200:
                assert time.monotonic() < deadline
                await asyncio.sleep(0.02)
            r = await c.post("/v1/events", json={"events": [view(1, "u1", "a"), {"v": 2, "id": "bad"}, view(2, "u7", "b")]})
            body = await r.json()
            assert r.status == 202, body
            assert body["accepted"] == 2 and body["rejected"] == 1
            assert body["errors"] == [{"index": 1, "reason": "unknown schema version 2"}]
            dead = await dlq.next_msg(timeout=5)
            assert json.loads(dead.data) == {"v": 2, "id": "bad"}
            assert dead.headers[DLQ_REASON_HEADER] == "unknown schema version 2" and dead.headers[DLQ_SOURCE_HEADER] == "sidecar"
            # One event alone, sent as text/plain like the track.js beacon.
            r = await c.post("/v1/events", data=json.dumps(view(3, "u1", "c")), headers={"Content-Type": "text/plain"})
            assert r.status == 202 and (await r.json())["accepted"] == 1
            # One message per partition and request, the events packed in it.
            info = await js.stream_info(STREAM)
            assert info.state.messages == (1 if _same_partition("u1", "u7", 4) else 2) + 1
            sub = await js.pull_subscribe(EVENTS_SUBJECTS, durable="t", stream=STREAM)
            got = await sub.fetch(10, timeout=5)
            users = sorted(e["user"] for m in got for e in (lambda d: d if isinstance(d, list) else [d])(json.loads(m.data)))
            assert users == ["u1", "u1", "u7"]
            assert all(m.subject.startswith("recofast.events.p") for m in got)

            rec = await get_json(c, "/v1/recommendations/u1?k=2")
            msg = await imps.next_msg(timeout=5)
            logged = json.loads(msg.data)
            assert logged[0]["rec_id"] == rec["rec_id"] and logged[0]["items"] == ["a", "b"] and logged[0]["user"] == "u1"
            metrics = await (await c.get("/metrics")).text()
            assert metric(metrics, "recofast_sidecar_events_total", result="accepted") == 3
            assert metric(metrics, "recofast_sidecar_events_total", result="rejected") == 1
            assert metric(metrics, "recofast_sidecar_nats_connected") == 1


def _same_partition(a: str, b: str, n: int) -> bool:
    import zlib

    return zlib.crc32(a.encode()) % n == zlib.crc32(b.encode()) % n


async def test_posted_events_reach_the_engine_and_change_the_served_list(tmp_path, nats_url, engine_config, running_engine, wait_applied):
    async with await nats.connect(nats_url) as nc, running_engine(engine_config(tmp_path, nats_url)) as engine:
        js = nc.jetstream()
        # The engine writes the store in this process, so the sidecar shares its environment.
        async with sidecar(SidecarConfig(nats=nats_url), reader=engine.writer.reader()) as c:
            deadline = time.monotonic() + 10
            while (await c.get("/readyz")).status != 200:
                assert time.monotonic() < deadline
                await asyncio.sleep(0.02)
            before = await get_json(c, "/v1/recommendations/u0")
            assert before["source"] != "personal"
            # Everyone who bought the lamp also bought the bulb; u0 buys the lamp.
            evs = [dict(view(i, f"u{i}", "lamp"), type="purchase") for i in range(1, 6)]
            evs += [dict(view(10 + i, f"u{i}", "bulb"), type="purchase") for i in range(1, 6)]
            assert (await c.post("/v1/events", json={"events": evs})).status == 202
            assert (await c.post("/v1/events", json=dict(view(100, "u0", "lamp"), type="purchase"))).status == 202
            await wait_applied(engine, js)
            after = await get_json(c, "/v1/recommendations/u0")
            assert after["source"] == "personal" and items_of(after)[0] == "bulb"
            assert after["model_version"] == engine.model_version


# -- the rest ---------------------------------------------------------------------------------


async def test_track_js_metrics_health_and_openapi_cover_every_route(store):
    async with sidecar(SidecarConfig(lmdb=store)) as c:
        r = await c.get("/v1/track.js")
        js = await r.text()
        assert r.status == 200 and r.content_type == "application/javascript"
        assert "sendBeacon" in js and "/v1/events" in js and "recofast.track" in js
        await get_json(c, "/v1/recommendations/u1")
        await c.get("/v1/popular?k=0")
        metrics = await (await c.get("/metrics")).text()
        assert metric(metrics, "recofast_sidecar_lists_served_total", endpoint="recommendations", source="personal") == 1
        assert metric(metrics, "recofast_sidecar_requests_total", route="/v1/popular", status="400") == 1
        assert metric(metrics, "recofast_sidecar_lmdb_available") == 1
        # Latency is a histogram: every request so far (track.js, the list, the bad popular) is in it.
        assert metric(metrics, "recofast_sidecar_request_seconds_count") == 3
        assert metric(metrics, "recofast_sidecar_request_seconds_bucket", le="+Inf") == 3
        assert (await get_json(c, "/readyz"))["lmdb"] == "open"
        doc = await get_json(c, "/openapi.json")
        assert doc == json.loads(json.dumps(openapi_document()))
        routes = {(r.method.lower(), r.resource.canonical) for r in c.app.router.routes() if r.method != "HEAD"}
        described = {(m, p) for p, ops in doc["paths"].items() for m in ops}
        assert routes == described


def test_the_command_line_and_the_configuration_file(tmp_path):
    args = _parser().parse_args(["--lmdb", "/x", "--port", "9000", "--fallback", "a,b", "--cors", "*", "--partitions", "3"])
    cfg = config_from_args(args, env={"RECOFAST_SIDECAR_PORT": "7000", "RECOFAST_SIDECAR_MAX_K": "50"})
    assert (cfg.lmdb, cfg.fallback_items, cfg.cors_origins, cfg.partitions, cfg.port, cfg.max_k) == ("/x", ("a", "b"), ("*",), 3, 9000, 50)
    out = subprocess.run([sys.executable, "-m", "recofast_sidecar.server", "--help"], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0 and "--lmdb DIR" in out.stdout and "RECOFAST_SIDECAR_TOKEN_SECRET" in out.stdout
    bad = subprocess.run([sys.executable, "-m", "recofast_sidecar.server", "--sync", "--lmdb", "/x"], capture_output=True, text=True, timeout=30)
    assert bad.returncode != 0 and "sync needs nats" in bad.stderr

    # The annotated file shows every option, at its default.
    shipped = Path(__file__).resolve().parent.parent / "sidecar" / "recofast-sidecar.toml"
    with open(shipped, "rb") as f:
        table = tomllib.load(f)["sidecar"]
    # timezone and context_weight come from the engine (the store's meta record) unless set.
    assert set(table) == {f.name for f in msgspec.structs.fields(SidecarConfig)} - {"timezone", "context_weight"}
    assert load_config(shipped, env={}) == msgspec.structs.replace(SidecarConfig(), lmdb="data/lmdb")
    mine = tmp_path / "edge.toml"
    mine.write_text('[sidecar]\nlmdb = "/srv/lists"\nport = 81\ncors_origins = ["https://a.example"]\n')
    cfg = config_from_args(_parser().parse_args(["--config", str(mine), "--port", "82"]), env={"RECOFAST_SIDECAR_TOKEN_SECRET": "s"})
    assert (cfg.lmdb, cfg.port, cfg.cors_origins, cfg.token_secret) == ("/srv/lists", 82, ("https://a.example",), "s")
    mine.write_text("[sidecar]\nprot = 81\n")
    with pytest.raises(SystemExit, match="unknown sidecar option 'prot'"):
        config_from_args(_parser().parse_args(["--config", str(mine)]), env={})
    with pytest.raises(SystemExit, match="option `port`: Expected `int`"):
        config_from_args(_parser().parse_args(["--lmdb", "/x"]), env={"RECOFAST_SIDECAR_PORT": "many"})


@pytest.mark.parametrize("name", ["recofast_sidecar.protocol.events", "recofast_sidecar.protocol.keys", "recofast_sidecar.protocol.settings", "recofast_sidecar.protocol.context", "recofast_sidecar.protocol.codec", "recofast_sidecar.protocol.liststore", "recofast_sidecar.rerank", "recofast_sidecar.app", "recofast_sidecar.config", "recofast_sidecar.params", "recofast_sidecar.metrics", "recofast_sidecar.openapi"])
def test_docstring_examples(name):
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0 and result.attempted > 0


# -- any input: a 4xx or an answer, never a 5xx -----------------------------------------------

_text = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=40)
_params = st.dictionaries(
    st.sampled_from(["k", "hour", "country", "device", "weather", "intent", "category", "min_price", "max_price",
                     "exclude", "diversity", "explore", "segment", "kind", "token"]),
    st.one_of(_text, st.integers(-5, 300).map(str), st.floats(allow_nan=True).map(str)),
    max_size=6,
)


# Deterministic in the normal run; RECOFAST_FUZZ_EXAMPLES=2000 searches further.
@settings(
    max_examples=int(os.environ.get("RECOFAST_FUZZ_EXAMPLES", "40")),
    derandomize="RECOFAST_FUZZ_EXAMPLES" not in os.environ,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    requests=st.lists(
        st.tuples(st.sampled_from(["/v1/recommendations/{}", "/v1/items/{}/similar", "/v1/popular"]), _text, _params),
        min_size=1, max_size=8,
    ),
    bodies=st.lists(st.one_of(st.binary(max_size=300), _text.map(str.encode)), max_size=3),
)
def test_no_input_makes_a_5xx(store, requests, bodies):
    async def run() -> None:
        async with sidecar(SidecarConfig(lmdb=store, token_secret=None)) as c:
            for path, ident, params in requests:
                url = path.format(urllib.parse.quote(ident, safe="")) + "?" + urllib.parse.urlencode(params)
                r = await c.get(url)
                assert r.status < 500, (url, r.status, await r.text())
                body = await r.json()
                assert ("error" in body) == (r.status >= 400)
            for data in bodies:
                r = await c.post("/v1/events", data=data)
                # 503 is "no NATS configured" for a valid event, and only that.
                assert r.status in (400, 413) or (r.status == 503 and "NATS" in (await r.json())["error"]), (data, r.status)

    asyncio.run(run())


async def test_sync_mirrors_the_list_bucket_into_the_local_store(tmp_path, nats_url):
    from recofast_sidecar.protocol.keys import kv_key
    from recofast_sidecar.protocol.names import DB_USER_LISTS, LISTS_BUCKET
    from recofast_sidecar.protocol.keys import put_commit

    odd = "ü ser/1"  # any id makes a valid bucket key
    async with await nats.connect(nats_url) as nc:
        kv = await nc.jetstream().create_key_value(bucket=LISTS_BUCKET)
        await put_commit(kv, codec.Commit(
            user_lists={odd: lst(["a", "d", "c"])}, items=ITEMS, segments={"popular:all": lst(["g", "b"])},
            meta=codec.MetaRecord(model_version=7, last_seq=1, time=T),
        ))
        cfg = SidecarConfig(lmdb=str(tmp_path / "mirror"), nats=nats_url, sync=True)
        async with sidecar(cfg) as c:
            deadline = time.monotonic() + 15
            while (r := await c.get("/readyz")).status != 200:
                assert time.monotonic() < deadline, await r.text()
                await asyncio.sleep(0.02)
            assert (await r.json())["sync"] == "live"
            user = "/v1/recommendations/" + urllib.parse.quote(odd, safe="")
            body = await get_json(c, user)
            assert body["source"] == "personal" and items_of(body)[:2] == ["a", "c"]  # d is out of stock

            async def served(want: list[str]) -> None:
                while items_of(await get_json(c, user + "?k=2")) != want:
                    assert time.monotonic() < deadline
                    await asyncio.sleep(0.02)

            # A new list in the bucket is served; a deleted one falls back to the shop's list.
            deadline = time.monotonic() + 15
            await put_commit(kv, codec.Commit(user_lists={odd: lst(["e", "b"], version=8)}))
            await served(["e", "b"])
            await kv.delete(kv_key(DB_USER_LISTS, odd))
            await served(["g", "b"])
            assert (await get_json(c, user))["source"] == "popular"
            assert metric(await (await c.get("/metrics")).text(), "recofast_sidecar_sync_records_applied") == 13


@settings(max_examples=200, deadline=None)
@given(
    items=st.lists(st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=20), max_size=30),
    version=st.integers(0, 2**64 - 1),
    cut=st.integers(1, 40),
)
def test_list_view_reads_what_decode_list_reads_and_rejects_truncation(items, version, cut):
    rec = codec.ListRecord(items=items, scores=[float(i) / 7 for i in range(len(items))], model_version=version, time=T)
    buf = codec.encode_list(rec)
    view = codec.ListView(buf)
    full = codec.decode_list(buf)
    assert (len(view), view.model_version, view.time) == (len(full.items), full.model_version, full.time)
    assert list(view) == list(zip(full.items, full.scores))
    short = buf[: max(0, len(buf) - cut)]
    with pytest.raises(codec.CodecError):
        list(codec.ListView(short))


async def test_posted_events_are_checked_against_the_schema_registry(store, nats_url):
    from recofast_sidecar.protocol.names import SCHEMA_BUCKET

    async with await nats.connect(nats_url) as nc:
        js = nc.jetstream()
        await js.add_stream(name=STREAM, subjects=[EVENTS_SUBJECTS])
        kv = await js.create_key_value(bucket=SCHEMA_BUCKET)
        await kv.put("event.v2", b"{}")  # the engine has moved on to a version 2 this sidecar does not know
        async with sidecar(SidecarConfig(lmdb=store, nats=nats_url, schema_refresh_seconds=0.05)) as c:
            deadline = time.monotonic() + 10
            while (r := await c.post("/v1/events", json=view(1, "u1", "a"))).status != 400:
                assert time.monotonic() < deadline, await r.text()
                await asyncio.sleep(0.02)
            assert (await r.json())["errors"] == [{"index": 0, "reason": "unknown schema version 1"}]
            # Version 1 registered again: accepted at the door.
            await kv.put("event.v1", b"{}")
            while (r := await c.post("/v1/events", json=view(2, "u1", "a"))).status != 202:
                assert time.monotonic() < deadline, await r.text()
                await asyncio.sleep(0.02)


async def test_lists_are_served_while_nats_is_unreachable(store, caplog):
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with caplog.at_level("ERROR", logger="nats"):
        async with sidecar(SidecarConfig(lmdb=store, nats=f"nats://127.0.0.1:{port}")) as c:
            t0 = time.monotonic()
            for _ in range(20):
                assert (await get_json(c, "/v1/recommendations/u1?k=2"))["source"] == "personal"
            assert time.monotonic() - t0 < 2.0  # impressions wait for nobody
            r = await c.post("/v1/events", json=view(1, "u1", "a"))
            assert r.status == 503 and "not connected" in (await r.json())["error"]
            ready = await get_json(c, "/readyz", status=503)
            assert ready["nats"] == "disconnected" and ready["lmdb"] == "open"
            metrics = await (await c.get("/metrics")).text()
            assert metric(metrics, "recofast_sidecar_nats_connected") == 0


def test_several_processes_share_the_port_and_stop_on_sigterm(store, tmp_path):
    import signal
    import socket
    import urllib.request

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    err = open(tmp_path / "stderr.txt", "w")  # noqa: SIM115 - closed below, read on failure
    temp = tmp_path / "temp"  # where the supervisor makes its metrics folder
    temp.mkdir()
    proc = subprocess.Popen(
        [sys.executable, "-m", "recofast_sidecar.server", "--lmdb", store, "--port", str(port), "--processes", "2", "--log-level", "WARNING"],
        stdout=subprocess.DEVNULL, stderr=err, env={**os.environ, "TMPDIR": str(temp)},
    )
    try:
        deadline = time.monotonic() + 20
        answers = []
        while len(answers) < 40:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/recommendations/u1?k=2", timeout=2) as r:
                    answers.append(json.loads(r.read()))
            except OSError:
                assert time.monotonic() < deadline and proc.poll() is None
                time.sleep(0.1)
        assert all(a["source"] == "personal" and items_of(a) == ["a", "b"] for a in answers)
        # Whichever process answers /metrics counts the lists both served.
        assert [p.name for p in temp.iterdir()][0].startswith("recofast-sidecar-metrics-")
        # The store gauge is the least over the processes of what each set at its last
        # update (every second): one that started later may still show its store closed.
        deadline = time.monotonic() + 10
        while True:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
                if metric(r.read().decode(), "recofast_sidecar_lmdb_available") == 1:
                    break
            assert time.monotonic() < deadline, "a process never reported its store open"
            time.sleep(0.2)
        for _ in range(4):
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
                text = r.read().decode()
            assert metric(text, "recofast_sidecar_lists_served_total", endpoint="recommendations", source="personal") == 40
            assert metric(text, "recofast_sidecar_requests_total", route="/v1/recommendations/{user_id}", status="200") == 40
            assert metric(text, "recofast_sidecar_lmdb_available") == 1
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(20)
        err.flush()
        assert code == 0, (tmp_path / "stderr.txt").read_text()[-3000:]
        assert list(temp.iterdir()) == []  # the metrics folder is gone
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        err.close()


async def test_engine_publishes_lists_to_the_bucket_and_a_remote_sidecar_serves_them(
    tmp_path, nats_url, engine_config, running_engine, wait_applied
):
    """The engine on one host (its LMDB), the sidecar on another (its own LMDB, --sync)."""
    from recofast.engine.publish import subject_for
    from recofast_sidecar.protocol import events as ev
    from recofast_sidecar.protocol.names import MSG_ID_HEADER

    cfg = engine_config(tmp_path / "engine-host", nats_url, publish_lists=True)
    async with await nats.connect(nats_url) as nc, running_engine(cfg) as engine:
        js = nc.jetstream()
        batch = [ev.make_event(f"kv{i}", "purchase", f"u{i % 4}", f"i{i % 37}", ts_ms=1_700_000_000_000 + i) for i in range(40)]
        await js.publish(subject_for(0), ev.encode(batch), headers={MSG_ID_HEADER: "kv-batch"})
        await wait_applied(engine, js)
        want = engine.writer.reader().user_list("u1").items  # what the engine committed
        assert len(want) == 5
        deadline = time.monotonic() + 20
        while engine.mirror.published == 0:
            assert time.monotonic() < deadline, "the engine published nothing to the bucket"
            await asyncio.sleep(0.02)
        edge = SidecarConfig(lmdb=str(tmp_path / "edge-host"), nats=nats_url, sync=True)
        async with sidecar(edge) as c:
            deadline = time.monotonic() + 20
            while (r := await c.get("/readyz")).status != 200:
                assert time.monotonic() < deadline, await r.text()
                await asyncio.sleep(0.02)
            while True:
                body = await get_json(c, "/v1/recommendations/u1?k=5")
                if body["source"] == "personal":
                    break
                assert time.monotonic() < deadline, body
                await asyncio.sleep(0.05)
            assert items_of(body) == want
        assert engine.mirror.published > 0
