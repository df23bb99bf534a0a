"""Item knowledge shared between partitioned engines, measured on the shop log: engines
that each learn only their own users' events, exchanging item deltas, list as well as one
engine that learns everything (the same tests, test-then-learn)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from recofast.evaluation.data import read_catalog, read_events
from recofast.evaluation.protocol import build_models, prequential

DATA = Path(os.environ.get("RECOFAST_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data")) / "online_retail"


@pytest.mark.skipif(not (DATA / "interactions.csv.gz").exists(), reason=f"the shop log is not at {DATA}")
def test_two_engines_on_four_partitions_sharing_item_deltas_recall_as_one_engine() -> None:
    cat = read_catalog(DATA / "items.csv")
    log = read_events(DATA / "interactions.csv.gz", limit=60_000)
    models = build_models(["recofast"], {"dim": "32"}, cat)
    for share in (2000, 0):
        models += build_models(["recofast-partitioned"], {"dim": "32"}, cat,
                               peers={"recofast-partitioned": {"engines": 2, "partitions": 4, "share_every": share}})
    one, shared, alone = prequential(log, models, k=20, progress=False, catalog=cat)
    print(f"Recall@20: one engine {one.recall:.4f}, two sharing {shared.recall:.4f} ({shared.recall / one.recall:.3f}x), "
          f"two alone {alone.recall:.4f} ({alone.recall / one.recall:.3f}x); deltas {models[1].delta_bytes} bytes")
    assert one.tests == shared.tests == alone.tests > 10_000
    assert shared.recall >= 0.97 * one.recall
    assert shared.recall > alone.recall  # the deltas are what closes the gap
    # Each engine knows only its own users.
    users = [set(r.user_factors()[0]) for r in models[1].recs]
    assert users[0] and users[1] and not users[0] & users[1]


def _purchases(lo: int, hi: int) -> bytes:
    import json

    return json.dumps([{"v": 1, "id": f"r{i}", "type": "purchase", "user": f"u{i % 7}", "item": f"i{(i * 5) % 23}",
                        "ts": 1_700_000_000_000 + i} for i in range(lo, hi)]).encode()


async def _until(cond, timeout: float, what) -> None:  # noqa: ANN001
    import asyncio
    import time

    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, what() if callable(what) else what
        await asyncio.sleep(0.05)


OPTS = dict(lease_partitions=1, fetch_timeout=0.1, refresh_seconds=3600.0, lease_ttl=1.0, share_seconds=0.2)


async def _crash_after_sharing(js, cfg, running_engine) -> int:  # noqa: ANN001
    """Engine ``cfg`` (leases on one partition) learns 40 events and checkpoints, learns 30
    more and shares them, and crashes: no final checkpoint, the leases held. Returns how
    many takes of deltas it published after the checkpoint."""
    import asyncio

    from recofast.engine.publish import subject_for
    from recofast_sidecar.protocol.names import MSG_ID_HEADER

    with pytest.raises(RuntimeError, match="crash"):
        async with running_engine(cfg) as a:
            await _until(lambda: a.leases is not None and set(a.leases.owned) == {0}, 15, "A claims the partition")
            await js.publish(subject_for(0), _purchases(0, 40), headers={MSG_ID_HEADER: "first"})
            await _until(lambda: a.counters["events_applied_total"] == 40, 15, lambda: a.counters)
            await asyncio.to_thread(a.checkpoint)
            await a._put_positions()
            included = a.share.takes
            await js.publish(subject_for(0), _purchases(40, 70), headers={MSG_ID_HEADER: "second"})
            await _until(lambda: a.counters["events_applied_total"] == 70, 15, lambda: a.counters)
            sent = a.counters["item_deltas_published_total"]
            await _until(lambda: a.counters["item_deltas_published_total"] > sent, 15, "A shares the second batch")
            after = a.share.takes - included
            raise RuntimeError("crash")
    return after


async def test_events_another_engine_shared_are_replayed_for_their_users_only(
    nats_url, tmp_path, engine_config, running_engine,  # noqa: ANN001
) -> None:
    """The engine taking a crashed engine's partition over resumes from its checkpoint: the
    events the crashed one had shared since are replayed for their users only (their item
    knowledge arrives as its deltas) and not shared again; new events are shared as usual."""
    import asyncio

    import nats
    from recofast.engine.publish import subject_for
    from recofast_sidecar.protocol.names import MSG_ID_HEADER

    async with await nats.connect(nats_url) as nc:
        js = nc.jetstream()
        await _crash_after_sharing(js, engine_config(tmp_path / "a", nats_url, engine_id="a", **OPTS), running_engine)
        cb = engine_config(tmp_path / "b", nats_url, engine_id="b", **OPTS)
        async with running_engine(cb) as b:
            await _until(lambda: b.counters["events_applied_total"] == 30, 20, lambda: b.counters)
            assert b.counters["users_handed_over_total"] > 0, b.counters
            assert b.counters["events_replayed_shared_total"] == 30, b.counters
            await _until(lambda: b.counters["item_deltas_applied_total"] >= 1, 15, lambda: b.counters)  # A's
            await asyncio.sleep(0.5)  # two ticks
            assert b.counters["item_deltas_published_total"] == 0, "B shared again what A had shared"
            await js.publish(subject_for(0), _purchases(70, 80), headers={MSG_ID_HEADER: "third"})
            await _until(lambda: b.counters["item_deltas_published_total"] > 0, 15, lambda: b.counters)
            assert b.counters["events_replayed_shared_total"] == 30 and b.counters["events_applied_total"] == 40
            assert set(b.model.user_factors()[0]) == {f"u{i}" for i in range(7)}


async def test_an_engine_restarted_under_its_name_takes_its_own_deltas_after_the_checkpoint(
    nats_url, tmp_path, engine_config, running_engine,  # noqa: ANN001
) -> None:
    """Restarted from its checkpoint, the engine applies the deltas its previous run shared
    after it (not those the checkpoint holds), replays those events for their users only,
    and shares nothing again."""
    import asyncio

    import nats

    cfg = engine_config(tmp_path / "a", nats_url, engine_id="a", **OPTS)
    async with await nats.connect(nats_url) as nc:
        after = await _crash_after_sharing(nc.jetstream(), cfg, running_engine)
    assert after >= 1
    async with running_engine(cfg) as a:
        await _until(lambda: a.counters["events_applied_total"] == 70, 20, lambda: a.counters)
        assert a.counters["events_replayed_shared_total"] == 30, a.counters
        assert a.counters["users_handed_over_total"] == 0  # its own checkpoint: nothing to take over
        sent = a.counters["item_deltas_published_total"]  # as of its checkpoint
        await _until(lambda: a.counters["item_deltas_applied_total"] >= after, 15, lambda: a.counters)
        await asyncio.sleep(0.5)
        # Each take of those tests is one delta (a few items): exactly the takes after the checkpoint.
        assert a.counters["item_deltas_applied_total"] == after, a.counters
        assert a.counters["item_deltas_published_total"] == sent, "A shared its replayed events again"
