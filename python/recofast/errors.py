"""Every exception recofast raises, in one place.

Bad arguments raise the built-in :class:`ValueError`; the classes here cover what is
specific to recofast. :class:`RecofastError` and :class:`SnapshotError` are defined in the
compiled core (``recofast._core``), so the core raises them directly; the engine's own
(:class:`CheckpointError`, :class:`StoreUnavailable`, :class:`LoopStoreError`) are defined here; the contract's
(:class:`CodecError` and the list store's :class:`StoreError` family, :class:`ConfigError`)
are defined in :mod:`recofast_sidecar.protocol`, which the edge installs without recofast,
and re-exported here.

>>> issubclass(SnapshotError, RecofastError) and issubclass(RecofastError, Exception)
True
>>> SnapshotError.__module__
'recofast.errors'
"""

from recofast_sidecar.protocol.codec import CodecError
from recofast_sidecar.protocol.liststore import (
    StoreError,
    StoreFullError,
    StoreLockedError,
)
from recofast_sidecar.protocol.settings import ConfigError

from recofast._core import RecofastError, SnapshotError


class CheckpointError(RecofastError):
    """A checkpoint is missing, incomplete or fails its checksums."""


class StoreUnavailable(RecofastError):
    """The list store cannot take a commit now (full map at its maximum, full disk): the
    engine stops fetching, keeps the batch, and retries until space returns."""


class LoopStoreError(RecofastError):
    """The closed loop's SQLite file is missing (for a report), not a database, or of a
    format this version does not read."""


__all__ = [
    "CheckpointError",
    "LoopStoreError",
    "CodecError",
    "ConfigError",
    "RecofastError",
    "SnapshotError",
    "StoreError",
    "StoreFullError",
    "StoreLockedError",
    "StoreUnavailable",
]
