"""The learned second stage: it learns a shop's blend from the shop's own events, explains
each listed item, and its reasons reach the list store (and from there the sidecar)."""

from __future__ import annotations

import random

import pytest
import recofast
from recofast.explain import Reason, reason_text
from aiohttp.test_utils import TestClient, TestServer
from recofast_sidecar.app import create_app
from recofast_sidecar.config import SidecarConfig
from recofast_sidecar.protocol import codec


def _shop(rec: recofast.Recommender, seed: int, sessions: int, k: int = 5) -> float:
    """A shop where the second item of a session shares the first one's category word (in
    the item text) while everyone also buys a few hot items: returns the hit rate at ``k``
    of the second item over the last half of the sessions (test, then learn)."""
    rnd = random.Random(seed)
    cats, per = 30, 12
    items = [f"c{c}-{i}" for c in range(cats) for i in range(per)]
    rec.set_item_text(items, [f"{['lamp', 'mug', 'sofa', 'rug', 'kettle', 'vase'][c % 6]}{c} shade{c} model{i}"
                              for c in range(cats) for i in range(per)])
    hot = [f"hot{j}" for j in range(5)]
    hits = tests = 0
    t = 1_000_000.0
    for s in range(sessions):
        user = f"u{s % 400}"
        c = rnd.randrange(cats)
        a, b = rnd.sample(range(per), 2)
        t += 60
        rec.learn_one(user, rnd.choice(hot), event="purchase", ts=t)
        t += 10_000  # a new session
        rec.learn_one(user, f"c{c}-{a}", event="view", ts=t)
        if s >= sessions // 2:
            listed = [i for i, _ in rec.recommend(user, k=k, ts=t + 5)]
            tests += 1
            hits += f"c{c}-{b}" in listed
        rec.learn_one(user, f"c{c}-{b}", event="purchase", ts=t + 5)
    return hits / tests


def test_the_ranker_learns_what_the_fixed_blend_leaves_out():
    # The blend is told to ignore text (w_text 0): the ranker, which sees the text signal
    # as a feature, must learn from the shop's events that it decides here.
    on = recofast.Recommender(dim=16, seed=3, w_text=0.0, ranker=True)
    off = recofast.Recommender(dim=16, seed=3, w_text=0.0, ranker=False)
    hit_on, hit_off = _shop(on, 1, 4000), _shop(off, 1, 4000)
    w = on.ranker_weights()
    assert w["new:10+"]["text"] > 0.3, w["new:10+"]
    assert hit_on > 1.15 * hit_off, (hit_on, hit_off)  # measured 0.46 against 0.37
    assert all(v == (1.0 if f == "blend" else 0.0) for v, f in ((x, f) for f, x in off.ranker_weights()["new:0"].items()))


@pytest.mark.parametrize("ranker", [True, False])
def test_explain_gives_the_contributions_and_the_reason_of_a_listed_item(ranker):
    rec = recofast.Recommender(dim=8, seed=1, ranker=ranker)
    rec.set_item_text(["lamp", "bulb", "mug"], ["Brass desk lamp", "LED bulb", "Tea mug"])
    for u in range(20):
        rec.learn_many([f"p{u}", f"p{u}"], ["lamp", "bulb"], events="purchase", ts=[100.0 + u, 101.0 + u])
    rec.learn_one("me", "lamp", event="view", ts=500.0)
    listed = rec.recommend_explained("me", k=2)
    assert listed[0][0] == "bulb"
    why = listed[0][2]
    assert (why.kind, why.item) == ("cooc", "lamp")
    assert reason_text(why, {"lamp": "Brass desk lamp"}.get) == "bought with Brass desk lamp"
    ex = rec.explain("me", "bulb")
    assert ex is not None and ex.rank == 0 and ex.kind == "cooc"
    if ranker:
        # The contributions are the ranker's score (its log): they add up to it.
        import math
        assert math.isclose(sum(ex.contributions.values()), math.log(ex.score), rel_tol=1e-4, abs_tol=1e-5)
    assert ex.contributions["blend"] > 0
    assert rec.explain("me", "no-such-item") is None
    assert rec.explain("nobody", "mug").kind in ("pop", "blend", "new")


