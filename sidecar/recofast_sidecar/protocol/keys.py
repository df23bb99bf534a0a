"""The key scheme of the NATS KV bucket that mirrors the list store
(:data:`~recofast_sidecar.protocol.names.LISTS_BUCKET`), for edges on other hosts.

One entry per LMDB record: key ``u.<id>`` (a user list), ``i.<id>`` (item metadata),
``s.<segment key>`` (a popular or trending list), ``c.<key>`` (a record of the ``context``
database: ``aff:<context key>``, an affinity list, or ``fresh``), ``n.<item id>`` (an item's
neighbours, the ``similar`` database), or ``meta``; ids are unpadded base64url, so any id
makes a valid KV key. The value is the record's codec bytes, the same as in LMDB;
:func:`put_commit` writes a commit's records that way.

>>> kv_key(DB_USER_LISTS, "ü/1")
'u.w7wvMQ'
>>> parse_kv_key("u.w7wvMQ"), parse_kv_key("meta"), parse_kv_key("x.y")
((b'user_lists', 'ü/1'), (b'meta', ''), None)
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

from recofast_sidecar.protocol.codec import (
    FRESH_KEY,
    Commit,
    affinity_key,
    encode_item,
    encode_list,
    encode_meta,
)
from recofast_sidecar.protocol.names import (
    DB_CONTEXT,
    DB_ITEMS,
    DB_META,
    DB_SEGMENTS,
    DB_SIMILAR,
    DB_USER_LISTS,
)

_PREFIX = {DB_USER_LISTS: "u", DB_ITEMS: "i", DB_SEGMENTS: "s", DB_CONTEXT: "c", DB_SIMILAR: "n"}
_DB = {v: k for k, v in _PREFIX.items()}
META_KEY = "meta"
"""The bucket key of the meta record."""


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
    """Puts every record of a commit into the bucket and deletes the keys of its
    ``delete_users``; returns how many keys it wrote or deleted."""
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
    for item, rec in c.similar.items():
        await kv.put(kv_key(DB_SIMILAR, item), encode_list(rec))
        n += 1
    for user in c.delete_users:  # after the puts, as the writer applies them
        await kv.delete(kv_key(DB_USER_LISTS, user))
        n += 1
    if c.meta is not None:
        await kv.put(META_KEY, encode_meta(c.meta))
        n += 1
    return n


__all__ = ["META_KEY", "kv_key", "parse_kv_key", "put_commit"]
