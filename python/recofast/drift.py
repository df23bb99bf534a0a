"""Concept-drift detectors with a Rust core, identical to River 0.26.1's.

Each class takes River's parameters with River's defaults and, fed the same stream, flags
drift (and warnings) at exactly the same indices as its River twin: ``ADWIN``,
``PageHinkley``, ``KSWIN`` (given an integer ``seed``), and for 0/1 error streams ``DDM``,
``EDDM``, ``HDDM_A`` and ``HDDM_W`` (River's ``drift.binary.HDDMA``/``HDDMW``; those names
are aliases here).

Every detector has ``update(x) -> bool`` (drift detected now), ``drift_detected``,
``reset()``, and ``update_many(values)``, which feeds a whole list or numpy array in one
call into Rust and returns the int64 indices where drift was detected. The binary
detectors also have ``warning_detected``. As in River, a detector that flagged a drift
starts afresh at its next update. Detectors pickle (through ``to_bytes``, a versioned byte
encoding; corrupt bytes raise :class:`recofast.errors.SnapshotError`). Bad parameters raise
``ValueError``.

Non-finite values never crash a detector; they go through River's arithmetic and give
River's result: NaN or ±inf make the running statistics NaN, so ADWIN, PageHinkley, DDM,
HDDM_A and HDDM_W stay silent until ``reset()``; EDDM ignores them (only 1 counts as an
error); KSWIN finds no drift while a NaN is in a tested sample.
"""

from __future__ import annotations

from typing import Any, ClassVar

from recofast import _core

__all__ = ["ADWIN", "DDM", "EDDM", "HDDMA", "HDDMW", "HDDM_A", "HDDM_W", "KSWIN", "PageHinkley"]


class _Detector:
    """What every detector adds on top of its Rust class: repr, from_bytes, pickling."""

    _params: ClassVar[tuple[str, ...]] = ()

    def __repr__(self) -> str:
        args = ", ".join(f"{p}={getattr(self, p)!r}" for p in self._params)
        return f"{type(self).__name__}({args})"

    @classmethod
    def from_bytes(cls, data: bytes) -> Any:
        """A detector from :meth:`to_bytes` output; raises ``SnapshotError`` on corrupt bytes."""
        obj = cls.__new__(cls)
        obj.__setstate__(bytes(data))
        return obj

    def __reduce__(self) -> tuple:
        return (type(self).from_bytes, (self.to_bytes(),))  # type: ignore[attr-defined]


class ADWIN(_Detector, _core.ADWIN):
    """ADWIN (adaptive windowing) drift detector, River's ``drift.ADWIN``.

    Keeps a window of recent values in exponentially sized buckets and drops its older part
    when the means of two sub-windows differ by more than a bound set by ``delta``.

    Parameters: ``delta`` (significance, in (0, 1)), ``clock`` (check every this many
    updates), ``max_buckets`` (buckets of each size before merging), ``min_window_length``
    (smallest sub-window compared), ``grace_period`` (no detection before this many values).

    >>> import random
    >>> from recofast.drift import ADWIN
    >>> rng = random.Random(12345)
    >>> stream = rng.choices([0, 1], k=1000) + rng.choices(range(4, 8), k=1000)
    >>> adwin = ADWIN()
    >>> adwin.update_many(stream).tolist()
    [1023]
    >>> adwin
    ADWIN(delta=0.002, clock=32, max_buckets=5, min_window_length=5, grace_period=10)
    """

    _params = ("delta", "clock", "max_buckets", "min_window_length", "grace_period")


class PageHinkley(_Detector, _core.PageHinkley):
    """Page-Hinkley drift detector, River's ``drift.PageHinkley``.

    A CUSUM of the deviations from the running mean, with forgetting factor ``alpha``;
    drift when it moves more than ``threshold`` from its extreme (``mode``: "up", "down"
    or "both"), after ``min_instances`` values. No warning zone.

    >>> import random
    >>> from recofast.drift import PageHinkley
    >>> rng = random.Random(12345)
    >>> stream = rng.choices([0, 1], k=1000) + rng.choices(range(4, 8), k=1000)
    >>> ph = PageHinkley()
    >>> [i for i, x in enumerate(stream) if ph.update(x)]
    [1006]
    """

    _params = ("min_instances", "delta", "threshold", "alpha", "mode")


