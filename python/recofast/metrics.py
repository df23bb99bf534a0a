"""A small Prometheus registry (counters, gauges, histograms) and the text exposition
format, so the engine needs no metrics library.

>>> reg = Registry()
>>> c = reg.counter("demo_total", "Demo events.")
>>> c.inc(3)
>>> h = reg.histogram("demo_seconds", "Demo latency.", buckets=(0.1, 1.0))
>>> h.observe(0.5)
>>> print(reg.render().strip())
# HELP demo_total Demo events.
# TYPE demo_total counter
demo_total 3
# HELP demo_seconds Demo latency.
# TYPE demo_seconds histogram
demo_seconds_bucket{le="0.1"} 0
demo_seconds_bucket{le="1.0"} 1
demo_seconds_bucket{le="+Inf"} 1
demo_seconds_sum 0.5
demo_seconds_count 1
"""

from __future__ import annotations

import bisect
import threading
from collections.abc import Iterable, Sequence

import numpy as np

DEFAULT_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


def _num(v: float) -> str:
    if v == int(v) and abs(v) < 1e15:
        return str(int(v))
    return repr(float(v))


class Counter:
    kind = "counter"

    def __init__(self, name: str, help: str) -> None:
        self.name, self.help, self.value = name, help, 0.0

    def inc(self, n: float = 1) -> None:
        self.value += n

    def lines(self) -> Iterable[str]:
        yield f"{self.name} {_num(self.value)}"


class Gauge(Counter):
    kind = "gauge"

    def set(self, v: float) -> None:
        self.value = float(v)


class Histogram:
    kind = "histogram"

    def __init__(self, name: str, help: str, buckets: Sequence[float] = DEFAULT_BUCKETS) -> None:
        self.name, self.help = name, help
        self.buckets = tuple(sorted(buckets))
        self.counts = [0] * (len(self.buckets) + 1)
        self.sum = 0.0
        self._lock = threading.Lock()

    def observe(self, v: float) -> None:
        with self._lock:
            self.counts[bisect.bisect_left(self.buckets, v)] += 1
            self.sum += v

    def observe_many(self, values: np.ndarray) -> None:
        if len(values) == 0:
            return
        idx = np.searchsorted(np.asarray(self.buckets), values, side="left")
        binc = np.bincount(idx, minlength=len(self.counts))
        with self._lock:
            for i, n in enumerate(binc.tolist()):
                self.counts[i] += n
            self.sum += float(np.sum(values))

    @property
    def count(self) -> int:
        return sum(self.counts)

    def lines(self) -> Iterable[str]:
        acc = 0
        for b, n in zip(self.buckets, self.counts):
            acc += n
            yield f'{self.name}_bucket{{le="{b!r}"}} {acc}'
        acc += self.counts[-1]
        yield f'{self.name}_bucket{{le="+Inf"}} {acc}'
        yield f"{self.name}_sum {_num(self.sum)}"
        yield f"{self.name}_count {acc}"


class Registry:
    def __init__(self) -> None:
        self.metrics: list[Counter | Gauge | Histogram] = []

    def _add(self, m):  # noqa: ANN001, ANN202
        self.metrics.append(m)
        return m

    def counter(self, name: str, help: str) -> Counter:
        return self._add(Counter(name, help))

    def gauge(self, name: str, help: str) -> Gauge:
        return self._add(Gauge(name, help))

    def histogram(self, name: str, help: str, buckets: Sequence[float] = DEFAULT_BUCKETS) -> Histogram:
        return self._add(Histogram(name, help, buckets))

    def render(self) -> str:
        out: list[str] = []
        for m in self.metrics:
            out.append(f"# HELP {m.name} {m.help}")
            out.append(f"# TYPE {m.name} {m.kind}")
            out.extend(m.lines())
        return "\n".join(out) + "\n"
