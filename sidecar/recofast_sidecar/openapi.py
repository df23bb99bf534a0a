"""The HTTP contract of the sidecar: the types of the bodies it answers with (the handlers
encode lists from them) and the OpenAPI 3.1 document (served at ``/openapi.json``), whose
schemas are generated from those types and from the event schema
(:class:`recofast_sidecar.protocol.events.Event`) by :func:`msgspec.json.schema_components`.

>>> doc = openapi_document()
>>> sorted(doc["components"]["schemas"])[:4]
['Accepted', 'Context', 'Error', 'Event']
>>> doc["components"]["schemas"]["RankedList"]["required"]
['rec_id', 'model_version', 'source', 'items']
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec

from recofast_sidecar import __version__
from recofast_sidecar.params import TOKEN
from recofast_sidecar.protocol import events as ev
from recofast_sidecar.protocol.names import (
    PATH_EVENTS,
    PATH_HEALTHZ,
    PATH_METRICS,
    PATH_OPENAPI,
    PATH_POPULAR,
    PATH_READYZ,
    PATH_RECOMMENDATIONS,
    PATH_ROOT,
    PATH_SIMILAR,
    PATH_TRACK_JS,
    PRODUCER_KEY_HEADER,
)

# -- the bodies the API answers with (encoded from these types, and described by them) ---------


class Scored(msgspec.Struct):
    """One item of a served list."""

    item: str
    score: float
    reason: str
    """Why it is there, in words: for an item of the shopper's own list, the engine's reason
    ("bought with Brass desk lamp", "popular in GB", "trending", "new", "matches your search
    'lamp'"; ``personal`` when the engine stored none); else ``similar``, ``popular in
    <segment>``, ``trending``, ``explore``, ``fallback``, ..."""
    source: str = ""
    """Where it came from: ``personal``, ``similar``, ``popular``, ``segment``, ``trending``,
    ``explore``, ``fallback`` (what the impression records)."""


class RankedList(msgspec.Struct, kw_only=True, omit_defaults=True):
    """A served list: whose (``user``, ``item`` or ``segment`` and ``kind``), its ``rec_id``
    (attribute clicks and purchases to it), the model version and the source of its first item."""

    user: str | msgspec.UnsetType = msgspec.UNSET
    item: str | msgspec.UnsetType = msgspec.UNSET
    segment: str | msgspec.UnsetType = msgspec.UNSET
    kind: Literal["popular", "trending"] | msgspec.UnsetType = msgspec.UNSET
    rec_id: str
    model_version: int
    source: Literal["personal", "segment", "popular", "similar", "fallback"]
    items: list[Scored]
    experiment: str | None = None
    """The experiment the user is in (``/v1/recommendations``; absent when none)."""
    variant: str | None = None
    """The user's variant in it: the list was served with that variant's options."""


class Error(msgspec.Struct):
    """Every 4xx and 5xx answer (a ``POST /v1/events`` with no valid event also says which
    were rejected and why, as :class:`Accepted` does)."""

    error: str
    status: int


class EventError(msgspec.Struct):
    index: int
    """The event's position in the body."""
    reason: str


class Accepted(msgspec.Struct):
    accepted: int
    rejected: int
    errors: list[EventError]


class Health(msgspec.Struct):
    status: Literal["ok"]
    version: str


class Ready(msgspec.Struct, omit_defaults=True):
    status: Literal["ready", "not ready"]
    lmdb: str | None
    """``open``, or why the store is not."""
    nats: Literal["not configured", "connected", "disconnected"]
    sync: str | msgspec.UnsetType = msgspec.UNSET
    """The ``--sync`` mirror: ``live``, ``catching up``, ``failing: ...`` or ``stopped: ...``."""


_SCHEMAS = "#/components/schemas/{name}"


def _components() -> tuple[dict[str, Any], dict[str, Any]]:
    """The request body schema of ``POST /v1/events`` and every component, from the types.
    A body is answered 202 when at least one of its events is valid (the others are rejected
    one by one), so an array needs to *contain* an event, not to hold only events."""
    (event, *_), comps = msgspec.json.schema_components([ev.Event, RankedList, Error, Accepted, Health, Ready], ref_template=_SCHEMAS)
    some = {"type": "array", "contains": event}
    body = {"anyOf": [event, some, {"type": "object", "required": ["events"], "properties": {"events": some}}]}
    return body, comps


def _ref(name: str) -> dict[str, Any]:
    return {"$ref": _SCHEMAS.format(name=name)}


def _json(description: str, name: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": _ref(name)}}}


def _q(name: str, schema: dict[str, Any], doc: str, required: bool = False) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": required, "schema": schema, "description": doc}


def openapi_document() -> dict[str, Any]:
    """The OpenAPI 3.1 description of every endpoint (bodies from the types above and
    :class:`recofast_sidecar.protocol.events.Event`)."""
    events_body, schemas = _components()
    err = _json("bad input", "Error")
    lst = _json("a ranked list", "RankedList")
    k = _q("k", {"type": "integer", "minimum": 1, "maximum": 200, "default": 10}, "list length")
    filters = [
        _q("category", {"type": "string", "maxLength": 256}, "only items of this category"),
        _q("min_price", {"type": "number", "minimum": 0}, "only items at or above this price"),
        _q("max_price", {"type": "number", "minimum": 0}, "only items at or below this price"),
        _q("exclude", {"type": "string"}, "comma-separated item ids to leave out"),
    ]
    context = [
        _q("device", {"type": "string", "pattern": TOKEN.pattern}, "mobile, tablet, desktop, ... (context; unknown values are ignored)"),
        _q("country", {"type": "string", "pattern": "^[A-Za-z]{2,3}$"}, "country code (context)"),
        _q("hour", {"type": "integer", "minimum": 0, "maximum": 23},
           "local hour of day (context; default: the server clock in the shop's time zone, for the re-rank only)"),
        _q("weather", {"type": "string", "pattern": TOKEN.pattern}, "weather label (context)"),
        _q("intent", {"type": "string", "maxLength": 128}, "session intent, e.g. search words (context)"),
    ]

    asker = _q("user", {"type": "string", "maxLength": 512}, "who asks (attributes clicks and purchases from this list to the user)")

    def get(summary: str, params: list[dict[str, Any]], resp: dict[str, Any]) -> dict[str, Any]:
        return {"get": {"summary": summary, "parameters": params, "responses": {"200": resp, "400": err}}}

    def text(ct: str) -> dict[str, Any]:
        return {"description": "ok", "content": {ct: {"schema": {"type": "string"}}}}

    rec = get(
        "A user's recommendations, filtered, diversified, with fallbacks",
        [
            {"name": "user_id", "in": "path", "required": True, "schema": {"type": "string"}},
            k,
            *context,
            *filters,
            _q("diversity", {"type": "number", "minimum": 0, "maximum": 1}, "MMR weight over categories"),
            _q("explore", {"type": "number", "minimum": 0, "maximum": 1}, "probability of one exploration slot"),
            # An experiment's variant overrides diversity, explore, the context weight and k.
            _q("token", {"type": "string"}, "HMAC user token (or an Authorization: Bearer header)"),
        ],
        lst,
    )
    rec["get"]["responses"]["401"] = err
    rec["get"]["responses"]["403"] = err
    return {
        "openapi": "3.1.0",
        "info": {"title": "recofast sidecar", "version": __version__},
        "paths": {
            PATH_RECOMMENDATIONS: rec,
            PATH_SIMILAR: get(
                "Items similar to an item (the neighbours the engine exports), filled from the segment's popular list",
                [{"name": "item_id", "in": "path", "required": True, "schema": {"type": "string"}}, k, *context, *filters, asker],
                lst,
            ),
            PATH_POPULAR: get(
                "Popular or trending list of a segment",
                [
                    k,
                    _q("segment", {"type": "string", "default": "all"}, "e.g. country=GB or all"),
                    _q("kind", {"type": "string", "enum": ["popular", "trending"], "default": "popular"}, "list kind"),
                    *filters,
                    asker,
                ],
                lst,
            ),
            PATH_EVENTS: {
                "post": {
                    "summary": "One event v1, an array, or {events: [...]}; validated and published to NATS",
                    "description": "With user tokens on (token_secret), the shopper's token is required and every event "
                    "must be for that user (403 otherwise, 401 without a token), unless the request carries a producer key.",
                    "parameters": [
                        _q("token", {"type": "string"}, "HMAC user token of the events' user (or an Authorization: Bearer header)"),
                        {"name": PRODUCER_KEY_HEADER, "in": "header", "required": False, "schema": {"type": "string"},
                         "description": "a shop backend's producer key (option producer_keys): may post events for any user"},
                    ],
                    "requestBody": {
                        "required": True,
                        "content": {"application/json": {"schema": events_body}, "text/plain": {"schema": {}}},
                    },
                    "responses": {
                        "202": _json("accepted", "Accepted"),
                        "400": err,
                        "401": err,
                        "403": err,
                        "413": err,
                        "503": err,
                    },
                }
            },
            PATH_ROOT: {"get": {"summary": "a redirect to the dashboard (option dashboard_url), 404 when it is not set",
                                "responses": {"302": {"description": "to the dashboard"}, "404": err}}},
            PATH_TRACK_JS: {"get": {"summary": "sendBeacon tracking snippet", "responses": {"200": text("application/javascript")}}},
            PATH_HEALTHZ: {"get": {"summary": "liveness", "responses": {"200": _json("alive", "Health")}}},
            PATH_READYZ: {"get": {"summary": "readiness: the store (or a fallback list), NATS when configured, and the --sync mirror "
                                  "caught up and not failing; the body says what is not ready",
                                  "responses": {"200": _json("ready", "Ready"), "503": _json("not ready", "Ready")}}},
            PATH_METRICS: {"get": {"summary": "Prometheus metrics", "responses": {"200": text("text/plain")}}},
            PATH_OPENAPI: {"get": {"summary": "this document", "responses": {"200": {"description": "OpenAPI 3.1"}}}},
        },
        "components": {"schemas": schemas},
    }


__all__ = ["Accepted", "Error", "EventError", "Health", "RankedList", "Ready", "Scored", "openapi_document"]
