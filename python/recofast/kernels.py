"""Top-K scoring kernels: every item row scored against a query, the best ``k`` kept.

The scan is fused with the selection (no array of all scores is written or sorted),
exclusions and allow-lists are applied inside it, many queries are scored in one pass over
the item matrix, and the GIL is released throughout.

>>> import numpy as np
>>> from recofast import kernels
>>> items = np.array([[1, 0], [0, 1], [1, 1], [-1, 0]], dtype=np.float32)
>>> ids, scores = kernels.topk(items, np.array([1, 0.5], dtype=np.float32), k=2)
>>> ids.tolist(), scores.tolist()
([2, 0], [1.5, 1.0])
>>> kernels.topk(items, np.array([1, 0.5], dtype=np.float32), k=2, exclude=[2])[0].tolist()
[0, 1]
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from typing import Any

import numpy as np

from recofast import _core
from recofast._core import build_info as _build_info

__all__ = ["DEFAULT_CANDIDATES", "QuantizedItems", "levels", "read_bandwidth", "topk"]

#: Rows the int8 scan hands to the exact f32 rescoring, unless told otherwise.
DEFAULT_CANDIDATES = 4096


def levels() -> list[str]:
    """The SIMD levels this CPU can run, ``"scalar"`` first.

    >>> "scalar" in levels()
    True
    """
    return list(_build_info()["simd_available"])


def _matrix(a: Any, name: str) -> np.ndarray:
    if not isinstance(a, np.ndarray):
        raise ValueError(f"{name} must be a numpy array, got {type(a).__name__}")
    if a.dtype != np.float32:
        raise ValueError(f"{name} must have dtype float32, got {a.dtype}")
    if a.ndim != 2:
        raise ValueError(f"{name} must be 2-d (n, d), got {a.ndim}-d")
    if not a.flags.c_contiguous:
        raise ValueError(f"{name} must be C-contiguous (use np.ascontiguousarray)")
    if a.shape[0] == 0 or a.shape[1] == 0:
        raise ValueError(f"{name} must have at least one row and one column, got shape {a.shape}")
    return a


def _queries(q: Any, d: int) -> tuple[np.ndarray, bool]:
    if not isinstance(q, np.ndarray):
        raise ValueError(f"queries must be a numpy array, got {type(q).__name__}")
    if q.dtype != np.float32:
        raise ValueError(f"queries must have dtype float32, got {q.dtype}")
    if q.ndim not in (1, 2):
        raise ValueError(f"queries must be 1-d (d,) or 2-d (m, d), got {q.ndim}-d")
    if not q.flags.c_contiguous:
        raise ValueError("queries must be C-contiguous (use np.ascontiguousarray)")
    single = q.ndim == 1
    q2 = q.reshape(1, -1) if single else q
    if q2.shape[1] != d:
        raise ValueError(f"queries have dimension {q2.shape[1]}, items have {d}")
    if q2.shape[0] == 0:
        raise ValueError("queries must hold at least one query")
    return q2, single


def _id_array(x: Any, name: str) -> np.ndarray:
    a = np.asarray(x)
    if a.ndim != 1:
        raise ValueError(f"{name} must be a 1-d list of integer ids, got {a.ndim}-d")
    if a.size == 0:
        return np.zeros(0, dtype=np.int64)
    if a.dtype.kind not in "iu":
        raise ValueError(f"{name} must hold integer ids, got dtype {a.dtype}")
    if a.dtype.kind == "u" and a.size and a.max() > np.iinfo(np.int64).max:
        raise ValueError(f"{name} holds an id too large for int64")
    return np.ascontiguousarray(a, dtype=np.int64)


def _id_lists(x: Any, name: str, m: int, single: bool) -> list[np.ndarray] | None:
    """None; one id list for every query; or (2-d queries) one id list per query."""
    if x is None:
        return None
    if isinstance(x, (str, bytes)):
        raise ValueError(f"{name} must be a list of integer ids, not a string")
    per_query = (
        not single
        and isinstance(x, Sequence)
        and len(x) > 0
        and all(isinstance(e, (np.ndarray, Sequence)) and not isinstance(e, (str, bytes)) for e in x)
    )
    if per_query:
        if len(x) != m:
            raise ValueError(f"{name} has {len(x)} id lists for {m} queries")
        return [_id_array(e, name) for e in x]
    return [_id_array(x, name)]


def _check_k(k: Any, n: int) -> int:
    if isinstance(k, bool) or not isinstance(k, numbers.Integral):
        raise ValueError(f"k must be an integer, got {type(k).__name__}")
    if not 1 <= int(k) <= n:
        raise ValueError(f"k must be between 1 and the number of items ({n}), got {k}")
    return int(k)


def _check_threads(threads: Any) -> int | None:
    if threads is None:
        return None
    if isinstance(threads, bool) or not isinstance(threads, numbers.Integral) or threads < 1:
        raise ValueError(f"threads must be a positive integer or None, got {threads!r}")
    return int(threads)


def _check_level(level: Any) -> str | None:
    if level is not None and not isinstance(level, str):
        raise ValueError(f"level must be a string such as 'avx2' or None, got {type(level).__name__}")
    return level


class QuantizedItems:
    """An int8 copy of a float32 item matrix (one scale per row) for faster top-K.

    :meth:`topk` scans the int8 table (a quarter of the bytes of the float32 one), keeps the
    best ``candidates`` rows, and rescores those exactly in float32: the returned scores
    are exact, only the candidate set is approximate. The float32 matrix is kept by
    reference (not copied) for the rescoring; build a new table after changing it.

    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> items = rng.standard_normal((1024, 16), dtype=np.float32)
    >>> table = QuantizedItems(items)
    >>> q = rng.standard_normal(16, dtype=np.float32)
    >>> ids, scores = table.topk(q, k=5)
    >>> ids.tolist() == topk(items, q, k=5)[0].tolist()
    True
    >>> table.nbytes  # 1024 × 16 one-byte codes + 1024 float32 scales
    20480
    """

    def __init__(self, items: np.ndarray) -> None:
        self.items = _matrix(items, "items")
        self._q = _core.QuantizedItems(self.items)

    @property
    def shape(self) -> tuple[int, int]:
        return self.items.shape

    @property
    def nbytes(self) -> int:
        """Bytes of the int8 codes and per-row scales."""
        return int(self._q.nbytes)

    def approx_scores(self, query: np.ndarray, level: str | None = None) -> np.ndarray:
        """The dequantised (approximate) score of every row for one query of shape (d,)."""
        q, single = _queries(query, self.items.shape[1])
        if not single:
            raise ValueError("approx_scores takes one query of shape (d,)")
        return self._q.approx_scores(q[0], level=_check_level(level))

    def topk(
        self,
        queries: np.ndarray,
        k: int,
        exclude: Any = None,
        allow: Any = None,
        candidates: int | None = None,
        threads: int | None = None,
        level: str | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Like :func:`topk`, with the int8 scan first; ``candidates`` (default
        ``max(4096, k)``) rows are rescored exactly."""
        n, d = self.items.shape
        q, single = _queries(queries, d)
        k = _check_k(k, n)
        if candidates is None:
            candidates = max(DEFAULT_CANDIDATES, k)
        if isinstance(candidates, bool) or not isinstance(candidates, numbers.Integral) or candidates < 1:
            raise ValueError(f"candidates must be a positive integer, got {candidates!r}")
        m = q.shape[0]
        ids, scores = self._q.topk(
            q,
            k,
            int(candidates),
            exclude=_id_lists(exclude, "exclude", m, single),
            allow=_id_lists(allow, "allow", m, single),
            threads=_check_threads(threads),
            level=_check_level(level),
        )
        return (ids[0], scores[0]) if single else (ids, scores)


