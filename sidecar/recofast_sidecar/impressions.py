"""Impressions: every served list (with its ``rec_id``) is queued and published to the
JetStream stream ``RECOFAST_IMPRESSIONS`` from a background task, up to
:data:`~recofast_sidecar.protocol.feedback.BATCH` records to a message, so an answer never
waits for NATS. Each message has a ``Nats-Msg-Id``, so a publish retried after a lost
acknowledgement is stored once. A full queue drops new records (counted); a batch NATS does
not take is retried :data:`RETRIES` times, then dropped (counted). Nothing here blocks.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable
from typing import Any

from recofast_sidecar.protocol.feedback import BATCH, Impression, encode_batch
from recofast_sidecar.protocol.names import IMPRESSIONS_SUBJECT, MSG_ID_HEADER

log = logging.getLogger("recofast.sidecar")

RETRIES = 3
"""Attempts after the first at publishing one batch (half a second apart, then longer)."""


def _raise_if_cancelled() -> None:
    """nats.py's publish may turn a cancellation into a timeout: a task asked to stop stops."""
    me = asyncio.current_task()
    if me is not None and me.cancelling():
        raise asyncio.CancelledError


class Impressions:
    """The queue of impression records and its publisher. ``counted(what, n)`` is told of
    every record ``published`` or ``dropped``; ``jetstream()`` gives the JetStream context
    (None while there is no connection)."""

    def __init__(self, maxsize: int, jetstream: Callable[[], Any], counted: Callable[[str, int], None],
                 timeout: float = 2.0) -> None:
        self.queue: asyncio.Queue[Impression] = asyncio.Queue(maxsize=maxsize)
        self._js = jetstream
        self._counted = counted
        self._timeout = timeout
        self._warned = False

    def qsize(self) -> int:
        return self.queue.qsize()

    def put(self, rec: Impression) -> None:
        """Queues one record, or drops it (counted) when the queue is full."""
        try:
            self.queue.put_nowait(rec)
        except asyncio.QueueFull:
            self._counted("dropped", 1)

    def _take_batch(self, first: Impression) -> list[Impression]:
        batch = [first]
        q = self.queue
        while len(batch) < BATCH:
            try:
                batch.append(q.get_nowait())
            except asyncio.QueueEmpty:
                break
        return batch

    async def _publish(self, batch: list[Impression], retries: int = RETRIES) -> None:
        payload = encode_batch(batch)
        headers = {MSG_ID_HEADER: uuid.uuid4().hex}
        for attempt in range(retries + 1):
            js = self._js()
            if js is not None:
                try:
                    await js.publish(IMPRESSIONS_SUBJECT, payload, timeout=self._timeout, headers=headers)
                    self._counted("published", len(batch))
                    if self._warned:
                        log.info("impressions are stored again")
                        self._warned = False
                    return
                except Exception as e:  # noqa: BLE001 - no stream yet, NATS away, a timeout
                    _raise_if_cancelled()
                    if not self._warned:
                        log.warning("publishing impressions failed (%s: %s); retrying", type(e).__name__, e)
                        self._warned = True
            if attempt < retries:
                await asyncio.sleep(0.5 * (attempt + 1))
        self._counted("dropped", len(batch))

    async def run(self) -> None:
        """Publishes queued records until cancelled."""
        while True:
            first = await self.queue.get()
            await self._publish(self._take_batch(first))
            _raise_if_cancelled()

    async def flush(self) -> None:
        """Publishes what is queued now (at shutdown, before NATS is drained), once each."""
        q = self.queue
        while not q.empty():
            await self._publish(self._take_batch(q.get_nowait()), retries=0)


__all__ = ["RETRIES", "Impressions"]
