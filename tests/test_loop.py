"""The closed loop through a real nats-server: impressions in their stream, events in theirs,
attributed by the engine by ``rec_id`` and by window, counted once, kept in SQLite."""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import time

import nats
import pytest
from recofast.engine.attribution import LoopStore, Windows
from recofast.engine.loop import loop_db_path
from recofast.engine.publish import subject_for
from recofast_sidecar.protocol import events as ev
from recofast_sidecar.protocol.feedback import Impression, encode_batch
from recofast_sidecar.protocol.names import (
    IMPRESSIONS_STREAM,
    IMPRESSIONS_SUBJECT,
    MSG_ID_HEADER,
    STREAM,
)

T = (int(time.time()) - 6 * 3600) * 1000  # six hours ago, in ms
MIN = 60_000


def imp(rec_id: str, user: str, items: list[str], ts: int, **kw) -> Impression:  # noqa: ANN003
    return Impression(rec_id=rec_id, ts=ts, endpoint="recommendations", source="personal", items=items,
                      sources=["personal"] * len(items), user=user, **kw)


def event(i: str, etype: str, user: str, item: str, ts: int, **kw) -> bytes:  # noqa: ANN003
    return ev.encode(ev.make_event(i, etype, user, item, ts_ms=ts, **kw))


async def wait_loop(engine, js, timeout: float = 30.0) -> None:  # noqa: ANN001
    """Until the engine's loop has applied both streams to their ends."""
    from recofast.engine.attribution import EVENTS, IMPRESSIONS

    deadline = time.monotonic() + timeout
    while True:
        ends = ((await js.stream_info(IMPRESSIONS_STREAM)).state.last_seq, (await js.stream_info(STREAM)).state.last_seq)
        got = (engine.loop.store.seq(IMPRESSIONS), engine.loop.store.seq(EVENTS))
        if got == ends and not engine.loop.store.db.execute("SELECT 1 FROM pending").fetchone():
            return
        assert time.monotonic() < deadline, f"loop at {got}, streams at {ends}"
        await asyncio.sleep(0.05)


def counts(path) -> dict[str, float]:  # noqa: ANN001
    with sqlite3.connect(path) as db:
        row = db.execute("SELECT sum(lists), sum(shown), sum(clicks), sum(carts), sum(purchases), sum(revenue), sum(hit_checks),"
                         " sum(hits) FROM totals").fetchone()
    return dict(zip(("lists", "shown", "clicks", "carts", "purchases", "revenue", "hit_checks", "hits"), row))


