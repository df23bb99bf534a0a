"""The sidecar's LMDB list codec: records round-trip, unknown formats are refused, and a
reader sees whole commits only."""

from __future__ import annotations

import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from recofast_sidecar.protocol import codec, liststore
from recofast_sidecar.protocol.names import DB_USER_LISTS

ids = st.text(min_size=0, max_size=40)
f32 = st.floats(width=32, allow_nan=False)
u64 = st.integers(min_value=0, max_value=2**64 - 1)
times = st.floats(allow_nan=False, allow_infinity=False)


@st.composite
def list_records(draw):
    items = draw(st.lists(ids, max_size=50))
    scores = draw(st.lists(f32, min_size=len(items), max_size=len(items)))
    return codec.ListRecord(items=items, scores=scores, model_version=draw(u64), time=draw(times))


items_records = st.builds(
    codec.ItemRecord,
    category=ids,
    title=ids,
    text=st.text(max_size=300),
    price=st.none() | st.floats(allow_nan=False),
    in_stock=st.none() | st.booleans(),
    updated=times,
)


@given(list_records())
def test_list_round_trip(rec):
    assert codec.decode_list(codec.encode_list(rec)) == rec


@given(items_records)
def test_item_round_trip(rec):
    assert codec.decode_item(codec.encode_item(rec)) == rec


@given(st.builds(codec.MetaRecord, model_version=u64, last_seq=u64, time=times))
def test_meta_round_trip(rec):
    assert codec.decode_meta(codec.encode_meta(rec)) == rec


@given(list_records(), st.data())
def test_truncated_list_is_refused(rec, data):
    buf = codec.encode_list(rec)
    cut = data.draw(st.integers(min_value=0, max_value=len(buf) - 1))
    with pytest.raises(codec.CodecError):
        codec.decode_list(buf[:cut])


def test_unknown_format_is_refused():
    buf = bytearray(codec.encode_list(codec.ListRecord(["a"], [1.0])))
    buf[0] = 2
    with pytest.raises(codec.CodecError, match="unknown list format 2"):
        codec.decode_list(bytes(buf))
    meta = bytearray(codec.encode_meta(codec.MetaRecord(1, 2, 3.0)))
    meta[0] = 9
    with pytest.raises(codec.CodecError):
        codec.decode_meta(bytes(meta))


def test_mismatched_lengths_are_refused():
    with pytest.raises(codec.CodecError):
        codec.encode_list(codec.ListRecord(["a", "b"], [1.0]))


@settings(max_examples=25, deadline=None)
@given(st.dictionaries(ids.filter(lambda s: 0 < len(s.encode()) <= 400), list_records(), max_size=20), items_records)
def test_store_round_trip(tmp_path_factory, lists, item):
    path = tmp_path_factory.mktemp("lmdb")
    meta = codec.MetaRecord(model_version=7, last_seq=99, time=12.5)
    seg = codec.ListRecord(["x"], [2.0], 7, 1.0)
    with liststore.ListWriter(path, map_size=1 << 24) as w:
        w.commit(codec.Commit(user_lists=lists, items={"x": item}, segments={codec.segment_key("popular", "all"): seg}, meta=meta))
        r = w.reader()
        for user, rec in lists.items():
            assert r.user_list(user) == rec
        assert r.item("x") == item
        assert r.segment("popular", "all") == seg
        assert r.meta() == meta
        assert sorted(r.keys(DB_USER_LISTS)) == sorted(lists)
    with liststore.ListReader(path, map_size=1 << 24) as r:  # a separate reader, as a sidecar opens it
        got_meta, got = r.snapshot()
        assert got_meta == meta and got == lists
        assert r.user_list("nobody-at-all-" * 3) is None


