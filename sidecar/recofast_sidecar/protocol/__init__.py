"""The contract between the engine and the edges, one definition of each part:

- :mod:`~recofast_sidecar.protocol.names`: NATS subjects, the stream, KV buckets, LMDB
  databases, headers and HTTP paths;
- :mod:`~recofast_sidecar.protocol.events`: the event schema (v1) and its validation;
- :mod:`~recofast_sidecar.protocol.codec`: the binary records of the list store;
- :mod:`~recofast_sidecar.protocol.liststore`: its one writer and many readers (LMDB);
- :mod:`~recofast_sidecar.protocol.context`: context keys, hour bands, segment keys;
- :mod:`~recofast_sidecar.protocol.keys`: the key scheme of the KV mirror;
- :mod:`~recofast_sidecar.protocol.settings`: the layered configuration loader and the
  settings the edges take from the engine.

It imports msgspec, lmdb and numpy only: both sides, and a shop's own producers, can use it.
"""

from recofast_sidecar.protocol import (
    codec,
    context,
    events,
    keys,
    liststore,
    names,
    settings,
)

__all__ = ["codec", "context", "events", "keys", "liststore", "names", "settings"]
