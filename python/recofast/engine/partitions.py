"""Partitions: an engine consumes a set of the stream's partitions (subjects
``recofast.events.p<N>``), each in order through its own durable consumer
``recofast-engine-p<N>`` and with its own position (the last applied stream sequence of that
partition, kept in the checkpoint), so a partition can move between engines with nothing
lost and nothing applied twice.

The set is fixed (``partitions = "0-3"``) or claimed through leases in the NATS KV bucket
``recofast-leases`` (:class:`Leases`): a key ``p<N>`` per partition holding the owner's id,
renewed every third of ``lease_ttl``; the bucket's ``max_age`` is the TTL, so a lease not
renewed lapses and another engine claims it. The partition's checkpointed position (stream
sequence and events applied through it) is in the bucket ``recofast-positions`` under the
same key, written after each checkpoint by its owner and read by the next owner.

>>> parse_partitions("0-2,5")
(0, 1, 2, 5)
>>> parse_partitions("")
()
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import re
import time
from collections.abc import Callable
from typing import Any

from recofast_sidecar.protocol.names import CATALOG_SUBJECT, CONSUMER, EVENTS_SUBJECT_PREFIX, FORGET_SUBJECT, STREAM

from recofast.engine.streams import unsubscribe_quietly

log = logging.getLogger("recofast.engine")

LEASE_BUCKET = "recofast-leases"
POSITION_BUCKET = "recofast-positions"
ENGINE_KEY = "engine.{}"


def parse_partitions(spec: str) -> tuple[int, ...]:
    """``"0-3"`` → (0, 1, 2, 3); ``"0,2"`` → (0, 2); empty → ()."""
    out: set[int] = set()
    for part in (p.strip() for p in spec.split(",")):
        if not part:
            continue
        lo, _, hi = part.partition("-")
        a, b = int(lo), int(hi or lo)
        if a < 0 or b < a or b - a > 4096:
            raise ValueError(f"bad partition range {part!r}")
        out.update(range(a, b + 1))
    return tuple(sorted(out))


def subject(p: int) -> str:
    return f"{EVENTS_SUBJECT_PREFIX}.p{p}"


SHARED = -1
"""The pseudo-partition of what every engine applies: catalogue upserts and forget requests
(``recofast.events.catalog``, ``recofast.events.forget``), through a durable of its own."""


def durable(p: int, engine_id: str = "") -> str:
    if p == SHARED:
        return f"{CONSUMER}-shared-" + re.sub(r"[^A-Za-z0-9_-]", "_", engine_id)
    return f"{CONSUMER}-p{p}"


#: Seconds without messages after which a partition's consumer is asked whether deliveries
#: were lost in flight.
LOST_CHECK_SECONDS = 5.0


class Feeds:
    """One fetch task per owned partition; each hands its batch to the engine through a
    bounded queue and waits until the engine has applied and acked it before fetching the
    next, so a partition is applied in order and at most one batch per partition waits."""

    def __init__(self, js: Any, batch: int, timeout: float, engine_id: str = "") -> None:
        self.js = js
        self.engine_id = engine_id
        self.batch = batch
        self.timeout = timeout
        self.queue: asyncio.Queue[tuple[int, list[Any], asyncio.Event]] = asyncio.Queue(maxsize=64)
        self.tasks: dict[int, asyncio.Task[None]] = {}
        self.subs: dict[int, Any] = {}

    async def add(self, p: int, after_seq: int) -> None:
        """Starts consuming partition ``p`` right after stream sequence ``after_seq``."""
        await self.remove(p)
        sub = await self._bind(p, after_seq)
        self.tasks[p] = asyncio.create_task(self._pump(p, sub, after_seq))

    async def _bind(self, p: int, after_seq: int) -> Any:
        """(Re)creates partition ``p``'s durable, starting right after ``after_seq``."""
        from nats.js import api
        from nats.js.errors import NotFoundError

        name = durable(p, self.engine_id)
        try:
            await self.js.delete_consumer(STREAM, name)
        except NotFoundError:
            pass
        filters: dict[str, Any] = {"filter_subject": subject(p)}
        if p == SHARED:  # an engine's own; gone after an hour without it
            filters = {"filter_subjects": [CATALOG_SUBJECT, FORGET_SUBJECT], "inactive_threshold": 3600.0}
        await self.js.add_consumer(STREAM, api.ConsumerConfig(
            durable_name=name, **filters,
            deliver_policy=api.DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=max(after_seq + 1, 1),
            ack_policy=api.AckPolicy.ALL, ack_wait=60.0, max_ack_pending=-1, max_waiting=16,
        ))  # fmt: skip
        sub = await self.js.pull_subscribe_bind(durable=name, stream=STREAM)
        await unsubscribe_quietly(self.subs.pop(p, None))
        self.subs[p] = sub
        return sub

    async def remove(self, p: int) -> None:
        t = self.tasks.pop(p, None)
        if t is not None:
            t.cancel()
            await asyncio.gather(t, return_exceptions=True)
        await unsubscribe_quietly(self.subs.pop(p, None))

    async def _pump(self, p: int, sub: Any, after_seq: int) -> None:
        """Fetches partition ``p`` batch after batch. A delivery lost in flight (its node
        went away between the consumer's leader sending it and this engine receiving it)
        would wait for redelivery ``ack_wait`` later, or be acked with the next batch (acks
        cover everything before them) and never applied: a gap in the consumer's delivery
        sequence, or deliveries still unacknowledged while this engine has none in hand
        (checked after :data:`LOST_CHECK_SECONDS` without messages), rebinds the consumer
        right after the last batch the engine applied."""
        import nats.errors

        last_seq, last_delivery = after_seq, 0
        quiet_since = time.monotonic()
        while True:
            try:
                msgs = await sub.fetch(self.batch, timeout=self.timeout)
            except (nats.errors.TimeoutError, asyncio.TimeoutError):
                if time.monotonic() - quiet_since > LOST_CHECK_SECONDS:
                    quiet_since = time.monotonic()
                    if await self._lost_in_flight(sub):
                        log.warning("partition %d: a delivery was lost in flight; consuming again after stream seq %d", p, last_seq)
                        sub, last_delivery = await self._rebind(p, last_seq, sub), 0
                continue
            except Exception as e:  # noqa: BLE001 - reconnecting, or a node away: wait, then again
                log.warning("partition %d: fetch failed (%s); retrying", p, e)
                await asyncio.sleep(0.5)
                continue
            if not msgs:
                continue
            first = msgs[0].metadata.sequence.consumer
            if last_delivery and first > last_delivery + 1:
                log.warning("partition %d: deliveries %d-%d were lost in flight; consuming again after stream seq %d",
                            p, last_delivery + 1, first - 1, last_seq)
                sub, last_delivery = await self._rebind(p, last_seq, sub), 0
                continue
            done = asyncio.Event()
            await self.queue.put((p, msgs, done))
            await done.wait()
            last_seq, last_delivery = msgs[-1].metadata.sequence.stream, msgs[-1].metadata.sequence.consumer
            quiet_since = time.monotonic()

    @staticmethod
    async def _lost_in_flight(sub: Any) -> bool:
        """Deliveries the server holds as unacknowledged while this engine has none: every
        batch it is handed is acked before the next fetch."""
        try:
            return int((await sub.consumer_info()).num_ack_pending or 0) > 0
        except Exception:  # noqa: BLE001 - cannot tell now: the next quiet spell asks again
            return False

    async def _rebind(self, p: int, after_seq: int, sub: Any) -> Any:
        try:
            return await self._bind(p, after_seq)
        except Exception as e:  # noqa: BLE001 - NATS away: keep the old one, try again later
            log.warning("partition %d: cannot bind the consumer again (%s)", p, e)
            await asyncio.sleep(0.5)
            return sub

    async def next(self, timeout: float) -> tuple[int, list[Any], asyncio.Event] | None:
        try:
            return await asyncio.wait_for(self.queue.get(), timeout)
        except asyncio.TimeoutError:
            return None

    async def close(self) -> None:
        for p in list(self.tasks):
            await self.remove(p)


