"""Drift and staleness in the running engine: the detectors on a known stream, then a real
engine (real nats-server, LMDB, SQLite) that adapts on a drop of the live hit rate and rolls
back a degraded model with the staleness guard."""

from __future__ import annotations

import asyncio
import json
import random
import time

import nats
from recofast.engine.monitor import LiveMonitor, StalenessGuard
from recofast.engine.publish import subject_for
from recofast_sidecar.protocol import events as ev
from recofast_sidecar.protocol.feedback import Impression, encode_batch
from recofast_sidecar.protocol.names import ALERTS_SUBJECT, IMPRESSIONS_SUBJECT, MSG_ID_HEADER

DROP_AT = 3000


def _stream(rates: list[tuple[int, float]], seed: int) -> list[int]:
    rng = random.Random(seed)
    return [int(rng.random() < p) for n, p in rates for _ in range(n)]


def test_a_drop_is_detected_soon_after_it_and_a_stationary_stream_never_fires():
    mon = LiveMonitor(min_observations=200, cooldown=300.0)
    hits = _stream([(DROP_AT, 0.5), (3000, 0.3)], seed=3)
    fired = [(i, a) for i, x in enumerate(hits) if (a := mon.hit(x, now=i * 0.1)) is not None]
    assert len(fired) == 1
    index, alert = fired[0]
    delay = index - DROP_AT
    print(f"hit rate 0.5 -> 0.3 at observation {DROP_AT}: detected {delay} observations after it")
    assert 0 < delay < 400
    assert alert.signal == "hit_rate" and alert.after < alert.before
    # The same base rate, no change: never fires (several seeds, 20,000 observations each).
    for seed in range(5):
        quiet = LiveMonitor(min_observations=200, cooldown=0.0)
        assert [x for x in _stream([(20_000, 0.5)], seed) if quiet.hit(x, now=0.0)] == []
    # A rise is the model learning: no alert.
    up = LiveMonitor(min_observations=200, cooldown=0.0)
    assert not any(up.hit(x, now=0.0) for x in _stream([(3000, 0.3), (3000, 0.6)], seed=4))


def test_the_event_mix_detector_names_the_type_whose_share_moved():
    mon = LiveMonitor(min_observations=200, cooldown=0.0)
    rng = random.Random(5)
    before = [rng.choices(["view", "purchase"], weights=[0.95, 0.05])[0] for _ in range(5000)]
    after = [rng.choices(["view", "purchase"], weights=[0.7, 0.3])[0] for _ in range(2000)]
    assert [a for n in range(0, 5000, 500) for a in mon.events(before[n:n + 500], now=0.0)] == []
    got = [a for n in range(0, 2000, 500) for a in mon.events(after[n:n + 500], now=0.0)]
    assert got and got[0].signal == "event_mix" and "purchase" in got[0].extra["types"]


def test_the_staleness_guard_waits_its_time_and_keeps_its_baseline_while_below():
    g = StalenessGuard(ratio=0.7, seconds=5.0, window=50, baseline_half_life=100, min_observations=100)
    assert not g.update([1, 1, 0] * 100, now=0.0)
    assert not g.update([0] * 50, now=1.0) and g.below_since == 1.0
    base = g.baseline
    assert 0.5 < base < 0.7
    assert not g.update([0] * 50, now=5.9)
    assert g.baseline == base  # a degraded model is not its own reference
    assert g.update([0], now=6.0)
    g2 = StalenessGuard(ratio=0.7, seconds=5.0, window=50, baseline_half_life=100, min_observations=100)
    g2.update([1, 1, 0] * 100, now=0.0)
    g2.update([0] * 50, now=1.0)
    g2.update([1] * 50, now=2.0)  # recovered: the clock starts again
    assert g2.below_since is None and not g2.update([0] * 50, now=7.0)


# -- in the engine ----------------------------------------------------------------------------


def _imp(rec_id: str, user: str, items: list[str], ts: int) -> Impression:
    return Impression(rec_id=rec_id, ts=ts, endpoint="recommendations", source="personal", items=items,
                      sources=["personal"] * len(items), user=user)


def _collect(into: list[dict]):  # noqa: ANN202
    async def cb(msg) -> None:  # noqa: ANN001
        into.append(json.loads(msg.data))
    return cb


async def _until(cond, timeout: float = 30.0) -> None:  # noqa: ANN001
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.02)


