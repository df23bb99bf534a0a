"""The sidecar's answer cache over a real LMDB store: an answer is reused only while the store
has not been written (the user's list, an item's metadata, the meta record with its
experiments) and the settings are the same; rec_id and the exploration draw are every
request's own; every cache is bounded."""

from __future__ import annotations

import time

import pytest
from recofast_sidecar.app import STATE
from recofast_sidecar.config import SidecarConfig
from recofast_sidecar.protocol import codec, liststore
from recofast_sidecar.protocol.experiments import Experiment, Variant
from recofast_sidecar.protocol.settings import SharedSettings

from test_sidecar import ITEMS, get_json, items_of, lst, sidecar, write_store

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def writer(tmp_path):  # noqa: ANN001, ANN201
    path = tmp_path / "lmdb"
    write_store(path)
    w = liststore.ListWriter(path, map_size=1 << 22)
    yield w
    w.close()


async def test_a_repeated_request_is_served_from_the_cache_with_a_new_rec_id(writer):
    async with sidecar(SidecarConfig(lmdb=None, impressions=False), reader=writer.reader()) as c:
        st = c.server.app[STATE]
        first = await get_json(c, "/v1/recommendations/u1?k=3&hour=3")
        assert len(st.answers) == 1
        cached = next(iter(st.answers.values()))
        again = await get_json(c, "/v1/recommendations/u1?k=3&hour=3")
        assert next(iter(st.answers.values())) is cached  # not recomputed
        assert again["items"] == first["items"] and again["rec_id"] != first["rec_id"]
        assert len({(await get_json(c, "/v1/recommendations/u1?k=3&hour=3"))["rec_id"] for _ in range(20)}) == 20
        # Other parameters, another answer.
        assert items_of(await get_json(c, "/v1/recommendations/u1?k=2&hour=3")) == items_of(first)[:2]
        assert len(st.answers) == 2


async def test_a_rewritten_list_is_served_at_once(writer):
    async with sidecar(SidecarConfig(lmdb=None, impressions=False), reader=writer.reader()) as c:
        assert items_of(await get_json(c, "/v1/recommendations/u1?k=3&hour=3")) == ["a", "b", "c"]
        writer.commit(codec.Commit(user_lists={"u1": lst(["g", "c", "a"], 8)}))
        body = await get_json(c, "/v1/recommendations/u1?k=3&hour=3")
        assert items_of(body) == ["g", "c", "a"] and body["model_version"] == 8


async def test_changed_item_metadata_is_served_at_once(writer):
    async with sidecar(SidecarConfig(lmdb=None, impressions=False), reader=writer.reader()) as c:
        assert items_of(await get_json(c, "/v1/recommendations/u1?k=3&hour=3")) == ["a", "b", "c"]
        assert items_of(await get_json(c, "/v1/recommendations/u1?k=3&hour=3&max_price=6")) == ["a", "c"]
        # "b" goes out of stock and "a" gets dearer: both the plain and the filtered answer change.
        writer.commit(codec.Commit(items={"b": codec.ItemRecord(category="mugs", price=12.0, in_stock=False),
                                          "a": codec.ItemRecord(category="mugs", price=50.0, in_stock=True)}))
        assert items_of(await get_json(c, "/v1/recommendations/u1?k=3&hour=3")) == ["a", "c", "f"]
        assert items_of(await get_json(c, "/v1/recommendations/u1?k=3&hour=3&max_price=6")) == ["c"]


async def test_a_new_experiment_in_the_meta_record_is_served_once_read(writer):
    async with sidecar(SidecarConfig(lmdb=None, impressions=False), reader=writer.reader()) as c:
        st = c.server.app[STATE]
        body = await get_json(c, "/v1/recommendations/u1?k=3&hour=3")
        assert "experiment" not in body and body["source"] == "personal"
        exp = Experiment(name="all-popular", traffic=1.0, variants=(
            Variant(name="control", popular=True), Variant(name="control-too", popular=True)))
        writer.commit(codec.Commit(meta=codec.MetaRecord(model_version=7, last_seq=4, time=time.time(),
                                                         shared=SharedSettings(experiments=(exp,)))))
        st.store._shared_next = 0.0  # the meta record is re-read at most once a second: now
        body = await get_json(c, "/v1/recommendations/u1?k=3&hour=3")
        assert body["experiment"] == "all-popular" and body["variant"] in ("control", "control-too")
        assert body["source"] == "popular" and items_of(body) == ["c", "a", "b"]


async def test_exploration_is_drawn_per_request_under_a_cached_answer(writer):
    async with sidecar(SidecarConfig(lmdb=None, impressions=False, seed=5), reader=writer.reader()) as c:
        st = c.server.app[STATE]
        bodies = [await get_json(c, "/v1/recommendations/u1?k=3&hour=3&explore=0.5") for _ in range(60)]
        explored = [b for b in bodies if any(x["reason"] == "explore" for x in b["items"])]
        # About half the answers have an exploration slot, the others are the list as it is.
        assert 10 < len(explored) < 50
        assert all(items_of(b) == ["a", "b", "c"] for b in bodies if b not in explored)
        assert len({b["rec_id"] for b in bodies}) == 60
        assert len(st.answers) == 1


async def test_the_caches_are_bounded(writer):
    async with sidecar(SidecarConfig(lmdb=None, impressions=False), reader=writer.reader()) as c:
        st = c.server.app[STATE]
        st.MAX_ANSWERS = 5
        st.params.size = 3
        st.store.MAX_MEMO = 4
        for i in range(12):
            body = await get_json(c, f"/v1/recommendations/x{i}?k={1 + i % 6}&device=d{i}&hour=3")
            assert body["source"] in ("popular", "segment")
        assert len(st.answers) <= 5 and len(st.params) <= 3 and len(st.store._memo) <= 4
        # The newest answer is still cached and still right.
        assert len((await get_json(c, "/v1/recommendations/x11?k=6&device=d11&hour=3"))["items"]) == 3


async def test_a_bad_query_is_a_400_every_time(writer):
    async with sidecar(SidecarConfig(lmdb=None, impressions=False), reader=writer.reader()) as c:
        st = c.server.app[STATE]
        for _ in range(2):
            body = await get_json(c, "/v1/recommendations/u1?k=0", status=400)
            assert "`k`" in body["error"]
        assert len(st.params) == 0 and len(st.answers) == 0


def test_item_records_are_kept_per_generation_and_reread_after_a_commit(writer):
    from recofast_sidecar.rerank import Candidate, Filters
    from recofast_sidecar.store import Store

    store = Store(None, writer.reader())
    with store.request():
        g1 = store.generation
        ok, meta, _ = store.select([("x", [Candidate("a", 1.0, "x")])], Filters(), 1)
        assert g1 is not None and meta["a"] == ITEMS["a"]
    with store.request():
        assert store.generation == g1  # nothing written: the same generation
    writer.commit(codec.Commit(items={"a": codec.ItemRecord(category="mugs", price=5.0, in_stock=False)}))
    with store.request():
        assert store.generation != g1
        ok, _, _ = store.select([("x", [Candidate("a", 1.0, "x")])], Filters(), 1)
        assert ok == []
    assert store.generation is None  # outside a request
