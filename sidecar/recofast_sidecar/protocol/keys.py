"""The key scheme of the NATS KV bucket that mirrors the list store
(:data:`~recofast_sidecar.protocol.names.LISTS_BUCKET`), for edges on other hosts.

One entry per LMDB record: key ``u.<id>`` (a user list), ``i.<id>`` (item metadata),
``s.<segment key>`` (a popular or trending list), ``c.<key>`` (a record of the ``context``
database: ``aff:<context key>``, an affinity list, or ``fresh``), ``n.<item id>`` (an item's
neighbours, the ``similar`` database), or ``meta``; ids are unpadded base64url, so any id
makes a valid KV key. The value is the record's codec bytes, the same as in LMDB.

>>> kv_key(DB_USER_LISTS, "ü/1")
'u.w7wvMQ'
>>> parse_kv_key("u.w7wvMQ"), parse_kv_key("meta"), parse_kv_key("x.y")
((b'user_lists', 'ü/1'), (b'meta', ''), None)
"""

from __future__ import annotations

import base64
import binascii

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


__all__ = ["META_KEY", "kv_key", "parse_kv_key"]
