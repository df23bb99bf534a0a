"""recofast's exceptions: defined in the core, re-exported by `recofast.errors`."""

import pickle
import sys

import pytest
import recofast
from recofast import _core
from recofast.errors import CheckpointError
from recofast.errors import RecofastError, SnapshotError


def test_the_classes_of_recofast_errors_are_the_core_classes():
    assert SnapshotError is _core.SnapshotError
    assert RecofastError is _core.RecofastError
    assert issubclass(SnapshotError, RecofastError) and issubclass(RecofastError, Exception)
    assert not issubclass(RecofastError, (ValueError, OSError))
    assert SnapshotError.__module__ == RecofastError.__module__ == "recofast.errors"
    assert "snapshot" in SnapshotError.__doc__ and "Base class" in RecofastError.__doc__


def test_the_core_raises_snapshot_error_without_importing_python_at_error_time(monkeypatch):
    # With the Python module out of reach, a corrupt snapshot still raises SnapshotError.
    monkeypatch.setitem(sys.modules, "recofast.errors", None)
    with pytest.raises(SnapshotError, match="snapshot") as info:
        _core.Model.from_bytes(b"not a snapshot")
    assert type(info.value) is SnapshotError
    with pytest.raises(RecofastError):
        recofast.drift.ADWIN.from_bytes(b"\x00")


def test_errors_pickle_and_python_subclasses_are_caught_by_the_base():
    e = pickle.loads(pickle.dumps(SnapshotError("truncated")))
    assert type(e) is SnapshotError and e.args == ("truncated",)
    assert issubclass(CheckpointError, RecofastError)
    with pytest.raises(RecofastError, match="broken"):
        raise CheckpointError("broken")
