"""Exceptions raised by recofast.

Bad arguments raise the built-in :class:`ValueError`; the classes here cover what is
specific to recofast.
"""


class RecofastError(Exception):
    """Base class of recofast's own exceptions."""


class SnapshotError(RecofastError):
    """A model snapshot is truncated, corrupt, or of a format this build cannot read."""


__all__ = ["RecofastError", "SnapshotError"]
