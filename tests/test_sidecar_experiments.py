"""Experiments at the edge, over a real LMDB store and a real nats-server: each user is served
with the options of the variant the salted hash gives them (the popular control without the
personal list), the impression in the JetStream stream says so, and a change of the
experiments in the engine's meta record reaches a running sidecar without a restart."""

from __future__ import annotations

import asyncio
import json
import time

import nats
import pytest
from recofast.engine.streams import ensure_streams
from recofast_sidecar.config import SidecarConfig
from recofast_sidecar.protocol import codec, liststore
from recofast_sidecar.protocol.experiments import Experiment, Serving, Variant, assign
from recofast_sidecar.protocol.feedback import decode_batch
from recofast_sidecar.protocol.names import IMPRESSIONS_STREAM, IMPRESSIONS_SUBJECT
from recofast_sidecar.protocol.settings import SharedSettings

from test_sidecar import ITEMS, get_json, lst, sidecar

pytestmark = pytest.mark.timeout(60)

USERS = [f"s{i}" for i in range(60)]
EXP = Experiment(name="exp1", variants=(
    Variant(name="recofast"),
    Variant(name="wide", serving=Serving(explore=1.0, top_n=2, exclude_categories=("Tea",))),
    Variant(name="popular", popular=True),
))


def _commit(w: liststore.ListWriter, experiments: tuple[Experiment, ...]) -> None:
    w.commit(codec.Commit(
        user_lists={u: lst(["a", "b", "c", "g"]) for u in USERS},
        items=ITEMS,
        segments={"popular:all": lst(["e", "g", "a"], 6)},
        fresh=lst(["new1"]),
        meta=codec.MetaRecord(model_version=7, last_seq=3, time=time.time(), shared=SharedSettings(experiments=experiments)),
    ))


def write(path, experiments: tuple[Experiment, ...]) -> None:  # noqa: ANN001
    with liststore.ListWriter(path, map_size=1 << 22) as w:
        _commit(w, experiments)


async def test_users_are_served_by_their_variant_and_impressions_say_so(tmp_path, nats_url):
    path = tmp_path / "lmdb"
    write(path, (EXP,))
    async with await nats.connect(nats_url) as nc:
        js = nc.jetstream()
        await ensure_streams(js)
        async with sidecar(SidecarConfig(lmdb=str(path), nats=nats_url, seed=3)) as c:
            deadline = time.monotonic() + 10
            while (await c.get("/readyz")).status != 200:
                assert time.monotonic() < deadline
                await asyncio.sleep(0.02)
            answers = {}
            for u in USERS:
                body = await get_json(c, f"/v1/recommendations/{u}?k=3")
                want = assign((EXP,), u)[1].name
                assert (body["experiment"], body["variant"]) == ("exp1", want)
                items = [x["item"] for x in body["items"]]
                if want == "popular":
                    assert body["source"] == "popular" and items == ["e", "g", "a"]  # not the personal list
                elif want == "wide":
                    # top_n 2, tea excluded, and the exploration slot taken every time.
                    assert len(items) == 2 and "c" not in items and "g" not in items and "new1" in items
                else:
                    assert body["source"] == "personal" and items == ["a", "b", "c"]
                answers[body["rec_id"]] = (u, want, items, [x["reason"] for x in body["items"]])
            assert {v for _, v, _, _ in answers.values()} == {"recofast", "wide", "popular"}

            sub = await js.pull_subscribe(IMPRESSIONS_SUBJECT, durable="t", stream=IMPRESSIONS_STREAM)
            logged = {}
            deadline = time.monotonic() + 10
            while len(logged) < len(answers):
                assert time.monotonic() < deadline, f"{len(logged)} of {len(answers)} impressions stored"
                try:
                    msgs = await sub.fetch(50, timeout=1)
                except nats.errors.TimeoutError:
                    continue
                for m in msgs:
                    assert m.headers and m.headers.get("Nats-Msg-Id")
                    for r in decode_batch(m.data):
                        logged[r.rec_id] = r
                    await m.ack()
            for rec_id, (u, want, items, reasons) in answers.items():
                r = logged[rec_id]
                assert (r.user, r.variant, r.experiment, r.items, r.endpoint) == (u, want, "exp1", items, "recommendations")
                assert r.explored == (want == "wide") and r.explore == (1.0 if want == "wide" else 0.0)
                assert r.sources == ["explore" if why == "explore" else "popular" if why.startswith("popular") else why for why in reasons]


