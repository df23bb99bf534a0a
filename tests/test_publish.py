"""`recofast publish --catalog`: catalog upserts from a file reach the engine first."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys

import nats
import pytest
from recofast.engine.publish import catalog_messages
from recofast_sidecar.protocol.names import CATALOG_SUBJECT

pytestmark = pytest.mark.timeout(120)


def test_catalog_lines_are_checked_and_packed(tmp_path):
    good = tmp_path / "c.jsonl"
    good.write_text("\n".join(f'{{"v":1,"item":"i{k}","title":"thing {k}"}}' for k in range(250)) + "\n\n")
    msgs = list(catalog_messages(good, pack=100))
    assert [n for _, _, n in msgs] == [100, 100, 50]
    assert len({m for m, _, _ in msgs}) == 3 and msgs[0][1].startswith(b"[{")
    assert list(catalog_messages(good, pack=100)) == msgs  # same ids: a replay is deduplicated
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"v":1,"item":"ok"}\n{"v":1,"price":"x"}\n')
    with pytest.raises(ValueError, match="line 2"):
        list(catalog_messages(bad))


def test_catalog_and_events_are_interleaved_in_time_order(tmp_path):
    from recofast.engine.publish import interleaved, read_events

    cat, evs = tmp_path / "cat.jsonl", tmp_path / "ev.jsonl"
    subprocess.run([sys.executable, "-m", "recofast.cli", "simulate", "--users", "50", "--items", "40", "--events", "500",
                    "--seed", "3", "--out", str(evs), "--catalog", str(cat)], check=True, capture_output=True)
    msgs = [(*m[:3], m[3] if m[3] == CATALOG_SUBJECT else "") for m in interleaved(cat, read_events(evs), pack=10)]
    subjects = [m[3] for m in msgs]
    assert sum(m[2] for m in msgs if m[3]) == 40 and sum(m[2] for m in msgs if not m[3]) == 500
    assert subjects[0] and not subjects[-1], "the starting catalogue first; the last new item before the end"
    # Each mid-stream upsert comes after the event messages that start before its time and
    # before the first one that starts after it.
    def rows(body):
        r = json.loads(body)
        return r if isinstance(r, list) else [r]

    starts = [(k, rows(m[1])[0]["ts"]) for k, m in enumerate(msgs) if not m[3]]
    for k, m in enumerate(msgs):
        if not m[3] or k == 0:
            continue
        for u in rows(m[1]):
            before = [t for j, t in starts if j < k]
            after = [t for j, t in starts if j > k]
            assert not before or u["ts"] > before[-1], (k, u["ts"], before[-1])
            assert not after or u["ts"] <= after[0], (k, u["ts"], after[0])
    first_event = subjects.index("")
    assert any(subjects[first_event:]), "new items arrive mid-stream, not with the starting catalogue"



def test_partitioned_publishing_keeps_each_users_events_on_one_subject_in_order(tmp_path):
    from recofast.engine.publish import interleaved, partition_of, partitioned, read_events

    cat, evs = tmp_path / "cat.jsonl", tmp_path / "ev.jsonl"
    subprocess.run([sys.executable, "-m", "recofast.cli", "simulate", "--users", "50", "--items", "40", "--events", "500",
                    "--seed", "4", "--out", str(evs), "--catalog", str(cat)], check=True, capture_output=True)
    want: dict[str, list[str]] = {}
    for line in evs.read_text().splitlines():
        e = json.loads(line)
        want.setdefault(e["user"], []).append(e["id"])
    for msgs in (list(partitioned(read_events(evs), 10, 4)), list(interleaved(cat, read_events(evs), 10, partitions=4))):
        got: dict[str, list[str]] = {}
        for _, body, n, subject in msgs:
            if subject == CATALOG_SUBJECT:
                continue
            rows = json.loads(body)
            rows = rows if isinstance(rows, list) else [rows]
            assert len(rows) == n <= 10
            for r in rows:
                assert subject == f"recofast.events.p{partition_of(r['user'], 4)}"
                got.setdefault(r["user"], []).append(r["id"])
        assert got == want  # every event once, each user's in their order
        assert len({m[3] for m in msgs} - {CATALOG_SUBJECT}) == 4


async def test_publish_catalog_then_events_reaches_the_engine(tmp_path, nats_url, engine_config, running_engine, wait_applied):
    cat, evs = tmp_path / "cat.jsonl", tmp_path / "ev.jsonl"
    subprocess.run([sys.executable, "-m", "recofast.cli", "simulate", "--users", "50", "--items", "40", "--events", "500",
                    "--seed", "3", "--out", str(evs), "--catalog", str(cat)], check=True, capture_output=True)
    async with await nats.connect(nats_url) as nc, running_engine(engine_config(tmp_path, nats_url)) as engine:
        js = nc.jetstream()
        res = await asyncio.to_thread(subprocess.run, [sys.executable, "-m", "recofast.cli", "publish", "--catalog", str(cat),
                                                      "--events", str(evs), "--nats", nats_url, "--quiet"],
                                      capture_output=True, text=True, check=True)
        assert "events and catalog upserts" in res.stdout
        await wait_applied(engine, js)
        assert engine.counters["items_upserted_total"] == 40
        item = engine.writer.reader().item("i0")
        assert item is not None and item.category
