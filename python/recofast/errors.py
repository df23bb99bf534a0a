"""Exceptions raised by recofast.

Bad arguments raise the built-in :class:`ValueError`; the classes here cover what is
specific to recofast. They are defined in the compiled core (``recofast._core``), so the
core raises them directly, and re-exported here, their documented home:

>>> issubclass(SnapshotError, RecofastError) and issubclass(RecofastError, Exception)
True
>>> SnapshotError.__module__
'recofast.errors'
"""

from recofast._core import RecofastError, SnapshotError

__all__ = ["RecofastError", "SnapshotError"]
