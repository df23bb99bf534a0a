"""Mirroring the list store through a NATS KV bucket, for edges on other hosts.

The bucket :data:`~recofast_sidecar.constants.LISTS_BUCKET` holds one entry per LMDB record:
key ``u.<id>`` (a user list), ``i.<id>`` (item metadata), ``s.<segment key>`` (a popular or
trending list), ``c.<key>`` (a record of the ``context`` database: ``aff:<context key>``, an
affinity list, or ``fresh``), or ``meta``; ids are unpadded base64url, so any id makes a valid KV key. The
value is the record's codec bytes, the same as in LMDB, so a mirror never re-encodes.

A producer (the engine, or anything holding a :class:`~recofast_sidecar.codec.Commit`)
calls :func:`put_commit`; ``recofast-sidecar --sync`` runs a :class:`Mirror`, which watches
the bucket and applies updates to its local LMDB store in batches, one write transaction a
batch (in a thread, off the event loop), deleting records whose entries are deleted.

>>> kv_key(DB_USER_LISTS, "ü/1")
'u.w7wvMQ'
>>> parse_kv_key("u.w7wvMQ"), parse_kv_key("meta"), parse_kv_key("x.y")
((b'user_lists', 'ü/1'), (b'meta', ''), None)
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
from typing import Any

from recofast_sidecar.codec import FRESH_KEY, Commit, ListWriter, affinity_key, encode_item, encode_list, encode_meta
from recofast_sidecar.constants import DB_CONTEXT, DB_ITEMS, DB_META, DB_SEGMENTS, DB_USER_LISTS, LISTS_BUCKET

log = logging.getLogger("recofast.sidecar.sync")

_PREFIX = {DB_USER_LISTS: "u", DB_ITEMS: "i", DB_SEGMENTS: "s", DB_CONTEXT: "c"}
_DB = {v: k for k, v in _PREFIX.items()}
META_KEY = "meta"
_META_LMDB_KEY = b"state"


def kv_key(db: bytes, key: str) -> str:
    """The bucket key of an LMDB record (``db`` one of the list store's databases)."""
    if db == DB_META:
        return META_KEY
    return f"{_PREFIX[db]}." + base64.urlsafe_b64encode(key.encode()).decode().rstrip("=")


def parse_kv_key(k: str) -> tuple[bytes, str] | None:
    """``(db, key)`` of a bucket key, None when it is not one of ours."""
    if k == META_KEY:
        return DB_META, ""
    prefix, _, rest = k.partition(".")
    db = _DB.get(prefix)
    if db is None or not rest:
        return None
    try:
        return db, base64.urlsafe_b64decode(rest + "=" * (-len(rest) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError):
        return None


async def put_commit(kv: Any, c: Commit) -> int:
    """Puts every record of a commit into the bucket; returns how many."""
    n = 0
    for user, rec in c.user_lists.items():
        await kv.put(kv_key(DB_USER_LISTS, user), encode_list(rec))
        n += 1
    for item, irec in c.items.items():
        await kv.put(kv_key(DB_ITEMS, item), encode_item(irec))
        n += 1
    for seg, rec in c.segments.items():
        await kv.put(kv_key(DB_SEGMENTS, seg), encode_list(rec))
        n += 1
    for ctx_key, rec in c.affinities.items():
        await kv.put(kv_key(DB_CONTEXT, affinity_key(ctx_key)), encode_list(rec))
        n += 1
    if c.fresh is not None:
        await kv.put(kv_key(DB_CONTEXT, FRESH_KEY), encode_list(c.fresh))
        n += 1
    if c.meta is not None:
        await kv.put(META_KEY, encode_meta(c.meta))
        n += 1
    return n


class Mirror:
    """Applies the bucket to a local store. ``synced`` is set once the bucket's current
    contents are in the store; ``applied`` counts records written, ``deleted`` removed."""

    def __init__(self, writer: ListWriter, bucket: str = LISTS_BUCKET, batch: int = 1000) -> None:
        self.writer = writer
        self.bucket = bucket
        self.batch = batch
        self.synced = asyncio.Event()
        self.applied = 0
        self.deleted = 0
        self.skipped = 0
        self.inflight: asyncio.Future[None] | None = None

    def _apply(self, entries: list[Any]) -> None:
        """One write transaction for a batch of entries (blocking: runs in a thread)."""
        w = self.writer
        with w.env.begin(write=True) as txn:
            for e in entries:
                where = parse_kv_key(e.key)
                if where is None:
                    self.skipped += 1
                    continue
                db, key = where
                k = _META_LMDB_KEY if db == DB_META else key.encode()
                if e.operation in ("DEL", "PURGE") or e.value is None:
                    txn.delete(k, db=w._dbs[db])
                    self.deleted += 1
                else:
                    txn.put(k, bytes(e.value), db=w._dbs[db])
                    self.applied += 1

    async def run(self, js: Any) -> None:
        """Watches the bucket until cancelled; waits for it while it does not exist."""
        import nats.errors
        import nats.js.errors

        delay = 0.2
        while True:
            try:
                kv = await js.key_value(self.bucket)
                watcher = await kv.watchall()
            except (nats.js.errors.BucketNotFoundError, nats.js.errors.NotFoundError, nats.errors.Error) as e:
                log.warning("list bucket %s not available (%s); retrying", self.bucket, e)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)
                continue
            log.info("mirroring list bucket %s", self.bucket)
            try:
                stopped = False
                while not stopped:
                    batch: list[Any] = []
                    caught_up = False  # the None marker: the bucket's contents have all arrived
                    e = await watcher.updates(timeout=None)
                    while True:
                        if e is None:
                            caught_up = True
                        elif getattr(e, "key", None) is None:  # the watcher stopped
                            stopped = True
                            break
                        else:
                            batch.append(e)
                        if len(batch) >= self.batch:
                            break
                        try:
                            e = await watcher.updates(timeout=0.005)
                        except nats.errors.TimeoutError:
                            break
                    if batch:
                        # Shielded: a cancelled mirror still finishes the transaction it began.
                        self.inflight = asyncio.ensure_future(asyncio.to_thread(self._apply, batch))
                        await asyncio.shield(self.inflight)
                    if caught_up:
                        self.synced.set()
            finally:
                try:
                    await watcher.stop()
                except Exception:  # noqa: BLE001 - the connection may be gone already
                    pass


__all__ = ["META_KEY", "Mirror", "kv_key", "parse_kv_key", "put_commit"]