def test_reasons_round_trip_through_the_list_codec_and_old_readers_ignore_them():
    rec = codec.ListRecord(items=["a", "b", "c"], scores=[3.0, 2.0, 1.0], model_version=7, time=1.0,
                           reasons=["bought with Brass lamp", "", "popular in GB"])
    raw = codec.encode_list(rec)
    assert codec.decode_list(raw) == rec
    view = codec.ListView(raw)
    assert list(view) == [("a", 3.0), ("b", 2.0), ("c", 1.0)]
    assert view.reasons() == {"a": "bought with Brass lamp", "c": "popular in GB"}
    plain = codec.encode_list(codec.ListRecord(items=["a"], scores=[1.0]))
    assert codec.ListView(plain).reasons() == {} and codec.decode_list(plain).reasons is None
    # A reason longer than the bound is cut at a character, never inside one.
    long = codec.encode_list(codec.ListRecord(items=["a"], scores=[1.0], reasons=["é" * 1000]))
    got = codec.decode_list(long).reasons
    assert got is not None and set(got[0]) == {"é"} and len(got[0].encode()) <= codec.MAX_REASON_BYTES
    with pytest.raises(codec.CodecError):
        codec.encode_list(codec.ListRecord(items=["a"], scores=[1.0], reasons=["x", "y"]))
    # Truncated after the items: the items still read, the reasons are what was there.
    assert list(codec.ListView(raw[:-5])) == [("a", 3.0), ("b", 2.0), ("c", 1.0)]
    assert codec.ListView(raw[:-5]).reasons() == {"a": "bought with Brass lamp"}
    with pytest.raises(codec.CodecError):
        codec.decode_list(raw[:-5])
    assert codec.list_record([("a", 1.0, "new"), ("b", 0.5, "")], 1, 2.0).reasons == ["new", ""]
    assert codec.list_record([("a", 1.0)], 1, 2.0).reasons is None


@pytest.mark.parametrize("kind,detail,want", [
    ("ctx_country", "country=gb", "popular in GB"),
    ("ctx_device", "device=mobile", "popular on mobile"),
    ("intent", "desk lamp", "matches your search 'desk lamp'"),
    ("new", "", "new"),
    ("pop", "", "trending"),
    ("text", "", "like your last item"),
])
def test_reason_words(kind, detail, want):
    assert reason_text(Reason(kind, None, detail)) == want


async def test_the_engine_stores_each_listed_items_reason_in_words(tmp_path, nats_url, engine_config, running_engine, wait_applied):
    import nats
    from recofast.engine.publish import subject_for
    from recofast_sidecar.protocol import events as ev
    from recofast_sidecar.protocol.names import CATALOG_SUBJECT, MSG_ID_HEADER

    def event(i, user, item, type="purchase"):
        return ev.make_event(f"e{i}", type, user, item, ts_ms=1_700_000_000_000 + i)

    async with await nats.connect(nats_url) as nc, running_engine(engine_config(tmp_path, nats_url)) as engine:
        js = nc.jetstream()
        await js.publish(CATALOG_SUBJECT, b'[{"v":1,"item":"lamp","title":"Brass desk lamp"},{"v":1,"item":"bulb","title":"LED bulb"}]')
        evs = [event(i, f"u{i}", "lamp") for i in range(1, 6)] + [event(10 + i, f"u{i}", "bulb") for i in range(1, 6)]
        evs.append(event(100, "me", "lamp", "view"))
        await js.publish(subject_for(0), ev.encode(evs), headers={MSG_ID_HEADER: "pack-1"})
        await wait_applied(engine, js)
        rec = engine.writer.reader().user_list("me")
        assert rec is not None and rec.items[0] == "bulb"
        assert rec.reasons is not None and rec.reasons[0] == "bought with Brass desk lamp"
        # ... and the sidecar serves it as the item's reason, with the source beside it.
        client = TestClient(TestServer(create_app(SidecarConfig(lmdb=None), reader=engine.writer.reader())))
        await client.start_server()
        try:
            r = await client.get("/v1/recommendations/me?k=3")
            body = await r.json()
            assert r.status == 200, body
            first = body["items"][0]
            assert (first["item"], first["reason"], first["source"]) == ("bulb", "bought with Brass desk lamp", "personal")
            r = await client.get("/v1/popular?k=2")
            assert all(x["source"] in ("popular", "segment", "fallback") for x in (await r.json())["items"])
        finally:
            await client.close()
