"""What partitioned engines share through NATS JetStream.

**Item deltas.** Each engine learns its own users fully; what it learns about items
(co-occurrence increments, popularity, factor and bias changes) is gathered by the model
(:meth:`recofast.Recommender.share_items`) and published every ``share_seconds`` as compact
binary deltas (:meth:`~recofast.Recommender.take_item_delta`, each within the server's
message limit) on ``recofast.items.delta.<engine id>`` of the stream ``RECOFAST_ITEMS``
(retention ``share_max_age``, ``share_max_bytes``). Every engine reads that stream in order
through its own durable consumer ``recofast-items-<engine id>`` and applies the deltas of
the others between batches, so items bought together by the users of one engine are
co-listed for the users of another. The stream sequence of the last delta applied is kept in
the checkpoint (``delta_seq``), so a restarted engine applies each delta once. A delta that
fails validation is counted (``item_deltas_rejected_total``) and skipped.

**Each event's item knowledge once.** Every delta carries ``Recofast-Take`` (``<life>:<n>``:
a random id of this run of the engine and the number of the take), and the last delta of a
take ``Recofast-Covers`` (``p:seq,...``: each owned partition's last applied stream sequence
when it was taken). A checkpoint takes what the model has gathered (published right after
it) and records that take as included. An engine applies every delta except its own of this
run, those its checkpoint includes, and any it has already applied (a redelivery: at or
below ``delta_seq``). So after a restart, under the same name or a new one, its previous
run's deltas after the checkpoint are applied like another engine's. An engine that resumes
a partition from a checkpoint position replays the events after it, and up to the sequence
the last deltas cover (:meth:`ItemShare.covered`) their item knowledge arrives as deltas it
applies: those events are learned for their users only, without being shared again
(:meth:`recofast.Recommender.set_replay`), so no engine counts an event's effect on items
twice.

**Checkpoints in the object store.** After each checkpoint, an engine that claims
partitions through leases uploads its model snapshot to the JetStream object store
``recofast-checkpoints`` as ``<engine id>/v<version>`` (the last two are kept) before it
writes the partitions' positions, which name that version. An engine on any host that takes
a partition over fetches the snapshot its position names and takes the partition's users
from it (:meth:`~recofast.Recommender.import_users`), then replays the partition from the
position: the users continue where they were, and no event is applied twice.
"""

from __future__ import annotations

import asyncio
import logging
import re
import secrets
import tempfile
import time
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

log = logging.getLogger("recofast.engine")

ITEMS_STREAM = "RECOFAST_ITEMS"
DELTA_PREFIX = "recofast.items.delta"
CHECKPOINT_BUCKET = "recofast-checkpoints"
OBJECTS_KEPT = 2
#: Deltas fetched and waiting to be applied at most (the fetch waits while it is full).
QUEUE_LEN = 256
#: Deltas waiting to be published while NATS cannot take them (the oldest are dropped).
OUTBOX_LEN = 256
COVERS_HEADER = "Recofast-Covers"
TAKE_HEADER = "Recofast-Take"
#: Engine subjects read for what has been shared (each engine's last delta).
MAX_SUBJECTS = 256


def parse_take(text: str | None) -> tuple[str, int] | None:
    """A ``Recofast-Take`` value read back (None when absent or malformed).

    >>> parse_take("3fa2c1:17"), parse_take("17"), parse_take(None)
    (('3fa2c1', 17), None, None)
    """
    life, _, n = (text or "").partition(":")
    return (life, int(n)) if life and n.isdigit() and len(text or "") <= 64 else None


def format_covers(seqs: dict[int, int]) -> str:
    """The ``Recofast-Covers`` header value.

    >>> format_covers({1: 40, 0: 7, -1: 3})
    '0:7,1:40'
    """
    return ",".join(f"{p}:{int(q)}" for p, q in sorted(seqs.items()) if p >= 0)


def parse_covers(text: str | None) -> dict[int, int]:
    """A ``Recofast-Covers`` value read back; anything malformed is left out.

    >>> parse_covers("0:7,1:40,x:1,2:-5,3"), parse_covers(None)
    ({0: 7, 1: 40}, {})
    """
    out: dict[int, int] = {}
    for part in (text or "").split(",")[:4096]:
        p, _, q = part.partition(":")
        if p.isdigit() and q.isdigit():
            out[int(p)] = int(q)
    return out


