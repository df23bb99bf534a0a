"""Benchmark helpers: the shared data folder, and a table of throughput ratios printed at
the end of the run (each benchmark records `events_per_s` or `calls_per_s` in
`benchmark.extra_info`, and the ratios are taken between implementations of one group
measured in the same run)."""

from __future__ import annotations

import os
from collections import defaultdict
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
_RATES: dict[str, dict[str, tuple[float, str]]] = defaultdict(dict)


def shared_data() -> Path:
    """The shared data folder: $RECOFAST_SHARED_DATA, or the first ``shared/data`` beside the
    checkout or beside one of its parents (a worktree inside the main checkout finds it too)."""
    env = os.environ.get("RECOFAST_SHARED_DATA")
    if env:
        return Path(env)
    for parent in ROOT.parents:
        if (parent / "shared" / "data").is_dir():
            return parent / "shared" / "data"
    return ROOT.parent / "shared" / "data"


def shop_log() -> Path:
    """The bundled Online Retail log: $RECOFAST_SHOP_LOG, or ``online_retail/interactions.csv.gz``
    in :func:`shared_data`."""
    env = os.environ.get("RECOFAST_SHOP_LOG")
    return Path(env) if env else shared_data() / "online_retail" / "interactions.csv.gz"


def require_shop_log() -> Path:
    """The shop log's path, or a skip that says where it was looked for."""
    path = shop_log()
    if not path.exists():
        pytest.skip(f"the shop log is not there: {path} (set RECOFAST_SHOP_LOG or RECOFAST_SHARED_DATA)")
    return path


#: ``quick`` (the default, what ``recofast bench --quick`` runs) or ``full``: the new suites
#: choose their sizes from it.
MODE = os.environ.get("RECOFAST_BENCH_MODE", "quick")
FULL = MODE == "full"



@pytest.fixture
def record_rate():
    """record_rate(group, implementation, per_second, unit) keeps a throughput for the summary."""

    def record(group: str, impl: str, per_second: float, unit: str = "events/s") -> None:
        _RATES[group][impl] = (per_second, unit)

    return record


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    if not _RATES:
        return
    tr = terminalreporter
    tr.section("throughput side by side (same run)")
    for group, rates in sorted(_RATES.items()):
        best = max(rates.items(), key=lambda kv: kv[1][0])
        tr.write_line(f"{group}:")
        for impl, (rate, unit) in sorted(rates.items(), key=lambda kv: -kv[1][0]):
            tr.write_line(f"  {impl:<28} {rate:>14,.0f} {unit:<10} {rate / best[1][0]:>8.3f} x best")
        names = list(rates)
        if "recofast" in rates:
            for other in names:
                if other != "recofast":
                    tr.write_line(f"  recofast / {other}: {rates['recofast'][0] / rates[other][0]:.1f} x")


@pytest.fixture
def nats_url(tmp_path_factory: pytest.TempPathFactory):
    """A real nats-server (JetStream) on a free loopback port, for the engine benchmarks."""
    from recofast.engine.natsserver import NatsServer

    server = NatsServer(tmp_path_factory.mktemp("nats"), port=-1)
    server.start()
    try:
        yield server.url
    finally:
        server.stop()
