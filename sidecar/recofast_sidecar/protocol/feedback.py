"""The impression record: what the sidecar tells the engine about every list it served, so
clicks, add-to-carts and purchases can be attributed to it (by its ``rec_id``, or by a window
to the last list that showed the item) and measured per source, endpoint, variant and position.

The sidecar publishes JSON arrays of records to ``recofast.impressions`` (the stream
``RECOFAST_IMPRESSIONS``), up to :data:`BATCH` to a message, each message with a
``Nats-Msg-Id`` so a retried publish is stored once.

>>> rec = Impression(rec_id="r1", ts=1_700_000_000_000, endpoint="recommendations", source="personal",
...                  items=["a", "b"], sources=["personal", "explore"], user="u1", explore=0.1, explored=True)
>>> decode_batch(encode_batch([rec])) == [rec]
True
>>> [source_of(r) for r in ("personal", "popular in all", "popular in mobile|GB", "explore", "fresh", "trending in all")]
['personal', 'popular', 'segment', 'explore', 'explore', 'trending']
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

BATCH = 100
"""Most impression records in one message."""
VERSION = 1
MAX_ITEMS = 1000
SOURCES = ("personal", "segment", "popular", "trending", "similar", "explore", "fallback")
"""Where a shown item came from: the user's own list, the popular list of the request's
segment or of the whole shop, the trending list, the item's neighbours, the exploration slot,
or the static fallback list."""
ENDPOINTS = ("recommendations", "similar", "popular")

_Id = Annotated[str, msgspec.Meta(max_length=512)]
Source = Literal["personal", "segment", "popular", "trending", "similar", "explore", "fallback"]
_Name = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9_.\-]{1,64}$")]


class Impression(msgspec.Struct, kw_only=True, omit_defaults=True, frozen=True):
    """One served list."""

    rec_id: _Id
    ts: Annotated[int, msgspec.Meta(ge=0, le=1 << 53)]
    """When it was served, epoch milliseconds (the sidecar's clock)."""
    endpoint: Literal["recommendations", "similar", "popular"]
    source: Source
    """The source of the list's first item."""
    items: Annotated[list[_Id], msgspec.Meta(max_length=MAX_ITEMS)]
    sources: Annotated[list[Source], msgspec.Meta(max_length=MAX_ITEMS)] = []
    """Each item's source (:data:`SOURCES`), in the order shown."""
    v: int = VERSION
    user: _Id | None = None
    """Whose list it is (``/v1/recommendations``), or who asked (``?user=`` on the others)."""
    item: _Id | None = None
    segment: Annotated[str, msgspec.Meta(max_length=1024)] | None = None
    model_version: int = 0
    experiment: _Name | None = None
    variant: _Name | None = None
    explore: Annotated[float, msgspec.Meta(ge=0.0, le=1.0)] = 0.0
    """The exploration rate in force for this list (its propensity to get a slot)."""
    explored: bool = False
    """Whether the exploration draw for this list came up (the logged action)."""


_ENC = msgspec.json.Encoder()
_DEC = msgspec.json.Decoder(list[Impression])


def encode_batch(recs: list[Impression]) -> bytes:
    return _ENC.encode(recs)


def decode_batch(data: bytes) -> list[Impression]:
    """The records of one message; raises :class:`msgspec.DecodeError` or
    :class:`msgspec.ValidationError` on a malformed one."""
    return _DEC.decode(data)


def source_of(reason: str) -> str:
    """The source (:data:`SOURCES`) of a served item from its reason."""
    if reason in ("personal", "similar", "explore", "fallback"):
        return reason
    if reason == "fresh":
        return "explore"
    if reason.startswith("popular in "):
        return "popular" if reason == "popular in all" else "segment"
    if reason.startswith("trending"):
        return "trending"
    return "fallback"


__all__ = ["BATCH", "ENDPOINTS", "MAX_ITEMS", "SOURCES", "VERSION", "Impression", "decode_batch", "encode_batch", "source_of"]