async def _publish_events(js, raws: list[bytes], tag: str) -> None:  # noqa: ANN001
    for n in range(0, len(raws), 50):
        await js.publish(subject_for(0), b"[" + b",".join(raws[n:n + 50]) + b"]", headers={MSG_ID_HEADER: f"{tag}-{n}"})


async def _publish_impressions(js, recs: list[Impression], tag: str) -> None:  # noqa: ANN001
    for n in range(0, len(recs), 100):
        await js.publish(IMPRESSIONS_SUBJECT, encode_batch(recs[n:n + 100]), headers={MSG_ID_HEADER: f"{tag}-{n}"})


async def test_a_drop_of_the_live_hit_rate_adapts_the_model_alerts_counts_and_marks_the_timeline(
        tmp_path, nats_url, engine_config, running_engine):
    cfg = engine_config(tmp_path, nats_url, drift_min_observations=100, drift_cooldown=300.0, adapt_events=100_000)
    rng = random.Random(11)
    n_good, n_bad = 400, 400
    t0 = (int(time.time()) - 3600) * 1000
    items = [f"i{k}" for k in range(50)]
    recs, raws = [], []
    for n in range(n_good + n_bad):
        shown = rng.sample(items, 5)
        hit = rng.random() < (0.8 if n < n_good else 0.1)
        nxt = rng.choice(shown) if hit else rng.choice([i for i in items if i not in shown])
        ts = t0 + n * 1000
        recs.append(_imp(f"r{n}", f"u{n}", shown, ts))
        raws.append(ev.encode(ev.make_event(f"e{n}", "view", f"u{n}", nxt, ts_ms=ts + 500)))
    alerts: list[dict] = []
    async with await nats.connect(nats_url) as nc, running_engine(cfg) as engine:
        js = nc.jetstream()
        await nc.subscribe(ALERTS_SUBJECT, cb=_collect(alerts))
        await _publish_impressions(js, recs, "imp")
        await asyncio.sleep(0.5)  # the loop stores the impressions before it reads the events
        await _publish_events(js, raws, "ev")
        await _until(lambda: any(a.get("kind") == "drift" for a in alerts))
        assert engine.monitor.hits_seen <= n_good + n_bad
        first = next(a for a in alerts if a["kind"] == "drift")
        assert first["v"] == 1 and first["signal"] == "hit_rate" and first["adapted"] is True
        assert first["after"] < first["before"]
        index = first["index"]
        print(f"hit rate 0.8 -> 0.1 at check {n_good}: the engine alerted at check {index} ({index - n_good} after the drop)")
        assert n_good <= index < n_good + 200
        assert engine.model.adapting
        kinds = [e["kind"] for e in engine.timeline]
        assert "drift" in kinds and "adapt" in kinds and kinds.index("drift") < kinds.index("adapt")
        assert all(isinstance(e["ts"], float) and e["detail"] for e in engine.timeline)
        text = engine.metrics.render().decode()
        assert 'recofast_drift_alerts_total{signal="hit_rate"} 1.0' in text
        assert "recofast_adaptations_total 1.0" in text


CATS, PER_CAT, USERS = 4, 30, 40


def _cat(item: str) -> int:
    return int(item[1:].split("-")[0]) if item.startswith("c") else -1