def safe_id(engine_id: str) -> str:
    """The engine id as a subject token and a consumer name: itself when it is made of
    letters, digits, ``-`` and ``_`` (at most 64), else those characters with a hash of the
    whole id, so two ids never share a subject.

    >>> safe_id("engine-1"), safe_id("host-1.example:42"), safe_id("host-1_example_42")
    ('engine-1', 'host-1_example_42-2beb0b5e', 'host-1_example_42')
    """
    clean = re.sub(r"[^A-Za-z0-9_-]", "_", engine_id)[:64]
    if clean == engine_id and clean:
        return clean
    return f"{clean or 'engine'}-{zlib.crc32(engine_id.encode()):08x}"


class ItemShare:
    """Publishes this engine's item deltas and applies the others' (see the module docs).

    ``model`` is called for the current :class:`recofast.Recommender` (it changes on a
    rollback); ``counters`` is the engine's counter dict."""

    def __init__(self, js: Any, engine_id: str, model: Callable[[], Any], counters: dict[str, int], *, seconds: float = 0.5,
                 max_items: int = 100_000, replicas: int = 1, max_age: float = 3600.0, max_bytes: int = 1 << 30,
                 max_payload: int = 1 << 20, positions: Callable[[], dict[int, int]] = dict) -> None:
        self.js, self.id, self.model, self.counters = js, safe_id(engine_id), model, counters
        self.positions = positions
        self.seconds, self.max_items, self.replicas = seconds, max_items, replicas
        self.max_age, self.max_bytes = max_age, max_bytes
        # Room for the headers JetStream adds; the server's limit is the client's max_payload.
        self.max_payload = max(64 << 10, int(max_payload) - 4096)
        self.subject = f"{DELTA_PREFIX}.{self.id}"
        self.life = secrets.token_hex(6)  # this run's deltas: never applied by this run
        self.takes = 0
        self.included: tuple[str, int] = ("", 0)  # the last take in the checkpoint this run started from
        self.applied_seq = 0
        self.queue: asyncio.Queue[Any] = asyncio.Queue(maxsize=QUEUE_LEN)
        self.unsent: list[tuple[bytes, dict[str, str] | None]] = []
        self.task: asyncio.Task[None] | None = None
        self.sub: Any = None
        self._next = 0.0
        self._scan: tuple[float, list[dict[int, int]]] | None = None
        for k in ("item_deltas_published_total", "item_deltas_applied_total", "item_deltas_rejected_total",
                  "item_delta_bytes_published_total", "item_deltas_unsent_dropped_total"):
            counters.setdefault(k, 0)

    async def start(self, after_seq: int, included: tuple[str, int] = ("", 0)) -> None:
        """Creates the stream if missing, starts gathering in the model and consuming the
        stream right after sequence ``after_seq``; ``included``: the last take of the
        checkpoint the model comes from (its deltas are not applied again)."""
        from nats.js import api
        from nats.js.errors import NotFoundError

        try:
            await self.js.stream_info(ITEMS_STREAM)
        except NotFoundError:
            await self.js.add_stream(api.StreamConfig(
                name=ITEMS_STREAM, subjects=[f"{DELTA_PREFIX}.>"], storage=api.StorageType.FILE,
                retention=api.RetentionPolicy.LIMITS, discard=api.DiscardPolicy.OLD, max_age=self.max_age,
                max_bytes=self.max_bytes, num_replicas=max(1, self.replicas),
            ))  # fmt: skip
        self.model().share_items(self.max_items)
        self.applied_seq = after_seq
        self.included = (str(included[0]), int(included[1]))
        await self._bind(after_seq)
        self.task = asyncio.create_task(self._pump())

    async def _bind(self, after_seq: int) -> None:
        """(Re)creates this engine's durable on the stream, starting after ``after_seq``."""
        from nats.js import api
        from nats.js.errors import NotFoundError

        name = f"recofast-items-{self.id}"
        try:
            await self.js.delete_consumer(ITEMS_STREAM, name)
        except NotFoundError:
            pass
        await self.js.add_consumer(ITEMS_STREAM, api.ConsumerConfig(
            durable_name=name, deliver_policy=api.DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=max(after_seq + 1, 1),
            ack_policy=api.AckPolicy.ALL, ack_wait=60.0, max_ack_pending=-1, max_waiting=4, inactive_threshold=self.max_age,
        ))  # fmt: skip
        self.sub = await self.js.pull_subscribe_bind(durable=name, stream=ITEMS_STREAM)

    async def _pump(self) -> None:
        import nats.errors

        failures = 0
        while True:
            try:
                msgs = await self.sub.fetch(32, timeout=1.0)
                failures = 0
            except (nats.errors.TimeoutError, asyncio.TimeoutError):
                continue
            except Exception as e:  # noqa: BLE001 - reconnecting, a node away, the durable gone
                failures += 1
                log.warning("item deltas: fetch failed (%s); retrying", e)
                await asyncio.sleep(0.5)
                if failures % 20 == 0:  # ten seconds of failures: the durable may be gone (deleted, expired)
                    try:
                        await self._bind(self.applied_seq)
                        log.info("item deltas: consumer bound again after stream seq %d", self.applied_seq)
                    except Exception as e2:  # noqa: BLE001 - NATS still away: the next round tries again
                        log.warning("item deltas: cannot bind the consumer again (%s)", e2)
                continue
            for m in msgs:
                await self.queue.put(m)

    async def tick(self, now: float) -> None:
        """Between batches: publishes what was gathered (every ``seconds``) and applies the
        other engines' deltas that arrived."""
        if now >= self._next:
            self._next = now + self.seconds
            await self.publish()
        await self.apply_arrived()

    def _take(self, covers: str) -> None:
        """Takes what the model gathered into the deltas waiting to be published."""
        deltas = self.model().take_item_delta(self.max_payload)
        if not deltas:
            return
        self.takes += 1
        take = f"{self.life}:{self.takes}"
        for k, d in enumerate(deltas):
            headers = {TAKE_HEADER: take}
            if k == len(deltas) - 1 and covers:
                headers[COVERS_HEADER] = covers
            self.unsent.append((d, headers))

    def stash(self) -> tuple[str, int]:
        """For a checkpoint (between batches, in its worker thread): takes what the model
        gathered, to be published at the next tick, and returns the take the checkpoint
        includes."""
        self._take(format_covers(self.positions()))
        return self.life, self.takes

    async def publish(self) -> None:
        covers = format_covers(self.positions())  # read with the take: no batch is applied in between
        await asyncio.to_thread(self._take, covers)
        if len(self.unsent) > OUTBOX_LEN:
            dropped = len(self.unsent) - OUTBOX_LEN
            del self.unsent[:dropped]
            self.counters["item_deltas_unsent_dropped_total"] += dropped
            log.warning("item deltas: %d not published (NATS unavailable) were dropped", dropped)
        while self.unsent:
            d, headers = self.unsent[0]
            try:
                await self.js.publish(self.subject, d, timeout=2.0, headers=headers)
            except Exception as e:  # noqa: BLE001 - NATS away: kept, sent at the next tick
                log.warning("item deltas: publish failed (%s); %d waiting", e, len(self.unsent))
                return
            self.unsent.pop(0)
            self.counters["item_deltas_published_total"] += 1
            self.counters["item_delta_bytes_published_total"] += len(d)

    async def covered(self, p: int, limit: int) -> int:
        """How far the events of partition ``p`` have been shared: the highest sequence any
        engine's last delta covers (``Recofast-Covers``); 0 when none does or the stream
        cannot say. Capped at ``limit`` (the event stream's last sequence), so a header from
        the future never holds learning back. The last deltas are read at most once a
        second (a claim of several partitions reads them once), concurrently, from at most
        :data:`MAX_SUBJECTS` subjects."""
        now = time.monotonic()
        if self._scan is None or now - self._scan[0] > 1.0:
            try:
                self._scan = (now, await self._last_covers())
            except Exception as e:  # noqa: BLE001 - replayed as new: at worst counted twice
                log.warning("item deltas: cannot read what was shared (%s)", e)
                return 0
        return min(max((c.get(p, 0) for c in self._scan[1]), default=0), limit)

    async def _last_covers(self) -> list[dict[int, int]]:
        from nats.js.errors import NotFoundError

        info = await self.js.stream_info(ITEMS_STREAM, subjects_filter=f"{DELTA_PREFIX}.>")
        subjects = list(info.state.subjects or {})[:MAX_SUBJECTS]

        async def last(subject: str) -> dict[int, int]:
            try:
                msg = await self.js.get_last_msg(ITEMS_STREAM, subject)
            except NotFoundError:
                return {}
            return parse_covers((msg.headers or {}).get(COVERS_HEADER))

        return list(await asyncio.gather(*(last(x) for x in subjects)))

    async def apply_arrived(self) -> None:
        msgs = []
        while not self.queue.empty() and len(msgs) < 64:
            msgs.append(self.queue.get_nowait())
        if not msgs:
            return
        theirs = []
        top = self.applied_seq
        for m in msgs:
            seq = m.metadata.sequence.stream
            if seq <= top:
                continue  # redelivered (an ack that did not arrive in time): applied already
            top = seq
            take = parse_take((m.headers or {}).get(TAKE_HEADER))
            if take is not None and (take[0] == self.life or (take[0] == self.included[0] and take[1] <= self.included[1])):
                continue  # this run's own, or in the checkpoint this run started from
            theirs.append(m.data)
        if theirs:
            ok, bad = await asyncio.to_thread(self._apply, self.model(), theirs)
            self.counters["item_deltas_applied_total"] += ok
            self.counters["item_deltas_rejected_total"] += bad
        self.applied_seq = top
        try:
            await msgs[-1].ack()
        except Exception as e:  # noqa: BLE001 - redelivered after ack_wait; the position is in the checkpoint
            log.warning("item deltas: ack failed (%s)", e)

    @staticmethod
    def _apply(model: Any, deltas: list[bytes]) -> tuple[int, int]:
        ok = bad = 0
        for d in deltas:
            try:
                model.apply_item_delta(d)
                ok += 1
            except Exception as e:  # noqa: BLE001 - ValueError: invalid; anything else: refused all the same
                bad += 1
                log.warning("item deltas: one refused (%s: %s)", type(e).__name__, e)
            except BaseException as e:  # a Rust panic arrives as pyo3's PanicException
                if isinstance(e, (KeyboardInterrupt, SystemExit)):
                    raise
                bad += 1
                log.error("item deltas: applying one failed (%s: %s); refused", type(e).__name__, e)
        return ok, bad

    async def close(self) -> None:
        if self.task is not None:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)
            self.task = None
        from recofast.engine.streams import unsubscribe_quietly

        await unsubscribe_quietly(self.sub)
        self.sub = None


