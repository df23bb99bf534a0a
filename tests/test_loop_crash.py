"""The closed loop survives a SIGKILL: the engine process is killed at random moments while
impressions and events flow, then restarted; at the end the loop database holds exactly the
counts of the workload (every impression and every attributed event once, the experiment's
per-user sums intact)."""

from __future__ import annotations

import asyncio
import random
import signal
import sqlite3
import time
from collections import defaultdict

import aiohttp
import nats
import pytest
from recofast.engine.publish import subject_for
from recofast.engine.streams import ensure_streams
from recofast_sidecar.protocol import events as ev
from recofast_sidecar.protocol.feedback import Impression, encode_batch
from recofast_sidecar.protocol.names import IMPRESSIONS_STREAM, IMPRESSIONS_SUBJECT, MSG_ID_HEADER, STREAM

from test_engine_crash import _engine, _free_port

N_IMPRESSIONS = 3000
PER_MSG = 50
ROUNDS = 5


def _workload(rng: random.Random) -> tuple[list[tuple[str, str, bytes]], dict]:
    """Interleaved messages (subject, msg id, body) and the counts they must give."""
    t0 = (int(time.time()) - 3600) * 1000
    msgs: list[tuple[str, str, bytes]] = []
    imps: list[Impression] = []
    clicked: set[tuple[str, str]] = set()
    bought: set[tuple[str, str]] = set()
    revenue = 0.0
    per_variant: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    n_ev = 0
    for m in range(N_IMPRESSIONS // PER_MSG):
        batch = []
        for _ in range(PER_MSG):
            k = len(imps)
            user = f"u{rng.randrange(400)}"
            var = "a" if int(user[1:]) % 2 else "b"
            r = Impression(rec_id=f"r{k}", ts=t0 + k * 100, endpoint="recommendations", source="personal",
                           items=rng.sample([f"i{j}" for j in range(200)], 5), sources=["personal"] * 5, user=user,
                           experiment="e", variant=var)
            imps.append(r)
            batch.append(r)
            per_variant[var]["shown"] += 5
            per_variant[var]["lists"] += 1
        msgs.append(("imp", f"imp-{m}", encode_batch(batch)))
        # Clicks and purchases on lists already served (some repeated: counted once).
        pack = []
        for _ in range(40):
            r = rng.choice(imps)
            item = rng.choice(r.items)
            if rng.random() < 0.15:
                price = round(rng.uniform(1, 50), 2)
                e = ev.make_event(f"p{n_ev}", "purchase", r.user, item, ts_ms=r.ts + 1000, rec_id=r.rec_id, price=price, qty=1.0)
                revenue += price
                if (r.rec_id, item) not in bought:
                    per_variant[r.variant]["purchases"] += 1
                bought.add((r.rec_id, item))
                per_variant[r.variant]["revenue"] += price
            else:
                e = ev.make_event(f"c{n_ev}", "click", r.user, item, ts_ms=r.ts + 1000, rec_id=r.rec_id)
                if (r.rec_id, item) not in clicked:
                    per_variant[r.variant]["clicks"] += 1
                clicked.add((r.rec_id, item))
            n_ev += 1
            pack.append(ev.encode(e))
        body = b"[" + b",".join(pack) + b"]"
        msgs.append(("ev", f"ev-{m}", body))
        if m % 9 == 4:
            msgs.append(("ev", f"ev-{m}-again", body))  # the same events again, under another message id
    want = {"lists": len(imps), "shown": 5 * len(imps), "clicks": len(clicked), "purchases": len(bought), "revenue": round(revenue, 6)}
    return msgs, {"totals": want, "variants": {v: dict(c) for v, c in per_variant.items()}}


async def _publish(url: str, msgs: list[tuple[str, str, bytes]]) -> None:
    async with await nats.connect(url) as nc:
        js = nc.jetstream()
        await ensure_streams(js)
        for n, (kind, msg_id, body) in enumerate(msgs):
            subject = IMPRESSIONS_SUBJECT if kind == "imp" else subject_for(0)
            await js.publish(subject, body, headers={MSG_ID_HEADER: msg_id}, timeout=10)
            if n % 4 == 3:
                await asyncio.sleep(0.3)  # about 10 s in all, so the kills fall while it flows


def _loop_state(path) -> tuple[dict[str, int], dict, dict]:  # noqa: ANN001
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    except sqlite3.Error:
        return {}, {}, {}
    try:
        pos = dict(db.execute("SELECT name, seq FROM position").fetchall())
        row = db.execute("SELECT sum(lists), sum(shown), sum(clicks), sum(purchases), round(sum(revenue), 6) FROM totals").fetchone()
        tot = dict(zip(("lists", "shown", "clicks", "purchases", "revenue"), row))
        var = {v: {"lists": lists, "shown": shown, "clicks": clicks, "purchases": purchases, "revenue": revenue}
               for v, lists, shown, clicks, purchases, revenue in db.execute(
                   "SELECT variant, sum(lists), sum(shown), sum(clicks), sum(purchases), sum(revenue) FROM units GROUP BY variant")}
        return pos, tot, var
    except sqlite3.Error:
        return {}, {}, {}
    finally:
        db.close()


@pytest.mark.slow
@pytest.mark.timeout(240)
async def test_sigkill_while_impressions_and_events_flow_counts_everything_once(tmp_path, nats_url):
    rng = random.Random(11)
    (tmp_path / "recofast.toml").write_text(
        "[engine]\nrefresh_seconds = 0.6\nbatch_size = 20\nfetch_timeout = 0.1\ntop_n = 5\nlmdb_map_size = 268435456\n"
        "[engine.model]\ndim = 16\nseed = 1\n"
    )
    msgs, want = _workload(rng)
    log = open(tmp_path / "engine.log", "ab")
    publisher = asyncio.create_task(_publish(nats_url, msgs))
    db = tmp_path / "models" / "loop.sqlite3"
    proc = None
    flowing = 0
    try:
        for _ in range(ROUNDS):
            flowing += not publisher.done()
            proc = _engine(nats_url, tmp_path, log)
            await asyncio.sleep(rng.uniform(1.0, 2.5))
            proc.send_signal(signal.SIGKILL)
            await asyncio.to_thread(proc.wait)
        await asyncio.wait_for(publisher, 120)
        async with await nats.connect(nats_url) as nc:
            js = nc.jetstream()
            ends = {"impressions": (await js.stream_info(IMPRESSIONS_STREAM)).state.last_seq,
                    "events": (await js.stream_info(STREAM)).state.last_seq}
        assert flowing >= 3  # most kills fell while messages were being published
        port = _free_port()
        proc = _engine(nats_url, tmp_path, log, port)
        deadline = time.monotonic() + 120
        pos: dict = {}
        ready = False
        async with aiohttp.ClientSession() as http:
            while time.monotonic() < deadline:
                await asyncio.sleep(0.2)
                if not ready:
                    try:
                        async with http.get(f"http://127.0.0.1:{port}/healthz") as resp:
                            ready = resp.status == 200
                    except aiohttp.ClientError:
                        continue
                pos, tot, var = _loop_state(db)
                if ready and pos == ends and tot == want["totals"]:
                    break
        assert pos == ends, (pos, ends, (tmp_path / "engine.log").read_text()[-3000:])
        assert tot == want["totals"]
        assert {v: {k: pytest.approx(x) for k, x in c.items()} for v, c in var.items()} == {
            v: {k: c.get(k, 0) for k in ("lists", "shown", "clicks", "purchases", "revenue")} for v, c in want["variants"].items()
        }
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(proc.wait, 60) == 0
    finally:
        publisher.cancel()
        if proc is not None and proc.poll() is None:
            proc.kill()
        log.close()