async def _kv(js: Any, bucket: str, ttl: float = 0.0, replicas: int = 1) -> Any:
    from nats.js.errors import BucketNotFoundError

    try:
        return await js.key_value(bucket)
    except BucketNotFoundError:
        return await js.create_key_value(bucket=bucket, history=1, ttl=ttl or None, replicas=replicas)


class Leases:
    """Claims, renews and gives up partition leases for one engine.

    ``on_claim(p)`` is awaited when this engine takes partition ``p`` (it reads the position
    and starts consuming); ``on_lost(p)`` when a renewal fails (it stops consuming at once).
    An engine claims up to ``ceil(partitions / live engines)``; live engines are the
    ``engine.<id>`` keys of the same bucket, renewed with the leases.
    """

    def __init__(self, js: Any, engine_id: str, partitions: int, ttl: float, replicas: int,
                 on_claim: Callable[[int], Any], on_lost: Callable[[int], Any]) -> None:
        self.js, self.id, self.n, self.ttl, self.replicas = js, engine_id, partitions, ttl, replicas
        self.on_claim, self.on_lost = on_claim, on_lost
        self.owned: dict[int, int] = {}  # partition -> revision of our lease
        self.kv: Any = None
        self.pos: Any = None
        self.releasing: set[int] = set()  # owned partitions to hand over to another engine
        self.task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self.kv = await _kv(self.js, LEASE_BUCKET, self.ttl, self.replicas)
        self.pos = await _kv(self.js, POSITION_BUCKET, 0.0, self.replicas)
        await self._heartbeat()
        self.task = asyncio.create_task(self._loop())

    async def position(self, p: int) -> tuple[int, int]:
        """(stream sequence, events applied through it) of partition ``p``'s last checkpoint."""
        d = await self.position_entry(p)
        return int(d.get("seq", 0)), int(d.get("applied", 0))

    async def position_entry(self, p: int) -> dict[str, Any]:
        """Partition ``p``'s position entry: ``seq``, ``applied``, ``engine`` (who wrote it),
        ``version`` and ``object`` (its checkpoint, in the object store); {} if none."""
        from nats.js.errors import KeyNotFoundError

        try:
            e = await self.pos.get(f"p{p}")
        except KeyNotFoundError:
            return {}
        try:
            d = json.loads(e.value or b"{}")
        except ValueError:
            d = None
        if not isinstance(d, dict):
            log.error("partition %d: unreadable position %r; starting at the stream's beginning", p, (e.value or b"")[:80])
            return {}
        return d

    async def put_positions(self, pos: dict[int, tuple[int, int]], extra: dict[str, Any] | None = None) -> None:
        for p, (seq, applied) in pos.items():
            if p in self.owned:
                entry = {"seq": seq, "applied": applied, "engine": self.id, **(extra or {})}
                await self.pos.put(f"p{p}", json.dumps(entry).encode())

    async def release(self, p: int) -> None:
        """Gives partition ``p`` up (its position is written first by the engine)."""
        self.releasing.discard(p)
        if self.owned.pop(p, None) is not None:
            await self.kv.delete(f"p{p}")
            log.info("released partition %d", p)

    async def _heartbeat(self) -> None:
        await self.kv.put(ENGINE_KEY.format(self.id), self.id.encode())

    async def live_engines(self) -> int:
        from nats.js.errors import NoKeysError

        try:
            keys = await self.kv.keys()
        except NoKeysError:
            return 1
        return max(1, sum(1 for k in keys if k.startswith("engine.")))

    async def tick(self) -> None:
        """Renews what is owned, then claims free partitions up to the fair share."""
        from nats.js.errors import KeyWrongLastSequenceError

        await self._heartbeat()
        for p, rev in list(self.owned.items()):
            try:
                self.owned[p] = await self.kv.update(f"p{p}", self.id.encode(), last=rev)
            except KeyWrongLastSequenceError:
                log.error("lease of partition %d lost: another engine holds it now", p)
                self.owned.pop(p)
                await self.on_lost(p)
        share = math.ceil(self.n / await self.live_engines())
        extra = len(self.owned) - len(self.releasing) - share
        for p in sorted(self.owned, reverse=True)[: max(0, extra)]:
            self.releasing.add(p)  # handed over by the engine between batches (release())
        for p in range(self.n):
            if len(self.owned) - len(self.releasing) >= share:
                break
            if p in self.owned:
                continue
            try:
                rev = await self.kv.create(f"p{p}", self.id.encode())
            except Exception:  # noqa: BLE001 - held by another engine
                continue
            self.owned[p] = rev
            log.info("claimed partition %d", p)
            await self.on_claim(p)

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.ttl / 3)
            try:
                await self.tick()
            except asyncio.CancelledError:
                raise
            except Exception as e:  # noqa: BLE001 - NATS away: try again at the next tick
                log.warning("leases: %s", e)

    async def close(self, release: bool = True) -> None:
        if self.task is not None:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)
        if release:
            for p in list(self.owned):
                try:
                    await self.kv.delete(f"p{p}")
                except Exception:  # noqa: BLE001
                    pass
            try:
                await self.kv.delete(ENGINE_KEY.format(self.id))
            except Exception:  # noqa: BLE001
                pass
        self.owned.clear()


__all__ = ["SHARED", "Feeds", "Leases", "LEASE_BUCKET", "POSITION_BUCKET", "durable", "parse_partitions", "subject"]
