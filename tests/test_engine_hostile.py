"""Generated hostile events (sizes, Unicode, numbers at their limits, nesting, wrong types)
thrown at a real engine through a real nats-server: the engine never exits or stalls, and
every event the shared validator accepts is applied, exactly once."""

from __future__ import annotations

import asyncio
import json
import math
import os
import threading
import time

import nats
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from recofast.engine.publish import subject_for
from recofast_sidecar.protocol import events as ev

pytestmark = pytest.mark.timeout(600)

NOW_MS = int(time.time() * 1000)
EXAMPLES = int(os.environ.get("RECOFAST_HOSTILE_EXAMPLES", "40"))

_text = st.one_of(
    st.text(max_size=20),
    st.text(min_size=60, max_size=70),
    st.text(alphabet=st.characters(min_codepoint=0x10000, max_codepoint=0x10FFFF), min_size=60, max_size=70),
    st.text(min_size=250, max_size=600),
    st.sampled_from(["", " ", "\x00", "\u202e", "a\nb", "💥" * 64, "x" * 256, "x" * 257, "é" * 128, "é" * 129]),
)
_number = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from([0, -1, 2**63 - 1, 2**63, -(2**63), 1e300, -1e300, 1e-300, NOW_MS, NOW_MS + 86_400_000 * 2]),
)
_time = st.one_of(
    st.integers(min_value=NOW_MS - 10**10, max_value=NOW_MS + 10**8),
    _number,
    st.sampled_from(["9999-12-31T23:59:59Z", "0001-01-01T00:00:00Z", "2024-02-30T00:00:00Z", "yesterday", "2024-05-01T10:00:00+14:00"]),
)
_leaf = st.one_of(st.none(), st.booleans(), _number, _text)
_json = st.recursive(_leaf, lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(_text, inner, max_size=3)), max_leaves=8)
_context = st.one_of(
    st.none(),
    st.fixed_dictionaries(
        {},
        optional={
            "device": _text, "ua": _text, "country": _text, "region": _text, "weather": _text, "intent": _text,
            "lat": _number, "lon": _number,
        },
    ),
    _json,
)  # fmt: skip


@st.composite
def hostile_event(draw, n: int) -> dict:
    if draw(st.booleans()):  # a valid event with one field made hostile (or none)
        e = {"v": 1, "id": f"h{n}", "type": draw(st.sampled_from(ev.EVENT_TYPES)), "user": f"u{n % 50}", "item": f"i{n % 30}", "ts": NOW_MS, "query": "lamp"}
        field = draw(st.sampled_from(["none", "user", "item", "ts", "context", "query", "price", "session"]))
        strat = {"user": _text, "item": _text, "ts": _time, "context": _context, "query": _text, "price": _number, "session": _text}.get(field)
        if strat is not None:
            e[field] = draw(strat)
        return e
    e = {
        "v": draw(st.sampled_from([1, 1, 1, 2, "1", None])),
        "id": f"h{n}-" + draw(st.text(max_size=8)),
        "type": draw(st.sampled_from([*ev.EVENT_TYPES, "teleport", 3])),
        "user": draw(st.one_of(_text, st.integers(min_value=-(2**70), max_value=2**70), _json)),
        "item": draw(st.one_of(_text, st.integers(), st.none())),
        "ts": draw(_time),
    }
    for k, strat in (("context", _context), ("query", _text), ("session", _text), ("price", _number), ("qty", _number), ("rec_id", _text), ("extra", _json)):
        if draw(st.booleans()):
            e[k] = draw(strat)
    if draw(st.integers(0, 9)) == 0:
        del e[draw(st.sampled_from(list(e)))]
    return e


def _encode(e: dict) -> bytes:
    return json.dumps(e, ensure_ascii=False, allow_nan=True).encode("utf-8", "surrogatepass")


class _EngineThread:
    """An engine consuming in its own thread and event loop, for a synchronous test."""

    def __init__(self, cfg) -> None:  # noqa: ANN001
        self.cfg = cfg
        self.engine = None
        self.error: BaseException | None = None
        self.started = threading.Event()
        self.thread = threading.Thread(target=self._main, daemon=True)

    def _main(self) -> None:
        from recofast.engine import Engine

        async def run() -> None:
            async with Engine(self.cfg) as engine:
                self.engine = engine
                self.loop = asyncio.get_running_loop()
                self.started.set()
                await engine.run()

        try:
            asyncio.run(run())
        except BaseException as e:  # noqa: BLE001 - reported by the test
            self.error = e
            self.started.set()

    def __enter__(self) -> _EngineThread:
        self.thread.start()
        assert self.started.wait(60), "engine did not start"
        assert self.error is None, self.error
        return self

    def __exit__(self, *exc: object) -> None:
        if self.engine is not None:
            self.loop.call_soon_threadsafe(self.engine.request_stop)
        self.thread.join(60)


@pytest.fixture
def engine_thread(tmp_path, nats_url, engine_config):  # noqa: ANN001, ANN201
    cfg = engine_config(tmp_path, nats_url, dedupe_window=10_000_000, health_seconds=0.5)
    with _EngineThread(cfg) as t:
        yield t
    assert t.error is None, t.error


def test_hostile_events_never_stop_the_engine_and_every_valid_event_is_applied(engine_thread, nats_url):
    counter = iter(range(10**9))
    expected = {"applied": 0, "dlq": 0}

    async def publish(bodies: list[bytes]) -> int:
        async with await nats.connect(nats_url) as nc:
            js = nc.jetstream()
            for b in bodies:
                await js.publish(subject_for(next(counter) % 4), b)
            return (await js.stream_info("RECOFAST_EVENTS")).state.last_seq

    @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
    @given(st.data())
    def one_round(data) -> None:  # noqa: ANN001
        evs = [data.draw(hostile_event(next(counter))) for _ in range(data.draw(st.integers(1, 12)))]
        raws = [_encode(e) for e in evs]
        packed = data.draw(st.booleans())
        bodies = [b"[" + b",".join(raws) + b"]"] if packed else raws
        if data.draw(st.integers(0, 5)) == 0:  # now and then, a body that is not JSON at all
            bodies.append(data.draw(st.binary(max_size=64)))
        for body in bodies:
            ok, bad = ev.decode_events(body)
            expected["applied"] += len(ok)
            expected["dlq"] += len(bad)
        last = asyncio.run(publish(bodies))
        engine = engine_thread.engine
        deadline = time.monotonic() + 30
        while engine.applied_seq < last:
            assert engine_thread.thread.is_alive(), f"the engine exited: {engine_thread.error!r}"
            assert time.monotonic() < deadline, f"stalled at seq {engine.applied_seq} of {last}"
            time.sleep(0.01)
        assert engine.counters["events_applied_total"] == expected["applied"]
        assert engine.counters["events_dlq_total"] == expected["dlq"]
        assert engine.counters["apply_errors_total"] == 0

    one_round()
    engine = engine_thread.engine
    assert engine.health()[0], engine.health()
    assert expected["applied"] > 0 and expected["dlq"] > 0  # both kinds were generated
    assert math.isfinite(engine.model.events_learned)