async def test_a_change_of_experiments_reaches_a_running_sidecar(tmp_path):
    w = liststore.ListWriter(tmp_path / "lmdb", map_size=1 << 22)
    _commit(w, ())
    async with sidecar(SidecarConfig(), reader=w.reader()) as c:
        body = await get_json(c, "/v1/recommendations/s1?k=3")
        assert "variant" not in body and body["source"] == "personal"
        only = Experiment(name="all-popular", variants=(Variant(name="popular", popular=True), Variant(name="p2", popular=True)))
        _commit(w, (only,))
        deadline = time.monotonic() + 5
        while (body := await get_json(c, "/v1/recommendations/s1?k=3")).get("experiment") != "all-popular":
            assert time.monotonic() < deadline, body
            await asyncio.sleep(0.1)
        assert body["source"] == "popular"
        _commit(w, ())
        deadline = time.monotonic() + 5
        while "experiment" in (body := await get_json(c, "/v1/recommendations/s1?k=3")):
            assert time.monotonic() < deadline, body
            await asyncio.sleep(0.1)
        assert body["source"] == "personal"
    w.close()


def test_assignment_is_stable_balanced_and_exclusive_between_experiments():
    a = Experiment(name="a", traffic=0.3, variants=(Variant(name="x"), Variant(name="y", share=3.0)))
    b = Experiment(name="b", traffic=0.5, salt="other", variants=(Variant(name="x"), Variant(name="y")))
    got = [assign((a, b), f"user-{i}") for i in range(20_000)]
    share_a = sum(1 for g in got if g and g[0].name == "a") / len(got)
    share_b = sum(1 for g in got if g and g[0].name == "b") / len(got)
    none = sum(1 for g in got if g is None) / len(got)
    assert abs(share_a - 0.3) < 0.02 and abs(share_b - 0.5) < 0.02 and abs(none - 0.2) < 0.02
    in_a = [g[1].name for g in got if g and g[0].name == "a"]
    assert abs(in_a.count("y") / len(in_a) - 0.75) < 0.03  # shares are relative
    assert got == [assign((a, b), f"user-{i}") for i in range(20_000)]  # no state: the same every time


def test_bad_experiments_are_refused_with_the_reason():
    from recofast_sidecar.protocol.experiments import parse
    from recofast_sidecar.protocol.settings import ConfigError

    two = [{"name": "v1"}, {"name": "v2"}]
    with pytest.raises(ConfigError, match="traffic adds up to 1.5"):
        parse([{"name": "a", "traffic": 0.7, "variants": two}, {"name": "b", "traffic": 0.8, "variants": two}])
    with pytest.raises(ConfigError, match="Expected `array` of length >= 2"):
        parse([{"name": "a", "variants": [{"name": "only"}]}])
    with pytest.raises(ConfigError, match="control 'nope'"):
        parse([{"name": "a", "control": "nope", "variants": two}])
    with pytest.raises(ConfigError, match="unknown scoring weight 'w_magic'"):
        parse([{"name": "a", "variants": [{"name": "v1", "scoring": {"w_magic": 1.0}}, {"name": "v2"}]}])
    with pytest.raises(ConfigError, match="same name"):
        parse([{"name": "a", "variants": [{"name": "v"}, {"name": "v"}]}])
    with pytest.raises(ConfigError, match="explore"):
        parse([{"name": "a", "variants": [{"name": "v1", "serving": {"explore": 2.0}}, {"name": "v2"}]}])
    assert json.loads(json.dumps([e.name for e in parse([{"name": "a", "variants": two}])])) == ["a"]
