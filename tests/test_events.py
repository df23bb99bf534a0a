"""Event schema v1: valid events decode, bad ones are rejected with a reason, and
enrichment derives device, local time, region, weather and segment."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
from recofast.engine.enrich import (
    Enricher,
    StaticWeatherProvider,
    device_from_ua,
    region_of,
)
from recofast_sidecar.protocol import events as ev

GOOD = b'{"v":1,"id":"a","type":"view","user":"u","item":"i","ts":"2024-03-31T01:30:00Z","extra":1}'


def test_single_and_packed_events_decode():
    ok, bad = ev.decode_events(GOOD)
    assert bad == [] and ok[0].id == "a" and ok[0].ts_seconds == 1711848600.0
    body = ev.encode([ev.make_event(f"e{i}", "purchase", f"u{i}", f"i{i}", ts_ms=1_700_000_000_000 + i) for i in range(100)])
    ok, bad = ev.decode_events(body)
    assert [e.id for e in ok] == [f"e{i}" for i in range(100)] and bad == []


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b'{"v":3,"id":"x","type":"view","user":"u","item":"i"}', "unknown schema version 3"),
        (b'{"id":"x","type":"view","user":"u","item":"i"}', "missing schema version `v`"),
        (b'{"v":1,"id":"x","type":"teleport","user":"u","item":"i"}', "Invalid enum value 'teleport'"),
        (b'{"v":1,"id":"x","type":"view","user":"u"}', "view event needs an item"),
        (b'{"v":1,"id":"x","type":"search","user":"u"}', "search event needs a query"),
        (b'{"v":1,"id":"","type":"view","user":"u","item":"i"}', "length >= 1"),
        (b'{"v":1,"id":"x","type":"view","user":"u","item":"i","ts":"yesterday"}', "RFC3339"),
        (b'{"v":1,"id":"x","type":"view","user":"u","item":"i","context":{"lat":123}}', "<= 90"),
        (b'not json', "malformed"),
    ],
)
def test_bad_events_are_rejected_with_a_reason(body, reason):
    ok, bad = ev.decode_events(body)
    assert ok == [] and len(bad) == 1
    assert reason in bad[0].reason


def test_one_bad_event_in_a_pack_leaves_the_others():
    body = b"[" + GOOD + b',{"v":1,"id":"b","type":"view","user":"u"},' + GOOD.replace(b'"a"', b'"c"') + b"]"
    ok, bad = ev.decode_events(body)
    assert [e.id for e in ok] == ["a", "c"]
    assert [(r.index, r.reason) for r in bad] == [(1, "view event needs an item")]


def test_item_upserts():
    ok, bad = ev.decode_item_upserts(b'[{"v":1,"item":5,"price":2.5,"in_stock":false},{"v":1}]')
    assert ok[0].item == "5" and ok[0].in_stock is False and ok[0].category is None
    assert len(bad) == 1 and "item" in bad[0].reason


def test_local_time_follows_daylight_saving():
    en = Enricher(timezone="Europe/London")
    # 2024-03-31 00:30 UTC is 00:30 GMT (Sunday); 02:30 UTC is 03:30 BST.
    ts = np.array([1711845000.0, 1711852200.0, 1700000000.0])
    hour, weekday = en.local_hour_weekday(ts)
    assert hour.tolist() == [0, 3, 22] and weekday.tolist() == [6, 6, 1]


def test_enrichment_prefers_the_producers_context():
    en = Enricher(weather=StaticWeatherProvider({"*": "sun", "north-america": "snow"}))
    a = ev.make_event("1", "view", "u", "i", context={"device": "kiosk", "region": "mars", "weather": "dust"})
    b = ev.make_event("2", "view", "u", "i", context={"lat": 40.7, "lon": -74.0, "ua": "curl/8.0"})
    c = ev.make_event("3", "view", "u", "i")
    out = en.enrich([a, b, c])
    assert out.device == ["kiosk", "bot", "unknown"]
    assert out.region == ["mars", "north-america", "unknown"]
    assert out.weather == ["dust", "snow", "sun"]
    assert out.segment[1].startswith("country=unknown|device=bot|hour=")


def test_device_and_region_tables():
    assert device_from_ua("Mozilla/5.0 (SMART-TV; Linux; Tizen 6.0)") == "tv"
    assert device_from_ua("Mozilla/5.0 (Windows NT 10.0; Win64; x64) Chrome/120") == "desktop"
    assert region_of("EIRE") == "europe-west" and region_of("jp") == "asia-pacific"


async def test_http_weather_provider_answers_at_once_and_fills_in_the_background():
    from aiohttp import web
    from aiohttp.test_utils import TestServer
    from recofast.engine.enrich import HttpWeatherProvider

    calls: list[str] = []

    async def handler(request: web.Request) -> web.Response:
        calls.append(request.match_info["region"])
        return web.json_response({"weather": "fog"})

    app = web.Application()
    app.router.add_get("/w/{region}", handler)
    async with TestServer(app) as server:
        wp = HttpWeatherProvider(f"http://{server.host}:{server.port}/w/{{region}}", ttl=60)
        await wp.start()
        try:
            assert wp.weather("europe-west", 0.0) is None  # no answer yet: never waits
            for _ in range(200):
                if wp.weather("europe-west", 0.0) == "fog":
                    break
                await asyncio.sleep(0.01)
            assert wp.weather("europe-west", 0.0) == "fog" and calls == ["europe-west"]
        finally:
            await wp.close()


def test_malformed_arrays_are_rejected_never_raised():
    from recofast_sidecar.protocol.events import decode_events, decode_item_upserts

    for decode, what in ((decode_events, "events"), (decode_item_upserts, "catalog upserts")):
        ok, bad = decode(b'[{"v": 1, "item": "mug"}, {"v": 1, broken')
        assert ok == [] and len(bad) == 1 and bad[0].reason.startswith(f"not a JSON array of {what}")
    ok, bad = decode_item_upserts(b'[{"v": 1, "item": "mug"}, {"v": 9, "item": "cup"}, {"item": 3}]')
    assert [u.item for u in ok] == ["mug"]
    assert [r.index for r in bad] == [1, 2] and "unknown schema version 9" in bad[0].reason


# -- limits at the door -----------------------------------------------------------------------


def _raw(**fields) -> bytes:
    import json

    base = {"v": 1, "id": "x", "type": "view", "user": "u", "item": "i", "ts": 1_700_000_000_000}
    base.update(fields)
    return json.dumps(base).encode()


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"ts": 1e300}, "after the accepted window"),
        ({"ts": 10**30}, "after the accepted window"),
        ({"ts": "9999-01-01T00:00:00Z"}, "after the accepted window"),
        ({"ts": "1999-12-31T23:59:59Z"}, "before the accepted window"),
        ({"user": "é" * 129}, "more than 256"),
        ({"item": "x" * 257}, "length <= 256"),
        ({"session": "s" * 300}, "length <= 256"),
        ({"context": {"country": "ü" * 33}}, "more than 64"),
        ({"context": {"device": "d" * 65}}, "length <= 64"),
        ({"context": {"intent": "red " + "a" * 65}}, "word of more than 64 bytes"),
        ({"type": "search", "item": None, "query": "é" * 40}, "word of more than 64 bytes"),
        ({"price": -1}, ">= 0"),
        ({"qty": 1e13}, "<= 1000000000000"),
    ],
)
def test_what_later_code_builds_keys_from_is_bounded_at_the_door(fields, reason):
    ok, bad = ev.decode_events(_raw(**fields), now=1_700_000_000.0)
    assert ok == [] and len(bad) == 1 and reason in bad[0].reason, bad


def test_the_time_window_is_a_parameter_and_edges_are_accepted():
    now = 1_700_000_000.0
    assert ev.decode_events(_raw(ts=int((now + 86_400) * 1000)), now=now)[1] == []
    assert ev.decode_events(_raw(ts=int((now + 86_401) * 1000)), now=now)[0] == []
    assert ev.decode_events(_raw(ts=946_684_800_000), now=now)[1] == []
    wide = ev.TimeWindow(earliest=0.0, max_future=10 * 86_400.0)
    assert ev.decode_events(_raw(ts=int((now + 86_401) * 1000)), window=wide, now=now)[1] == []
    assert ev.decode_events(_raw(ts=5), window=None)[1] == []  # offline logs: any time


def test_rejects_in_a_pack_keep_their_positions_and_bytes():
    good = _raw(id="a")
    late = _raw(id="b", ts=1e300)
    body = b"[" + b",".join([good, b'{"v":1}', late, good.replace(b'"a"', b'"c"')]) + b"]"
    ok, bad = ev.decode_events(body)
    assert [e.id for e in ok] == ["a", "c"]
    assert [r.index for r in bad] == [1, 2] and bad[1].raw == late
    ok, bad = ev.decode_events(b"[" + good + b"," + late + b"]")  # the fast path
    assert [e.id for e in ok] == ["a"] and [(r.index, r.raw) for r in bad] == [(1, late)]