class KSWIN(_Detector, _core.KSWIN):
    """KSWIN (Kolmogorov-Smirnov windowing) drift detector, River's ``drift.KSWIN``.

    Keeps the last ``window_size`` values; once full, tests (two-sample Kolmogorov-Smirnov)
    the newest ``stat_size`` of them against ``stat_size`` drawn at random from the rest,
    and flags drift when the p-value is at most ``alpha`` and the statistic above 0.1.
    ``window`` pre-fills the window.

    The draws are CPython's ``random.Random(seed).sample`` and the test is SciPy's exact
    ``ks_2samp`` for equal sizes, both reproduced in Rust, so with the same integer
    ``seed`` the detections are River's. With ``seed=None`` the seed comes from OS entropy
    (River's draws are then random too). Refused with ``ValueError``: ``stat_size`` above
    10000 (SciPy then switches to an asymptotic test) and ``window_size < 2 * stat_size``
    (River raises at the first test). NaN in a tested sample gives a NaN p-value and no
    drift, as in River.

    >>> import random
    >>> from recofast.drift import KSWIN
    >>> rng = random.Random(12345)
    >>> stream = rng.choices([0, 1], k=1000) + rng.choices(range(4, 8), k=1000)
    >>> kswin = KSWIN(alpha=0.0001, seed=42)
    >>> kswin.update_many(stream).tolist()
    [1016]
    """

    _params = ("alpha", "window_size", "stat_size", "seed")


class DDM(_Detector, _core.DDM):
    """DDM drift and warning detector, River's ``drift.binary.DDM``.

    Input: 1 (or True) for an error, 0 for a success. Warning when the error rate plus its
    standard deviation passes ``p_min + warning_threshold * s_min``, drift at
    ``drift_threshold``; nothing before ``warm_start`` values.

    >>> import random
    >>> from recofast.drift import DDM
    >>> rng = random.Random(42)
    >>> stream = rng.choices([0, 1], k=1000) + rng.choices([0, 1], k=1000, weights=[0.3, 0.7])
    >>> DDM().update_many(stream).tolist()
    [1334]
    """

    _params = ("warm_start", "warning_threshold", "drift_threshold")


class EDDM(_Detector, _core.EDDM):
    """EDDM drift and warning detector, River's ``drift.binary.EDDM``.

    Input: 1 (or True) for an error. Watches the mean and spread of the distance between
    errors; warning when it falls below ``alpha`` of its maximum, drift below ``beta``
    (``alpha >= beta``).

    >>> import random
    >>> from recofast.drift import EDDM
    >>> rng = random.Random(42)
    >>> stream = rng.choices([0, 1], k=1000) + rng.choices([0, 1], k=1000, weights=[0.3, 0.7])
    >>> EDDM(alpha=0.8, beta=0.75).update_many(stream).tolist()
    [1278]
    """

    _params = ("warm_start", "alpha", "beta")


class HDDM_A(_Detector, _core.HDDM_A):  # noqa: N801 (River's name)
    """HDDM_A drift and warning detector, River's ``drift.binary.HDDMA``.

    Input: 1 (or True) for an error. Hoeffding-bound test on the mean error rate since its
    lowest point (and, with ``two_sided_test``, its highest).

    >>> import random
    >>> from recofast.drift import HDDM_A
    >>> rng = random.Random(42)
    >>> stream = rng.choices([0, 1], k=1000) + rng.choices([0, 1], k=1000, weights=[0.3, 0.7])
    >>> HDDM_A().update_many(stream).tolist()
    [1206]
    """

    _params = ("drift_confidence", "warning_confidence", "two_sided_test")


class HDDM_W(_Detector, _core.HDDM_W):  # noqa: N801 (River's name)
    """HDDM_W drift and warning detector, River's ``drift.binary.HDDMW``.

    Input: 1 (or True) for an error. McDiarmid-bound test on exponentially weighted means
    (weight ``lambda_val`` on the newest value).

    >>> import random
    >>> from recofast.drift import HDDM_W
    >>> rng = random.Random(42)
    >>> stream = rng.choices([0, 1], k=1000) + rng.choices([0, 1], k=1000, weights=[0.3, 0.7])
    >>> HDDM_W().update_many(stream).tolist()
    [1077]
    """

    _params = ("drift_confidence", "warning_confidence", "lambda_val", "two_sided_test")


HDDMA = HDDM_A
HDDMW = HDDM_W
