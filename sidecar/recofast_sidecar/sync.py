"""Mirroring the list store through a NATS KV bucket, for edges on other hosts.

The bucket :data:`~recofast_sidecar.protocol.names.LISTS_BUCKET` holds one entry per LMDB
record, keyed as :mod:`recofast_sidecar.protocol.keys` says; the value is the record's codec
bytes, the same as in LMDB, so a mirror never re-encodes.

A producer (the engine, or anything holding a :class:`~recofast_sidecar.protocol.codec.Commit`)
calls :func:`~recofast_sidecar.protocol.keys.put_commit`, which also deletes the keys of the commit's ``delete_users``;
``recofast-sidecar --sync`` runs a :class:`Mirror`, which watches the bucket and applies
updates to its local LMDB store in batches, one write transaction a batch (in a thread, off
the event loop, through :meth:`ListWriter.apply <recofast_sidecar.protocol.liststore.ListWriter.apply>`,
so the map grows as the store fills), deleting the records whose entries are deleted or
purged (KV ``DEL``/``PURGE``). A batch that cannot be written (a full store, a disk error)
is logged, counted and retried with backoff, never dropped; :attr:`Mirror.error` says why
while it fails.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from recofast_sidecar.protocol.keys import parse_kv_key
from recofast_sidecar.protocol.liststore import ListWriter, Op
from recofast_sidecar.protocol.names import (
    DB_META,
    LISTS_BUCKET,
    META_RECORD_KEY,
)

log = logging.getLogger("recofast.sidecar.sync")



class Mirror:
    """Applies the bucket to a local store. ``synced`` is set once the bucket's current
    contents are in the store; ``applied`` counts records written, ``deleted`` removed.

    A batch that fails to apply is retried, with a delay doubling from ``retry_initial`` to
    ``retry_max`` seconds, until it succeeds: ``error`` holds the last failure meanwhile
    (None while all is well) and ``failures`` counts them."""

    def __init__(
        self,
        writer: ListWriter,
        bucket: str = LISTS_BUCKET,
        batch: int = 1000,
        retry_initial: float = 0.2,
        retry_max: float = 10.0,
    ) -> None:
        self.writer = writer
        self.bucket = bucket
        self.batch = batch
        self.retry_initial = retry_initial
        self.retry_max = retry_max
        self.synced = asyncio.Event()
        self.applied = 0
        self.deleted = 0
        self.skipped = 0
        self.failures = 0
        self._write_error: str | None = None
        self._watch_error: str | None = None
        self.inflight: asyncio.Future[tuple[int, int]] | None = None

    def _ops(self, entries: list[Any]) -> list[Op]:
        ops: list[Op] = []
        for e in entries:
            where = parse_kv_key(e.key)
            if where is None:
                self.skipped += 1
                continue
            db, key = where
            k = META_RECORD_KEY if db == DB_META else key.encode()
            if e.operation in ("DEL", "PURGE") or e.value is None:
                ops.append((db, k, None))
            else:
                ops.append((db, k, bytes(e.value)))
        return ops

    @property
    def error(self) -> str | None:
        """Why the mirror is failing now (a batch it cannot write, or a broken watch); None
        while it works."""
        return self._write_error or self._watch_error

    def _failed(self, what: str, e: BaseException, delay: float) -> str:
        self.failures += 1
        msg = f"{what}: {type(e).__name__}: {e}"
        log.error("list mirror: %s (failure %d; retrying in %.1f s)", msg, self.failures, delay)
        return msg

    async def _apply(self, entries: list[Any]) -> None:
        """Writes a batch in one transaction (in a thread), retrying it until it is written."""
        ops = self._ops(entries)
        if not ops:
            return
        delay = self.retry_initial
        while True:
            # Shielded: a cancelled mirror still finishes the transaction it began.
            self.inflight = asyncio.ensure_future(asyncio.to_thread(self.writer.apply, ops))
            try:
                puts, dels = await asyncio.shield(self.inflight)
            except asyncio.CancelledError:
                raise
            except Exception as e:  # noqa: BLE001 - a full store or a disk error: keep the batch, retry
                self._write_error = self._failed(f"writing {len(ops)} records to {self.writer.path} failed", e, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.retry_max)
                continue
            self.applied += puts
            self.deleted += dels
            if self._write_error is not None:
                log.warning("list mirror: writing again after %d failures", self.failures)
                self._write_error = None
            return

    async def run(self, js: Any) -> None:
        """Watches the bucket until cancelled; waits for it while it does not exist, and
        starts watching again (with backoff) when the watch fails."""
        delay = self.retry_initial
        while True:
            try:
                kv = await js.key_value(self.bucket)
                watcher = await kv.watchall()
            except asyncio.CancelledError:
                raise
            except Exception as e:  # noqa: BLE001 - no bucket yet, or NATS trouble: retry
                log.warning("list bucket %s not available (%s); retrying", self.bucket, e)
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.retry_max)
                continue
            log.info("mirroring list bucket %s", self.bucket)
            self._watch_error = None
            try:
                await self._follow(watcher)
                delay = self.retry_initial
            except asyncio.CancelledError:
                raise
            except Exception as e:  # noqa: BLE001 - the watch broke: count it, watch again
                self._watch_error = self._failed(f"watching {self.bucket} failed", e, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.retry_max)
            finally:
                try:
                    await watcher.stop()
                except Exception:  # noqa: BLE001 - the connection may be gone already
                    pass

    async def _follow(self, watcher: Any) -> None:
        import nats.errors

        while True:
            batch: list[Any] = []
            caught_up = False  # the None marker: the bucket's contents have all arrived
            e = await watcher.updates(timeout=None)
            while True:
                if e is None:
                    caught_up = True
                elif getattr(e, "key", None) is None:  # the watcher stopped
                    if batch:
                        await self._apply(batch)
                    return
                else:
                    batch.append(e)
                if len(batch) >= self.batch:
                    break
                try:
                    e = await watcher.updates(timeout=0.005)
                except nats.errors.TimeoutError:
                    break
            if batch:
                await self._apply(batch)
            if caught_up:
                self.synced.set()


__all__ = ["Mirror"]
