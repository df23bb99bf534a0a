"""The engine's time per stage, under the backlog benchmark of ``test_bench_engine.py``.

``run``: starts a real nats-server, fills the stream with the shop log's first N events (100
to a message, by the ``recofast publish`` process), then drains it with the engine in this
process (the same config as the benchmark) and prints events/s. Run it under py-spy::

    .venv/bin/py-spy record --native --rate 250 --format raw -o engine.txt -- \\
        .venv/bin/python bench/profile_engine.py run --events 200000 --rounds 3
    .venv/bin/python bench/profile_engine.py split engine.txt

``split``: reads py-spy's collapsed stacks (``--format raw``) and prints the share of the
engine's on-CPU samples per stage (fetch/decode, validate, enrich, dedupe, learn, recommend
touched users, LMDB write, ack, popularity and the rest), from the innermost engine
function on each stack. Only samples of the drain (the event loop in ``_drain`` and the
worker thread in ``Engine.apply``) are counted, not the publisher's wait or the server's start.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

# (stage, pattern on a frame "function (file)"): the first stage whose pattern matches a
# frame, scanning from the innermost frame outwards, owns the sample.
STAGES = [
    ("attribution: SQLite hit checks and windows", r"\((?:[^)]*/)?attribution\.py"),
    ("LMDB write (encode + commit)", r"\((?:[^)]*/)?(liststore|codec)\.py|\bcommit \((?:[^)]*/)?service\.py"),
    ("recommend touched users", r"\brecommend_lists \(|\brecommend_many \("),
    ("learn (learn_many)", r"\blearn_many \(|\b_learn_run \(|\bsearch \((?:[^)]*/)?recommender"),
    ("context columns", r"\bcontext_columns \("),
    ("enrich", r"\((?:[^)]*/)?enrich\.py"),
    ("dedupe", r"\bDedupe\b|\bfilter \((?:[^)]*/)?aggregates\.py|\bdiscard \((?:[^)]*/)?aggregates"),
    ("popularity (aggregates)", r"\((?:[^)]*/)?aggregates\.py"),
    ("validate (events.py: __post_init__, time window)", r"\b(__post_init__|_check_bytes|_check_words|_apply_window|_check_times|_decode_each|_split|_seconds) \("),
    ("decode (msgspec)", r"\bdecode_events \("),
    ("ack", r"\back \((?:[^)]*/)?nats"),
    ("fetch (nats client)", r"\((?:[^)]*/)?nats/"),
    ("apply: other Python (service.py)", r"\((?:[^)]*/)?service\.py"),
    ("waiting (the GIL, epoll, a worker's result)", r"\bepoll_wait\b|\bselect \((?:[^)]*/)?selectors|pthread_cond_(timed)?wait"),
    ("event loop: other", r"\((?:[^)]*/)?asyncio/"),
]


def split(path: Path) -> list[tuple[str, int]]:
    """(stage, samples) of the collapsed stacks in ``path``, busiest first."""
    counts: Counter[str] = Counter()
    pats = [(name, re.compile(p)) for name, p in STAGES]
    for line in path.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        if not n.isdigit() or not any(m in stack for m in ("_drain", "Engine.", "recofast/engine/")):
            continue
        frames = stack.split(";")[::-1]  # innermost first
        stage = "other"
        for fr in frames:
            hit = next((name for name, p in pats if p.search(fr)), None)
            if hit:
                stage = hit
                break
        where = ("apply thread" if "Engine.apply" in stack else "closed-loop thread" if "LoopStore." in stack
                 else "refresh thread" if "Refresher." in stack else "event loop")  # fmt: skip
        counts[f"{where}: {stage}"] += int(n)
    return counts.most_common()


async def _drain(cfg, target: int) -> float:  # noqa: ANN001
    from recofast.engine import Engine

    async with Engine(cfg) as engine:
        t0 = time.perf_counter()
        task = asyncio.create_task(engine.run())
        while engine.applied_seq < target:
            assert not task.done(), "the engine stopped"
            await asyncio.sleep(0.005)
        dt = time.perf_counter() - t0
        engine.request_stop()
        await task
        m = engine.metrics
        print(f"  learn {m.value('recofast_learn_seconds_sum'):.2f} s, top-N {m.value('recofast_list_compute_seconds_sum'):.2f} s, "
              f"LMDB {m.value('recofast_lmdb_commit_seconds_sum'):.2f} s, batches {m.value('recofast_batches_total'):.0f}")  # fmt: skip
    return dt


def run(events: int, rounds: int, batch: int) -> None:
    import nats
    from conftest import shop_log
    from recofast.engine.config import EngineConfig
    from recofast.engine.natsserver import NatsServer
    from recofast_sidecar.protocol.names import STREAM
    from test_bench_engine import _publish

    log = shop_log()
    if not log.exists():
        sys.exit(f"the shop log is not there: {log} (set RECOFAST_SHOP_LOG)")
    with tempfile.TemporaryDirectory() as tmp:
        server = NatsServer(Path(tmp) / "nats", port=-1)
        server.start()
        try:
            import test_bench_engine

            test_bench_engine.DATA = log
            _publish(server.url, "--limit", str(events), "--pack", "100")

            async def last() -> int:
                async with await nats.connect(server.url) as nc:
                    return (await nc.jetstream().stream_info(STREAM)).state.last_seq

            target = asyncio.run(last())
            for r in range(rounds):
                cfg = EngineConfig(
                    nats=server.url, lmdb=f"{tmp}/lmdb{r}", model_dir=f"{tmp}/models{r}", refresh_seconds=3600.0,
                    batch_size=batch, top_n=20, lmdb_map_size=1 << 31, model={"dim": 64, "seed": 1},
                )  # fmt: skip
                dt = asyncio.run(_drain(cfg, target))
                print(f"round {r + 1}: {events:,} events in {dt:.2f} s = {events / dt:,.0f} events/s", flush=True)
        finally:
            server.stop()


def stages(events: int, rounds: int) -> None:
    """CPU time of the Python stages on one batch of the shop log, best of ``rounds`` (a
    load-proof before/after figure: run it on each version of the code)."""
    import itertools

    from conftest import shop_log
    from recofast.engine.aggregates import Dedupe, Popularity
    from recofast.engine.enrich import Enricher, context_columns
    from recofast.engine.publish import messages, read_events
    from recofast_sidecar.protocol import events as ev

    bodies = [body for _, body, _ in messages(itertools.islice(read_events(shop_log()), events), 100)]

    def best(fn) -> float:  # noqa: ANN001
        out = []
        for _ in range(rounds):
            t = time.thread_time()
            fn()
            out.append(time.thread_time() - t)
        return min(out)

    decoded: list = []
    t_decode = best(lambda: decoded.__setitem__(slice(None), [e for b in bodies for e in ev.decode_events(b, window=None)[0]]))
    assert len(decoded) == events
    t_dedupe = best(lambda: Dedupe(400_000).filter(decoded))
    en = Enricher()
    t_enrich = best(lambda: en.enrich(decoded, time.time()))
    b = en.enrich(decoded, time.time())
    t_cols = best(lambda: context_columns(decoded, b))
    t_pop = best(lambda: Popularity(3600.0).add(b, time.time()))
    rows = [("decode + validate", t_decode), ("dedupe", t_dedupe), ("enrich", t_enrich), ("context columns", t_cols), ("popularity", t_pop)]
    total = sum(t for _, t in rows)
    for name, t in rows:
        print(f"{name:<20} {t * 1e3:8.1f} ms  {t / events * 1e6:6.2f} us/event")
    print(f"{'Python stages':<20} {total * 1e3:8.1f} ms  {total / events * 1e6:6.2f} us/event ({events / total:,.0f} events/s)")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="fill the stream and drain it with the engine")
    r.add_argument("--events", type=int, default=200_000, help="shop-log events in the backlog (default 200,000)")
    r.add_argument("--rounds", type=int, default=3, help="drains of the same backlog, each by a fresh engine (default 3)")
    r.add_argument("--batch", type=int, default=500, help="messages per fetch (the benchmark's 500)")
    t = sub.add_parser("stages", help="CPU time of decode, dedupe, enrich and popularity on one batch")
    t.add_argument("--events", type=int, default=50_000, help="shop-log events in the batch (default 50,000, the benchmark's 500 x 100)")
    t.add_argument("--rounds", type=int, default=7, help="best of this many (default 7)")
    s = sub.add_parser("split", help="share of on-CPU samples per stage in a py-spy raw profile")
    s.add_argument("profile", type=Path, help="py-spy record --format raw output")
    args = p.parse_args()
    if args.cmd == "run":
        run(args.events, args.rounds, args.batch)
    elif args.cmd == "stages":
        stages(args.events, args.rounds)
    else:
        rows = split(args.profile)
        total = sum(n for _, n in rows) or 1
        print(f"{'thread: stage':<72} {'samples':>8} {'share':>7}")
        for name, n in rows:
            print(f"{name:<72} {n:>8} {n / total:>7.1%}")


if __name__ == "__main__":
    main()
