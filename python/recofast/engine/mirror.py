"""The mirror of the list store in the NATS KV bucket, for edges on other hosts
(``publish_lists``): every commit the engine writes to LMDB is also put into the bucket, in
the background, so a slow bucket delays the remote edges, never the batches."""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from typing import Any

from recofast_sidecar.protocol import codec
from recofast_sidecar.protocol.keys import put_commit
from recofast_sidecar.protocol.names import LISTS_BUCKET

log = logging.getLogger("recofast.engine")


class ListMirror:
    """Commits waiting for the bucket: appended by the engine's worker threads (deque appends
    are thread-safe), drained by one task on the event loop. Pending commits are merged (the
    newest record of a key wins) and put together; a merged commit that fails to go out is
    kept and retried, merged with what came after it."""

    def __init__(self, bucket: str = LISTS_BUCKET) -> None:
        self.bucket = bucket
        self.pending: collections.deque[codec.Commit] = collections.deque()
        self.busy = False  # a merged commit is being put
        self.published = 0  # keys put or deleted
        self._task: asyncio.Task[None] | None = None

    def add(self, c: codec.Commit) -> None:
        self.pending.append(c)

    def start(self, js: Any) -> None:
        self._task = asyncio.create_task(self._run(js))

    async def _run(self, js: Any) -> None:
        kv = None
        delay = 0.5
        while True:
            if not self.pending:
                await asyncio.sleep(0.02)
                continue
            merged = codec.Commit()
            self.busy = True
            while self.pending:
                merged.merge(self.pending.popleft())
            try:
                if kv is None:
                    kv = await js.create_key_value(bucket=self.bucket, history=1)
                self.published += await put_commit(kv, merged)
                delay = 0.5
            except Exception as e:  # noqa: BLE001 - keep mirroring: retry these records
                log.warning("publishing lists to %s: %s (retrying in %.1f s)", self.bucket, e, delay)
                self.pending.appendleft(merged)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)
            finally:
                self.busy = False

    async def flushed(self, timeout: float = 5.0) -> None:
        """Waits (bounded) until everything added so far is in the bucket, the deletions of
        forgotten users included (``put_commit`` deletes their keys)."""
        deadline = time.monotonic() + timeout
        while (self.pending or self.busy) and time.monotonic() < deadline:
            await asyncio.sleep(0.02)

    async def stop(self, timeout: float = 2.0) -> None:
        """Lets the pending commits go out (bounded), then stops the task."""
        if self._task is None:
            return
        await self.flushed(timeout)
        self._task.cancel()
        try:
            await self._task
        except (asyncio.CancelledError, Exception):  # noqa: BLE001
            pass
        self._task = None


__all__ = ["ListMirror"]