async def test_the_staleness_guard_rolls_a_degraded_model_back_to_its_best_checkpoint(
        tmp_path, nats_url, engine_config, running_engine, wait_applied):
    cfg = engine_config(tmp_path, nats_url, refresh_seconds=0.3, staleness_guard=True, staleness_seconds=0.5,
                        staleness_window=40, drift_min_observations=80, staleness_min_checks=20, drift_adapt=False,
                        checkpoint_keep=50)
    rng = random.Random(2)
    users = [f"u{n}" for n in range(USERS)]
    taste = {u: n % CATS for n, u in enumerate(users)}
    seen: dict[str, set[str]] = {u: set() for u in users}
    alerts: list[dict] = []
    n = 0

    def event(etype: str, user: str, item: str) -> bytes:
        nonlocal n
        n += 1
        seen[user].add(item)
        return ev.encode(ev.make_event(f"x{n}", etype, user, item, ts_ms=int(time.time() * 1000)))

    async with await nats.connect(nats_url) as nc, running_engine(cfg) as engine:
        js = nc.jetstream()
        await nc.subscribe(ALERTS_SUBJECT, cb=_collect(alerts))

        async def round_(r: int, junk: bool) -> float:
            """Junk purchases (when wrecking), then each user's list is served and their next item
            chosen: the first item of their taste in it, else one of their taste it did not show."""
            if junk:
                await _publish_events(js, [event("purchase", u, f"junk{rng.randrange(30)}") for u in users for _ in range(3)], f"j{r}")
            await wait_applied(engine, js)
            recs, raws, hits = [], [], 0
            now = int(time.time() * 1000)
            for u in users:
                rec = engine.reader.user_list(u)
                shown = list(rec.items) if rec is not None else []
                mine = [i for i in shown if _cat(i) == taste[u]]
                nxt = mine[0] if mine else rng.choice([f"c{taste[u]}-{k}" for k in range(PER_CAT) if f"c{taste[u]}-{k}" not in seen[u] | set(shown)])
                hits += bool(mine)
                recs.append(_imp(f"r{r}-{u}", u, shown, now))
                raws.append(event("view", u, nxt))
            await _publish_impressions(js, recs, f"i{r}")
            await asyncio.sleep(0.15)
            await _publish_events(js, raws, f"v{r}")
            await wait_applied(engine, js)
            return hits / len(users)

        # Each shopper has looked at a few items of their taste.
        await _publish_events(js, [event("view", u, f"c{taste[u]}-{k}") for u in users for k in rng.sample(range(PER_CAT), 6)], "warm")
        good = [await round_(r, junk=False) for r in range(5)]
        await asyncio.sleep(0.5)  # a checkpoint holds the good phase's hit rate
        good_versions = [v for v in engine.store.versions() if (engine.store.read_manifest(v).get("hit_rate") or 0) > 0.5]
        assert good_versions, [engine.store.read_manifest(v).get("hit_rate") for v in engine.store.versions()]
        bad = []
        for r in range(5, 40):
            bad.append(await round_(r, junk=True))
            if any(e["kind"] == "rollback" for e in engine.timeline):
                break
        print(f"hit rate of the rounds, good: {good}, wrecked: {bad}")
        # The lists were wrecked (every wrecked round far below the good ones) before the guard acted;
        # how many rounds that took depends on the machine's load.
        assert min(good) > 0.6 and max(bad) < 0.45
        await _until(lambda: any(a.get("kind") == "rollback" for a in alerts), 10)
        rb = next(e for e in engine.timeline if e["kind"] == "rollback")
        alert = next(a for a in alerts if a["kind"] == "rollback")
        assert rb["done"] and alert["done"] and alert["v"] == 1
        assert rb["model_from"] in good_versions and alert["model_from"] == rb["model_from"]
        assert rb["model_from"] < rb["rolled_back_from"]
        m = engine.store.read_manifest(rb["version"])
        assert m["model_from"] == rb["model_from"] and m["rolled_back_from"] == rb["rolled_back_from"]
        assert "rolled back to the model of" in rb["detail"]
        assert "recofast_rollbacks_total 1.0" in engine.metrics.render().decode()
        # The restored model rewrites the lists (a refresh round): the shoppers' tastes are back.
        await _until(lambda: engine.refresher.users is None and engine.model_version > rb["version"], 10)
        back = sum(any(_cat(i) == taste[u] for i in (engine.reader.user_list(u).items or [])) for u in users) / USERS
        assert back > 0.6, back


def test_simulated_shoppers_switch_taste_at_the_drift_session():
    from recofast.evaluation.shoppers import Shoppers
    from recofast.evaluation.simulate import Shop

    shop = Shop.from_seed(1, users=200, items=60, events=1000)
    before = shop.taste.copy()
    people = Shoppers(shop, "http://127.0.0.1:1", seed=3, drift_at=30, keep_log=False)
    plan = people.next_round()  # sessions 0..49
    for s in plan[:30]:
        people.act(s, people.context(s), {"items": []})
    assert people.drift is None and (shop.taste == before).all()
    people.act(plan[30], people.context(plan[30]), {"items": []})
    moved = (shop.taste != before).any(axis=1)
    assert people.drift is not None and people.drift["session"] == 30
    assert people.drift["shoppers"] == int(moved.sum()) and 60 < moved.sum() < 140
    assert people.tallies()["drift"]["session"] == 30
