"""Drift and staleness in the running engine: detectors on the live hit stream and on the
event mix, and the staleness guard.

The **live hit stream** comes from the closed loop (:mod:`recofast.engine.attribution`): each
list served by ``/v1/recommendations`` that is followed by an item event of its user gives
one observation, 1 when that item was in the list and 0 when not, in the order the loop
checks them. The **event mix** is the share of each event type among the events learned.

- :class:`LiveMonitor` runs :class:`recofast.drift.ADWIN` (River's, ``delta`` 0.002) on the hit
  stream and one ADWIN (``delta`` 0.0001) per event type on the mix. A detection counts only
  after ``min_observations`` values (since the start, or since the last reset) and
  ``cooldown`` seconds after the previous alert of the same signal, so the noise of a small
  or fresh stream does not raise alarms. ADWIN flags any change; a hit-rate alert is a
  *drop* only (the mean of the window ADWIN keeps after the change is below the mean before
  it); a rise is the model learning and is not reported.
- :class:`StalenessGuard`: a slow trailing baseline of the hit rate (an exponentially
  weighted mean, ``baseline_half_life`` observations, started as the plain mean of the first
  ``min_observations``) and a live one (the last ``window``
  observations). When the live rate stays below ``ratio`` × baseline for ``seconds``, the
  guard says so (the engine rolls back to the best recent checkpoint). The baseline does
  not follow the live rate down while it is below: a degraded model cannot become its own
  reference.

>>> mon = LiveMonitor(min_observations=50, cooldown=0.0)
>>> import random
>>> rng = random.Random(7)
>>> stream = [int(rng.random() < 0.6) for _ in range(2000)] + [int(rng.random() < 0.2) for _ in range(2000)]
>>> alerts = [a for t, x in enumerate(stream) if (a := mon.hit(x, now=float(t))) is not None]
>>> len(alerts), alerts[0].signal, 2000 < alerts[0].index < 2300
(1, 'hit_rate', True)
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from recofast.drift import ADWIN

MIX_TYPES = ("view", "click", "add_to_cart", "remove_from_cart", "purchase", "search")
"""The event types whose shares the event-mix detectors watch."""


@dataclass(frozen=True)
class Alert:
    """A detection: the signal (``hit_rate`` or ``event_mix``), the observation index at which
    it fired, the rates before and after the change, and a sentence for people."""

    signal: str
    index: int
    before: float
    after: float
    detail: str
    extra: dict[str, Any] = field(default_factory=dict)


class LiveMonitor:
    """Drift detectors on the live hit stream and on the event mix."""

    def __init__(self, delta: float = 0.002, mix_delta: float = 0.0001, min_observations: int = 200,
                 cooldown: float = 60.0) -> None:
        self.delta, self.mix_delta = delta, mix_delta
        self.min_observations = min_observations
        self.cooldown = cooldown
        self.hits_seen = 0
        self.events_seen = 0
        self._last_alert: dict[str, float] = {}
        self.reset()

    def reset(self) -> None:
        """Starts the detectors afresh (after a rollback: the old model's rates no longer count)."""
        self.hit_detector = ADWIN(delta=self.delta)
        self.mix = {t: ADWIN(delta=self.mix_delta) for t in MIX_TYPES}
        self._hits_since = 0
        self._events_since = 0

    def _cooling(self, signal: str, now: float) -> bool:
        last = self._last_alert.get(signal)
        return last is not None and now - last < self.cooldown

    def hit(self, x: int, now: float | None = None) -> Alert | None:
        """One hit observation (1 or 0); returns an :class:`Alert` on a detected drop."""
        now = time.time() if now is None else now
        d = self.hit_detector
        before = d.estimation
        fired = d.update(float(x))
        self.hits_seen += 1
        self._hits_since += 1
        if not fired or self._hits_since < self.min_observations:
            return None
        after = d.estimation
        if after >= before or self._cooling("hit_rate", now):
            return None
        self._last_alert["hit_rate"] = now
        return Alert("hit_rate", self.hits_seen - 1, before, after,
                     f"live hit rate dropped from {before:.3f} to {after:.3f} (ADWIN, {self.hits_seen} observations)")

    def hit_many(self, xs: Sequence[int], now: float | None = None) -> list[Alert]:
        out = []
        for x in xs:
            a = self.hit(x, now)
            if a is not None:
                out.append(a)
        return out

    def events(self, types: Sequence[str], now: float | None = None) -> list[Alert]:
        """The types of a batch of learned events, in order; an alert per event type whose
        share changed (at most one a batch per signal, with the cool-down)."""
        now = time.time() if now is None else now
        if not len(types):
            return []
        arr = np.asarray(types, dtype=object)
        start = self.events_seen
        self.events_seen += len(arr)
        self._events_since += len(arr)
        changed = []
        for t, d in self.mix.items():
            before = d.estimation
            idx = d.update_many((arr == t).astype(np.float64))
            if len(idx) and self._events_since >= self.min_observations:
                changed.append((t, before, d.estimation, start + int(idx[-1])))
        if not changed or self._cooling("event_mix", now):
            return []
        self._last_alert["event_mix"] = now
        t, before, after, index = max(changed, key=lambda c: abs(c[2] - c[1]))
        words = ", ".join(f"{c[0]} {c[1]:.3f}→{c[2]:.3f}" for c in changed)
        return [Alert("event_mix", index, before, after, f"event mix changed: share of {words} (ADWIN)",
                      {"types": {c[0]: [round(c[1], 4), round(c[2], 4)] for c in changed}})]


class StalenessGuard:
    """Says when the live hit rate has stayed below ``ratio`` of its trailing baseline for
    ``seconds``.

    >>> g = StalenessGuard(ratio=0.7, seconds=10.0, window=50, baseline_half_life=200, min_observations=100)
    >>> [g.update([1, 0] * 100, now=0.0)]
    [False]
    >>> g.update([0] * 60, now=1.0), g.below_since
    (False, 1.0)
    >>> g.update([0] * 10, now=12.0)
    True
    """

    def __init__(self, ratio: float = 0.7, seconds: float = 600.0, window: int = 200,
                 baseline_half_life: float = 2000.0, min_observations: int = 500) -> None:
        self.ratio, self.seconds = ratio, seconds
        self.window = window
        self.alpha = 1.0 - 0.5 ** (1.0 / max(baseline_half_life, 1.0))
        self.min_observations = min_observations
        self.reset()

    def reset(self) -> None:
        self.recent: deque[int] = deque(maxlen=self.window)
        self._sum = 0
        self.baseline: float | None = None
        self.n = 0
        self.below_since: float | None = None

    @property
    def live(self) -> float | None:
        return self._sum / len(self.recent) if self.recent else None

    def update(self, xs: Sequence[int], now: float | None = None) -> bool:
        """Takes a batch of observations; True when the live rate has been below the
        threshold for ``seconds`` (the caller acts and calls :meth:`reset`)."""
        now = time.monotonic() if now is None else now
        for x in xs:
            x = int(x)
            self.n += 1
            if len(self.recent) == self.window:
                self._sum -= self.recent[0]
            self.recent.append(x)
            self._sum += x
            if self.baseline is None:
                self.baseline = float(x)
                continue
            if self.n <= self.min_observations:  # warm-up: the plain mean
                self.baseline += (x - self.baseline) / self.n
                continue
            if len(self.recent) == self.window and self._sum / self.window < self.ratio * self.baseline:
                if self.below_since is None:
                    self.below_since = now
            else:
                self.below_since = None
                self.baseline += self.alpha * (x - self.baseline)
        return self.below_since is not None and now - self.below_since >= self.seconds


__all__ = ["MIX_TYPES", "Alert", "LiveMonitor", "StalenessGuard"]