def topk(
    items: np.ndarray | QuantizedItems,
    queries: np.ndarray,
    k: int,
    exclude: Any = None,
    allow: Any = None,
    quantized: bool = False,
    threads: int | None = None,
    level: str | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` best items by inner product, for one query or many.

    ``items``: C-contiguous float32 array (n, d), or a :class:`QuantizedItems`.
    ``queries``: float32 (d,) — results are 1-d — or (m, d) — results are (m, k).
    ``exclude`` / ``allow``: integer ids never returned / the only ids that may be; one list
    for every query, or (for 2-d queries) a list of one id list per query.
    ``quantized``: scan an int8 copy first and rescore candidates exactly; with a plain
    array this builds a :class:`QuantizedItems` on each call — build one yourself and pass
    it as ``items`` to reuse it. ``threads``: worker threads (None: one per core).
    ``level``: SIMD level (``"scalar"``, ``"avx2"``, ``"avx512"``, ``"neon"``; None: the best).

    Returns ``(ids, scores)``: int64 ids and float32 scores, best first, ties broken by the
    lower id. When exclusions leave fewer than ``k`` items, the tail is padded with id -1 and
    score -inf (rows scoring NaN or -inf are never returned either).

    >>> import numpy as np
    >>> items = np.arange(12, dtype=np.float32).reshape(6, 2)
    >>> queries = np.array([[1, 0.5], [-1, -0.5]], dtype=np.float32)
    >>> ids, scores = topk(items, queries, k=2, exclude=[[5], []])
    >>> ids.tolist(), scores.tolist()
    ([[4, 3], [0, 1]], [[12.5, 9.5], [-0.5, -3.5]])
    """
    if isinstance(items, QuantizedItems):
        return items.topk(queries, k, exclude=exclude, allow=allow, threads=threads, level=level)
    items = _matrix(items, "items")
    if quantized:
        return QuantizedItems(items).topk(queries, k, exclude=exclude, allow=allow, threads=threads, level=level)
    n, d = items.shape
    q, single = _queries(queries, d)
    k = _check_k(k, n)
    m = q.shape[0]
    ids, scores = _core.topk_exact(
        items,
        q,
        k,
        exclude=_id_lists(exclude, "exclude", m, single),
        allow=_id_lists(allow, "allow", m, single),
        threads=_check_threads(threads),
        level=_check_level(level),
    )
    return (ids[0], scores[0]) if single else (ids, scores)


def read_bandwidth(items: np.ndarray) -> float:
    """A plain sum of every value of ``items`` on one thread: the reference for how fast
    this machine reads the matrix (time it next to :func:`topk`).

    >>> read_bandwidth(np.ones((4, 3), dtype=np.float32))
    12.0
    """
    return float(_core.read_sum(_matrix(items, "items")))