def test_reader_never_sees_a_half_written_commit(tmp_path):
    """Each commit writes 50 users' lists and the meta with the same version; a reader
    thread must always find all 51 records at one version."""
    users = [f"u{i}" for i in range(50)]
    with liststore.ListWriter(tmp_path, map_size=1 << 24) as w:
        r = w.reader()
        w.commit(codec.Commit(user_lists={u: codec.ListRecord(["a"], [0.0], 0) for u in users}, meta=codec.MetaRecord(0, 0)))
        stop = threading.Event()
        seen: set[int] = set()
        errors: list[str] = []

        def read() -> None:
            while not stop.is_set():
                meta, lists = r.snapshot()
                versions = {rec.model_version for rec in lists.values()}
                if versions != {meta.model_version}:
                    errors.append(f"meta {meta.model_version}, lists {sorted(versions)}")
                seen.add(meta.model_version)

        t = threading.Thread(target=read)
        t.start()
        try:
            for v in range(1, 300):
                lists = {u: codec.ListRecord(["a", "b"], [float(v), 1.0], v) for u in users}
                w.commit(codec.Commit(user_lists=lists, meta=codec.MetaRecord(v, v)))
        finally:
            stop.set()
            t.join(timeout=30)
        assert not errors, errors[:3]
        assert len(seen) > 1


# -- the context database: affinity lists and the fresh list ----------------------------------


@given(st.dictionaries(ids, f32, max_size=50))
def test_affinities_round_trip(aff):
    rec = codec.ListRecord(items=list(aff), scores=list(aff.values()), model_version=4, time=1.0)
    assert codec.decode_affinities(codec.encode_list(rec)) == aff


@settings(max_examples=50, deadline=None)
@given(st.dictionaries(st.text(min_size=1, max_size=30), list_records(), max_size=5), list_records())
def test_context_records_round_trip_through_lmdb(tmp_path_factory, affs, fresh):
    with liststore.ListWriter(tmp_path_factory.mktemp("ctx"), map_size=1 << 24) as w:
        w.commit(codec.Commit(affinities=affs, fresh=fresh))
        r = w.reader()
        assert {k: r.affinity(k) for k in r.affinity_keys()} == affs
        assert r.fresh() == fresh
        assert r.affinity("device=nowhere") is None


def test_a_corrupt_context_record_raises_the_codec_error(tmp_path):
    good = codec.ListRecord(items=["lamp", "bulb"], scores=[2.0, 1.0], model_version=3, time=5.0)
    buf = codec.encode_list(good)
    with liststore.ListWriter(tmp_path, map_size=1 << 24) as w:
        w.commit(codec.Commit(affinities={"device=mobile": good}, fresh=good))
        with w.env.begin(write=True) as txn:
            db = w._dbs[b"context"]
            txn.put(codec.affinity_key("device=mobile").encode(), buf[:-2], db=db)  # truncated
            txn.put(codec.FRESH_KEY.encode(), b"\x09" + buf[1:], db=db)  # unknown format
        r = w.reader()
        with pytest.raises(codec.CodecError, match="truncated"):
            r.affinity("device=mobile")
        with pytest.raises(codec.CodecError, match="unknown list format 9"):
            r.fresh()
    with pytest.raises(codec.CodecError):
        codec.decode_affinities(buf + b"x")


def test_a_store_without_the_context_database_reads_as_empty(tmp_path):
    """A store written before the context database existed still opens; it has no context."""
    import lmdb

    env = lmdb.open(str(tmp_path), map_size=1 << 24, max_dbs=8, subdir=True)
    dbs = {name: env.open_db(name) for name in (b"user_lists", b"items", b"segments", b"meta")}
    with env.begin(write=True) as txn:
        txn.put(b"u1", codec.encode_list(codec.ListRecord(["a"], [1.0], 1, 0.0)), db=dbs[b"user_lists"])
    env.close()
    with liststore.ListReader(tmp_path) as r:
        assert r.user_list("u1").items == ["a"]
        assert r.affinity("device=mobile") is None and r.fresh() is None and r.affinity_keys() == []