class CheckpointObjects:
    """Model snapshots in the JetStream object store, for partitions that change hands."""

    def __init__(self, js: Any, engine_id: str, replicas: int = 1) -> None:
        self.js, self.id, self.replicas = js, safe_id(engine_id), replicas
        self.obs: Any = None
        self.uploaded: list[str] = []

    async def _store(self) -> Any:
        from nats.js.errors import BucketNotFoundError, NotFoundError

        if self.obs is None:
            try:
                self.obs = await self.js.object_store(CHECKPOINT_BUCKET)
            except (BucketNotFoundError, NotFoundError):
                # A week: a live engine uploads at every checkpoint; a gone one's objects expire.
                self.obs = await self.js.create_object_store(CHECKPOINT_BUCKET, replicas=max(1, self.replicas), ttl=7 * 86400.0)
        return self.obs

    def name(self, version: int) -> str:
        return f"{self.id}/v{version:06d}"

    async def upload(self, version: int, path: Path) -> str:
        """Uploads the snapshot file of checkpoint ``version``; returns its object name."""
        obs = await self._store()
        name = self.name(version)
        if name in self.uploaded:
            return name
        with open(path, "rb") as f:
            await obs.put(name, f)
        self.uploaded.append(name)
        while len(self.uploaded) > OBJECTS_KEPT:
            old = self.uploaded.pop(0)
            try:
                await obs.delete(old)
            except Exception as e:  # noqa: BLE001 - an object left behind is overwritten by nobody; say so
                log.warning("checkpoint objects: deleting %s: %s", old, e)
        return name

    async def fetch(self, name: str, into: Path) -> Path:
        """Downloads object ``name`` into the folder ``into``; returns the file."""
        obs = await self._store()
        into.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=into, prefix=".handover-", suffix=".bin")
        with open(fd, "wb") as f:
            await obs.get(name, writeinto=f)
        return Path(tmp)


__all__ = ["CHECKPOINT_BUCKET", "COVERS_HEADER", "DELTA_PREFIX", "ITEMS_STREAM", "CheckpointObjects", "ItemShare", "TAKE_HEADER", "parse_take", "safe_id"]
