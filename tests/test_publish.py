"""`recofast publish --catalog`: catalog upserts from a file reach the engine first."""

from __future__ import annotations

import asyncio
import subprocess
import sys

import nats
import pytest

from recofast.publish import catalog_messages

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


async def test_publish_catalog_then_events_reaches_the_engine(tmp_path, nats_url, engine_config, running_engine, wait_applied):
    cat, evs = tmp_path / "cat.jsonl", tmp_path / "ev.jsonl"
    subprocess.run([sys.executable, "-m", "recofast.cli", "simulate", "--users", "50", "--items", "40", "--events", "500",
                    "--seed", "3", "--out", str(evs), "--catalog", str(cat)], check=True, capture_output=True)
    async with await nats.connect(nats_url) as nc, running_engine(engine_config(tmp_path, nats_url)) as engine:
        js = nc.jetstream()
        res = await asyncio.to_thread(subprocess.run, [sys.executable, "-m", "recofast.publish", "publish", "--catalog", str(cat),
                                                      "--events", str(evs), "--nats", nats_url, "--quiet"],
                                      capture_output=True, text=True, check=True)
        assert "published 40 catalog upserts" in res.stdout
        await wait_applied(engine, js)
        assert engine.counters["items_upserted_total"] == 40
        item = engine.writer.reader().item("i0")
        assert item is not None and item.category
