"""``recofast forget``: afterwards the user's id is in no checkpoint byte, no LMDB record and
no bucket key, a --sync edge drops it, and a replay of the stream does not learn it again."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import lmdb
import nats
import pytest
from recofast.cli import main
from recofast.engine.publish import subject_for
from recofast_sidecar.protocol import events as ev
from recofast_sidecar.protocol.names import LISTS_BUCKET

pytestmark = pytest.mark.timeout(180)

VICTIM = "victim-7f3a"
NOW_MS = int(time.time() * 1000)


def _bytes_in(folder: Path) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file())


def _lmdb_records(path: Path) -> list[tuple[bytes, bytes]]:
    env = lmdb.open(str(path), readonly=True, lock=False, max_dbs=16)
    out = []
    with env.begin() as txn:
        names = [k for k, _ in txn.cursor()]
    for name in names:
        db = env.open_db(name, create=False)
        with env.begin(db=db) as txn:
            out.extend(txn.cursor())
    env.close()
    return out


async def test_forget_erases_the_user_everywhere_and_a_replay_does_not_learn_them(tmp_path, nats_url, engine_config, running_engine, wait_applied):
    cfg = engine_config(tmp_path, nats_url, publish_lists=True, refresh_seconds=3600.0, similar_top=0)
    events = [ev.make_event(f"e{i}", "purchase", user, f"item{i % 5}", ts_ms=NOW_MS + i) for i, user in enumerate([VICTIM, "other", VICTIM, "other", VICTIM])]
    async with await nats.connect(nats_url) as nc:
        js = nc.jetstream()
        async with running_engine(cfg) as engine:
            await js.publish(subject_for(0), ev.encode(events))
            await wait_applied(engine, js)
            await asyncio.to_thread(engine.checkpoint)  # a checkpoint that holds the victim
            assert VICTIM.encode() in _bytes_in(tmp_path / "models")
            kv = await js.key_value(LISTS_BUCKET)
            deadline = time.monotonic() + 10
            while not any(VICTIM in k for k in await _decoded_keys(kv)):
                assert time.monotonic() < deadline, "the victim's list never reached the bucket"
                await asyncio.sleep(0.05)
            t0 = time.monotonic()
            assert await asyncio.to_thread(main, ["forget", VICTIM, "--nats", nats_url, "--wait", "30"]) == 0
            took = time.monotonic() - t0
            assert engine.model.history(VICTIM) == [] and VICTIM not in engine.users
            assert engine.writer.reader().user_list(VICTIM) is None
            assert engine.writer.reader().user_list("other") is not None
            assert not any(VICTIM in k for k in await _decoded_keys(kv))
            # The victim's events after the request are never learned.
            await js.publish(subject_for(0), ev.encode(ev.make_event("late", "view", VICTIM, "item9", ts_ms=NOW_MS + 99)))
            await wait_applied(engine, js)
            assert engine.model.history(VICTIM) == []
            assert engine.counters["events_forgotten_total"] == 1
        assert took < 10, f"forget took {took:.1f} s"
        assert VICTIM.encode() not in _bytes_in(tmp_path / "models")
        for k, v in _lmdb_records(tmp_path / "lmdb"):
            assert VICTIM.encode() not in k and VICTIM.encode() not in v
        # A replay of the whole stream from an empty model does not learn the victim again.
        (tmp_path / "lmdb2").mkdir()
        replay = cfg.replace(lmdb=str(tmp_path / "lmdb2"), model_dir=str(tmp_path / "models2"), publish_lists=False)
        (tmp_path / "models2").mkdir()
        (tmp_path / "models2" / "forgotten").write_bytes((tmp_path / "models" / "forgotten").read_bytes())
        async with running_engine(replay) as engine:
            await wait_applied(engine, js)
            assert engine.model.history(VICTIM) == [] and engine.model.history("other") != []
            assert engine.writer.reader().user_list(VICTIM) is None


async def _decoded_keys(kv) -> list[str]:  # noqa: ANN001
    from recofast_sidecar.protocol.keys import parse_kv_key

    try:
        keys = await kv.keys()
    except Exception:  # noqa: BLE001 - an empty bucket raises NoKeysError
        return []
    return [str(parse_kv_key(k)) for k in keys]


def test_forget_without_an_event_stream_is_a_clear_error(nats_url, capsys):
    assert main(["forget", "someone", "--nats", nats_url, "--wait", "0.5"]) == 2
    assert "no event stream" in capsys.readouterr().err


def test_forget_rejects_an_id_no_event_could_carry(nats_url, capsys):
    assert main(["forget", "x" * 300, "--nats", nats_url]) == 2
    assert "not a user id" in capsys.readouterr().err
