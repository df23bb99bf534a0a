"""Checkpoints: atomic versions, retention, corrupt ones skipped with a log line, rollback,
and the ``model list`` / ``model rollback`` commands."""

from __future__ import annotations

import json
import logging

import pytest
import recofast
from recofast.cli import main as cli_main
from recofast.engine.checkpoints import CheckpointError, CheckpointStore
from recofast.errors import RecofastError


def _model(n: int) -> recofast.Recommender:
    rec = recofast.Recommender(dim=8, seed=1)
    rec.learn_many([f"u{i % 3}" for i in range(n)], [f"i{i % 5}" for i in range(n)])
    return rec


def test_versions_retention_and_manifest(tmp_path):
    store = CheckpointStore(tmp_path, keep=3)
    for n in range(1, 6):
        store.save(_model(n), {"stream_seq": n * 10, "events_applied_total": n}, state=b"s%d" % n)
    assert store.versions() == [3, 4, 5]
    cp = store.load_latest()
    assert cp.version == 5 and cp.manifest["stream_seq"] == 50 and cp.state == b"s5"
    assert cp.model.events_learned == 5 == cp.manifest["events_learned"]
    assert sorted(p.name for p in (tmp_path / "v000005").iterdir()) == ["manifest.json", "model.bin", "state.msgpack"]


@pytest.mark.parametrize("damage", ["model", "state", "manifest", "missing"])
def test_a_corrupt_checkpoint_is_skipped_with_a_log_line(tmp_path, caplog, damage):
    store = CheckpointStore(tmp_path, keep=5)
    store.save(_model(2), {"stream_seq": 2})
    store.save(_model(3), {"stream_seq": 3})
    v2 = tmp_path / "v000002"
    if damage == "model":
        data = bytearray((v2 / "model.bin").read_bytes())
        data[len(data) // 2] ^= 0xFF
        (v2 / "model.bin").write_bytes(bytes(data))
    elif damage == "state":
        (v2 / "state.msgpack").write_bytes(b"tampered")
    elif damage == "manifest":
        (v2 / "manifest.json").write_text("{not json")
    else:
        (v2 / "model.bin").unlink()
    with caplog.at_level(logging.WARNING, logger="recofast.engine.checkpoints"):
        cp = store.load_latest()
    assert cp.version == 1 and cp.manifest["stream_seq"] == 2
    assert "skipping corrupt checkpoint: v000002" in caplog.text
    with pytest.raises(CheckpointError):
        store.load(2)


def test_leftover_temporary_folders_are_ignored_and_pruned(tmp_path):
    store = CheckpointStore(tmp_path, keep=2)
    (tmp_path / ".tmp-v000001-999999999").mkdir()  # a crash mid-write, by a process long gone
    store.save(_model(1), {"stream_seq": 1})
    assert store.versions() == [1]
    assert not (tmp_path / ".tmp-v000001-999999999").exists()


def test_rollback_keeps_the_stream_position_unless_replay(tmp_path):
    store = CheckpointStore(tmp_path, keep=10)
    store.save(_model(2), {"stream_seq": 20, "events_applied_total": 2}, b"old")
    store.save(_model(7), {"stream_seq": 70, "events_applied_total": 7}, b"new")
    cp = store.rollback(1)
    assert cp.version == 3 and cp.model.events_learned == 2
    assert cp.manifest["stream_seq"] == 70 and cp.manifest["rolled_back_from"] == 2 and cp.state == b"new"
    cp = store.rollback(2, replay=True)
    assert cp.version == 4 and cp.manifest["stream_seq"] == 70 and cp.model.events_learned == 7
    cp = store.rollback(1, replay=True)
    assert cp.manifest["stream_seq"] == 20 and cp.state == b"old"


def test_rollback_refuses_while_an_engine_holds_the_directory(tmp_path):
    store = CheckpointStore(tmp_path)
    store.save(_model(1), {"stream_seq": 1})
    with store.lock(), pytest.raises(RecofastError, match="in use"):
        store.rollback(1)


def test_model_list_and_rollback_commands(tmp_path, capsys):
    store = CheckpointStore(tmp_path, keep=10)
    store.save(_model(2), {"stream_seq": 20, "events_applied_total": 2})
    store.save(_model(3), {"stream_seq": 30, "events_applied_total": 3})
    assert cli_main(["model", "rollback", "v000001", "--model-dir", str(tmp_path)]) == 0
    assert "v000003 now holds the model of v000001" in capsys.readouterr().out
    assert cli_main(["model", "list", "--model-dir", str(tmp_path), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [(r["version"], r["stream_seq"], r["rolled_back_from"]) for r in rows] == [(1, 20, None), (2, 30, None), (3, 30, 2)]
    assert cli_main(["model", "list", "--model-dir", str(tmp_path)]) == 0
    assert "rollback from v2" in capsys.readouterr().out
    assert cli_main(["model", "rollback", "9", "--model-dir", str(tmp_path)]) == 2
