"""The sidecar's metrics, in the Prometheus text format."""

from __future__ import annotations

from collections.abc import Callable


class Metrics:
    """Counters and gauges rendered in the Prometheus text format."""

    def __init__(self) -> None:
        self.counters: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
        self.help: dict[str, tuple[str, str]] = {}
        self.gauges: dict[str, Callable[[], float]] = {}

    def counter(self, name: str, doc: str) -> None:
        self.help[name] = ("counter", doc)

    def gauge(self, name: str, doc: str, fn: Callable[[], float]) -> None:
        self.help[name] = ("gauge", doc)
        self.gauges[name] = fn

    def inc(self, name: str, value: float = 1.0, **labels: str) -> None:
        key = (name, tuple(sorted(labels.items())))
        self.counters[key] = self.counters.get(key, 0.0) + value

    def value(self, name: str, **labels: str) -> float:
        return self.counters.get((name, tuple(sorted(labels.items()))), 0.0)

    def render(self) -> str:
        lines = []
        for name, (kind, doc) in self.help.items():
            lines.append(f"# HELP {name} {doc}")
            lines.append(f"# TYPE {name} {kind}")
            if kind == "gauge":
                lines.append(f"{name} {self.gauges[name]():g}")
                continue
            for (n, labels), v in sorted(self.counters.items()):
                if n == name:
                    lab = ",".join(f'{k}="{_esc(val)}"' for k, val in labels)
                    lines.append(f"{name}{{{lab}}} {v:g}" if lab else f"{name} {v:g}")
        return "\n".join(lines) + "\n"


def _esc(s: str) -> str:
    return s.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


__all__ = ["Metrics"]