async def test_attribution_by_rec_id_by_window_outside_it_and_of_items_not_shown(tmp_path, nats_url, engine_config, running_engine):
    cfg = engine_config(tmp_path, nats_url, attribution_grace=0.5, http_port=0)
    async with await nats.connect(nats_url) as nc, running_engine(cfg) as engine:
        js = nc.jetstream()

        async def impressions(*recs: Impression) -> None:
            await js.publish(IMPRESSIONS_SUBJECT, encode_batch(list(recs)), headers={MSG_ID_HEADER: recs[0].rec_id})

        async def events(*raws: bytes) -> None:
            for n, raw in enumerate(raws):
                await js.publish(subject_for(0), raw, headers={MSG_ID_HEADER: f"{time.monotonic_ns()}-{n}"})

        await impressions(
            imp("rA", "u1", ["i1", "i2", "i3"], T),
            imp("rB", "u2", ["i4", "i5"], T, experiment="e", variant="b"),
            imp("rC", "u1", ["i9", "i2"], T + 1 * MIN),
        )
        await asyncio.sleep(0.3)  # the loop stores impressions before it reads the events below
        await events(
            event("e1", "click", "u1", "i2", T + MIN // 2, rec_id="rA"),        # by rec_id (rC, later, also shows i2)
            event("e2", "click", "u1", "i2", T + 2 * MIN),                      # by window: the latest list with i2 is rC
            event("e3", "click", "u2", "i4", T + 31 * MIN),                     # outside the 30-minute click window
            event("e4", "click", "u1", "i7", T + 2 * MIN + 10_000, rec_id="rA"),  # rA did not show i7
            event("e5", "purchase", "u2", "i5", T + 300 * MIN, price=10.0, qty=2.0),  # by the 24-hour purchase window
            event("e5", "purchase", "u2", "i5", T + 300 * MIN, price=10.0, qty=2.0),  # the same event again: counted once
            event("e6", "view", "u2", "i6", T + MIN // 6),                      # u2's next item after rB: a miss
            event("e7a", "click", "u1", "i1", T + 2 * MIN + 20_000, rec_id="rA"),
            event("e7b", "click", "u1", "i1", T + 2 * MIN + 30_000, rec_id="rA"),  # the same list and item: one click
            event("e8", "click", "u3", "i1", T + 3 * MIN, rec_id="rZ"),         # a rec_id never served
            event("e9", "click", "u4", "i8", T + 4 * MIN, rec_id="rD"),         # before its impression arrives
            event("e10", "add_to_cart", "u1", "i2", T + 5 * MIN, rec_id="rC"),
        )
        await asyncio.sleep(0.2)
        await impressions(imp("rD", "u4", ["i8"], T + 4 * MIN - 5_000))
        await wait_loop(engine, js)
        await asyncio.sleep(0.7)  # past the grace of e8
        await asyncio.wait_for(_until(lambda: not engine.loop.store.db.execute("SELECT 1 FROM pending").fetchone()), 10)
        path = loop_db_path(cfg)
        got = counts(path)
        assert got == {"lists": 4, "shown": 8, "clicks": 4, "carts": 1, "purchases": 1, "revenue": 20.0, "hit_checks": 3, "hits": 2}
        with sqlite3.connect(path) as db:
            pos = dict(db.execute("SELECT position, sum(clicks) FROM positions GROUP BY position").fetchall())
            assert pos == {0: 2, 1: 2, 2: 0}  # i1 (rA) and i8 (rD) at the top; i2 of rA and of rC second
            per_list = dict(db.execute("SELECT rec_id, clicks FROM impressions").fetchall())
            assert per_list == {"rA": 2, "rB": 0, "rC": 1, "rD": 1}
            unatt = dict(((k, r), n) for k, r, n in db.execute("SELECT kind, reason, n FROM unattributed"))
            assert unatt == {
                ("click", "no list in the window showed the item"): 1,
                ("click", "the list of its rec_id did not show the item"): 1,
                ("click", "unknown rec_id and no list in the window showed the item"): 1,
            }
            units = db.execute("SELECT experiment, variant, user, lists, shown, purchases, revenue FROM units").fetchall()
            assert units == [("e", "b", "u2", 1, 2, 1, 20.0)]
        text = engine.metrics.render().decode()
        assert 'recofast_loop_clicks_total{endpoint="recommendations",experiment="",source="personal",variant=""} 4.0' in text
        # The same through the engine's JSON endpoint.
        from aiohttp.test_utils import TestClient, TestServer
        from recofast.engine.service import create_app

        async with TestClient(TestServer(create_app(engine))) as http:
            r = await http.get("/v1/loop?by=source,variant&ips=0.1")
            body = await r.json()
            assert r.status == 200 and body["total"]["clicks"] == 4 and body["total"]["revenue"] == 20.0
            assert {(x["source"], x["variant"]) for x in body["rows"]} == {("personal", ""), ("personal", "b")}
            assert body["experiments"][0]["experiment"] == "e" and body["ips"][0]["target"] == 0.1
            for bad in ("?minutes=-1", "?ips=2", "?by=colour", "?minutes=abc"):
                r = await http.get("/v1/loop" + bad)
                assert r.status == 400, bad
            assert (await (await http.get("/healthz")).json())["loop"] == "ok"
        assert 'recofast_loop_unattributed_total{reason="no list in the window showed the item",type="click"} 1.0' in text


async def _until(cond) -> None:  # noqa: ANN001
    while not cond():
        await asyncio.sleep(0.05)


def test_a_loop_database_of_another_format_is_refused(tmp_path):
    from recofast.engine.attribution import LoopStoreError

    p = tmp_path / "loop.sqlite3"
    LoopStore(p).close()
    with sqlite3.connect(p) as db:
        db.execute("UPDATE meta SET value = '99' WHERE key = 'format'")
    with pytest.raises(LoopStoreError, match="format 99"):
        LoopStore(p)
    (tmp_path / "junk.sqlite3").write_bytes(b"not sqlite at all" * 100)
    with pytest.raises(LoopStoreError, match="not a usable"):
        LoopStore(tmp_path / "junk.sqlite3")


def test_messages_at_or_below_the_stored_sequence_are_not_counted_again(tmp_path):
    store = LoopStore(tmp_path / "loop.sqlite3", Windows())
    batch = [(1, encode_batch([imp("r1", "u1", ["a", "b"], T)])), (2, encode_batch([imp("r2", "u1", ["c"], T + MIN)]))]
    assert store.apply_impressions(batch) == (2, 0)
    assert store.apply_impressions(batch) == (0, 0)  # a redelivery after a crash before the ack
    clicks = [(1, "recofast.events.p0", event("x1", "click", "u1", "a", T + 10, rec_id="r1"))]
    assert store.apply_events(clicks) == 1
    assert store.apply_events(clicks) == 0
    assert store.apply_impressions([(3, b"{not json")]) == (0, 1)  # a bad message is skipped, and passed
    assert store.seq("impressions") == 3
    tot = {k: v for k, v in store.totals()[0][1].items() if v}
    assert tot == {"lists": 2, "shown": 3, "clicks": 1, "hit_checks": 1, "hits": 1}
    store.close()


def test_forget_removes_the_users_rows(tmp_path):
    store = LoopStore(tmp_path / "loop.sqlite3")
    store.apply_impressions([(1, encode_batch([imp("r1", "u1", ["a"], T, experiment="e", variant="v")]))])
    store.apply_events([(1, "recofast.events.forget", json.dumps({"v": 1, "user": "u1"}).encode())], forget_subject="recofast.events.forget")
    assert store.db.execute("SELECT count(*) FROM impressions").fetchone()[0] == 0
    assert store.db.execute("SELECT count(*) FROM units").fetchone()[0] == 0
    assert store.totals()[0][1]["lists"] == 1  # the aggregates keep no user
    store.close()


EXPERIMENTS = """
[[experiments]]
name = "{name}"
[[experiments.variants]]
name = "recofast"
[[experiments.variants]]
name = "heavy-pop"
scoring = {{ w_pop = 20.0 }}
[[experiments.variants]]
name = "popular"
popular = true
"""


async def test_experiments_are_re_read_when_the_file_changes_and_reach_the_meta_record(tmp_path, nats_url, engine_config, running_engine, caplog):
    from recofast.engine.config import load_config

    toml = tmp_path / "recofast.toml"
    toml.write_text(EXPERIMENTS.format(name="first"))
    base = engine_config(tmp_path, nats_url)
    cfg = base.replace(experiments=load_config(toml, env={}).experiments, config_file=str(toml))
    async with running_engine(cfg) as engine:
        def shared():  # noqa: ANN202
            return engine.reader.meta().shared

        assert [e.name for e in engine.experiments] == ["first"]
        engine.checkpoint()
        assert [v.name for v in shared().experiments[0].variants] == ["recofast", "heavy-pop", "popular"]
        toml.write_text(EXPERIMENTS.format(name="second"))
        os.utime(toml, (time.time() + 5, time.time() + 5))
        await asyncio.wait_for(_until(lambda: shared().experiments and shared().experiments[0].name == "second"), 10)
        # A broken file leaves the running experiments as they are, and says why.
        toml.write_text(EXPERIMENTS.format(name="third").replace("w_pop", "w_nonsense"))
        os.utime(toml, (time.time() + 10, time.time() + 10))
        with caplog.at_level("ERROR", logger="recofast.engine"):
            await asyncio.wait_for(_until(lambda: "experiments not changed" in caplog.text), 10)
        assert "w_nonsense" in caplog.text and [e.name for e in engine.experiments] == ["second"]


async def test_each_users_list_is_scored_with_their_variants_weights(tmp_path, nats_url, engine_config, running_engine, wait_applied):
    from recofast.engine.config import load_config
    from recofast_sidecar.protocol.experiments import assign

    toml = tmp_path / "recofast.toml"
    toml.write_text(EXPERIMENTS.format(name="scoring"))
    exps = load_config(toml, env={}).experiments
    cfg = engine_config(tmp_path, nats_url, experiments=exps, config_file=str(toml), top_n=5)
    rng = __import__("random").Random(4)
    async with await nats.connect(nats_url) as nc, running_engine(cfg) as engine:
        js = nc.jetstream()
        pack = [event(f"w{i}", "purchase" if i % 3 else "view", f"u{rng.randrange(60)}", f"i{int(rng.paretovariate(1.2)) % 80}", T + i)
                for i in range(3000)]
        for n in range(0, len(pack), 100):
            await js.publish(subject_for(0), b"[" + b",".join(pack[n:n + 100]) + b"]", headers={MSG_ID_HEADER: f"w{n}"})
        await wait_applied(engine, js)
        engine.refresh_all()
        by_variant: dict[str, int] = {}
        differs = 0
        for u in (f"u{i}" for i in range(60)):
            stored = engine.reader.user_list(u)
            if stored is None:
                continue
            v = assign(exps, u)[1]
            want = engine.model.recommend(u, k=5, weights=v.scoring or None)
            assert list(stored.items) == [i for i, _ in want], (u, v.name)
            by_variant[v.name] = by_variant.get(v.name, 0) + 1
            if v.scoring:
                differs += [i for i, _ in engine.model.recommend(u, k=5)] != list(stored.items)
        assert set(by_variant) == {"recofast", "heavy-pop", "popular"}
        assert differs > 0  # the variant's weights changed some lists


def test_hostile_impressions_are_skipped_or_bounded(tmp_path):
    from recofast.engine.attribution import MAX_ARMS

    store = LoopStore(tmp_path / "loop.sqlite3")
    bad = [b'[{"rec_id":"x","ts":1,"endpoint":"recommendations","source":"<script>","items":["a"]}]',
           b'[{"rec_id":"x","ts":-5,"endpoint":"recommendations","source":"personal","items":["a"]}]',
           b'[{"rec_id":"x","ts":1,"endpoint":"admin","source":"personal","items":["a"]}]',
           b'[{"rec_id":"x","ts":1,"endpoint":"recommendations","source":"personal","items":["a"],"variant":"a b"}]',
           b'[{"rec_id":"x","ts":1,"endpoint":"recommendations","source":"personal","items":["a"],"explore":7}]']
    assert store.apply_impressions([(n + 1, b) for n, b in enumerate(bad)]) == (0, len(bad))
    many = [imp(f"r{k}", f"u{k}", ["a"], T, experiment="e", variant=f"v{k}") for k in range(MAX_ARMS + 500)]
    store.apply_impressions([(100, encode_batch(many))])
    arms = store.db.execute("SELECT count(*) FROM totals").fetchone()[0]
    assert arms <= MAX_ARMS + 1 and store.totals()  # the rest counted under "other"
    assert sum(c["lists"] for _, c in store.totals()) == MAX_ARMS + 500
    store.close()
