"""Impressions: every served list (with its ``rec_id``) is queued and published to
``recofast.impressions`` from a background task, up to 100 records to a message (a JSON
array), so an answer never waits for NATS. A full queue or a NATS that is down drops
records (counted), never blocks.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from typing import Any

from recofast_sidecar.protocol.names import IMPRESSIONS_SUBJECT

log = logging.getLogger("recofast.sidecar")

BATCH = 100
"""Most impression records in one message."""


class Impressions:
    """The queue of impression records and its publisher. ``counted(what, n)`` is told of
    every record ``published`` or ``dropped``; ``client()`` gives the NATS client (None while
    there is none)."""

    def __init__(self, maxsize: int, client: Callable[[], Any], counted: Callable[[str, int], None]) -> None:
        self.queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(maxsize=maxsize)
        self._client = client
        self._counted = counted

    def qsize(self) -> int:
        return self.queue.qsize()

    def put(self, rec: dict[str, Any]) -> None:
        """Queues one record, or drops it (counted) when the queue is full."""
        try:
            self.queue.put_nowait(rec)
        except asyncio.QueueFull:
            self._counted("dropped", 1)

    def _take_batch(self, first: dict[str, Any]) -> list[dict[str, Any]]:
        batch = [first]
        q = self.queue
        while len(batch) < BATCH:
            try:
                batch.append(q.get_nowait())
            except asyncio.QueueEmpty:
                break
        return batch

    async def _publish(self, batch: list[dict[str, Any]]) -> None:
        nc = self._client()
        if nc is None or not nc.is_connected:
            self._counted("dropped", len(batch))
            return
        try:
            await nc.publish(IMPRESSIONS_SUBJECT, json.dumps(batch, separators=(",", ":")).encode())
            self._counted("published", len(batch))
        except Exception as e:  # noqa: BLE001
            log.warning("publishing impressions failed: %s", e)
            self._counted("dropped", len(batch))

    async def run(self) -> None:
        """Publishes queued records until cancelled."""
        while True:
            first = await self.queue.get()
            await self._publish(self._take_batch(first))

    async def flush(self) -> None:
        """Publishes what is queued now (at shutdown, before NATS is drained)."""
        q = self.queue
        while not q.empty():
            await self._publish(self._take_batch(q.get_nowait()))


__all__ = ["BATCH", "Impressions"]
