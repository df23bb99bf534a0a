"""The OpenAPI 3.1 document of the sidecar's HTTP API (served at ``/openapi.json``)."""

from __future__ import annotations

from typing import Any

from recofast_sidecar import __version__
from recofast_sidecar.params import TOKEN
from recofast_sidecar.protocol.names import (
    PATH_EVENTS,
    PATH_HEALTHZ,
    PATH_METRICS,
    PATH_OPENAPI,
    PATH_POPULAR,
    PATH_READYZ,
    PATH_RECOMMENDATIONS,
    PATH_SIMILAR,
    PATH_TRACK_JS,
    PRODUCER_KEY_HEADER,
)


def _q(name: str, schema: dict[str, Any], doc: str, required: bool = False) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": required, "schema": schema, "description": doc}


def openapi_document() -> dict[str, Any]:
    """The OpenAPI 3.1 description of every endpoint."""
    err = {"description": "bad input", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
    lst = {"description": "a ranked list", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/List"}}}}
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
           "local hour of day (context; default: the server clock in the configured time zone, for the re-rank only)"),
        _q("weather", {"type": "string", "pattern": TOKEN.pattern}, "weather label (context)"),
        _q("intent", {"type": "string", "maxLength": 128}, "session intent, e.g. search words (context)"),
    ]
    get = lambda summary, params, resp: {  # noqa: E731
        "get": {"summary": summary, "parameters": params, "responses": {"200": resp, "400": err}}
    }
    text = lambda ct: {"description": "ok", "content": {ct: {"schema": {"type": "string"}}}}  # noqa: E731
    rec = get(
        "A user's recommendations, filtered, diversified, with fallbacks",
        [
            {"name": "user_id", "in": "path", "required": True, "schema": {"type": "string"}},
            k,
            *context,
            *filters,
            _q("diversity", {"type": "number", "minimum": 0, "maximum": 1}, "MMR weight over categories"),
            _q("explore", {"type": "number", "minimum": 0, "maximum": 1}, "probability of one exploration slot"),
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
                [{"name": "item_id", "in": "path", "required": True, "schema": {"type": "string"}}, k, *context, *filters],
                lst,
            ),
            PATH_POPULAR: get(
                "Popular or trending list of a segment",
                [
                    k,
                    _q("segment", {"type": "string", "default": "all"}, "e.g. country=GB or all"),
                    _q("kind", {"type": "string", "enum": ["popular", "trending"], "default": "popular"}, "list kind"),
                    *filters,
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
                    "requestBody": {"required": True, "content": {"application/json": {"schema": {}}, "text/plain": {"schema": {}}}},
                    "responses": {
                        "202": {"description": "accepted", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Accepted"}}}},
                        "400": err,
                        "401": err,
                        "403": err,
                        "413": err,
                        "503": err,
                    },
                }
            },
            PATH_TRACK_JS: {"get": {"summary": "sendBeacon tracking snippet", "responses": {"200": text("application/javascript")}}},
            PATH_HEALTHZ: {"get": {"summary": "liveness", "responses": {"200": {"description": "alive"}}}},
            PATH_READYZ: {"get": {"summary": "readiness: the store (or a fallback list), NATS when configured, and the --sync mirror "
                                  "caught up and not failing; the body says what is not ready",
                                  "responses": {"200": {"description": "ready"}, "503": {"description": "not ready"}}}},
            PATH_METRICS: {"get": {"summary": "Prometheus metrics", "responses": {"200": text("text/plain")}}},
            PATH_OPENAPI: {"get": {"summary": "this document", "responses": {"200": {"description": "OpenAPI 3.1"}}}},
        },
        "components": {
            "schemas": {
                "Error": {"type": "object", "required": ["error"], "properties": {"error": {"type": "string"}, "status": {"type": "integer"}}},
                "List": {
                    "type": "object",
                    "required": ["rec_id", "model_version", "source", "items"],
                    "properties": {
                        "user": {"type": "string"},
                        "item": {"type": "string"},
                        "segment": {"type": "string"},
                        "rec_id": {"type": "string"},
                        "model_version": {"type": "integer"},
                        "source": {"type": "string", "enum": ["personal", "segment", "popular", "similar", "fallback"]},
                        "items": {
                            "type": "array",
                            "items": {
                                "type": "object",
                                "required": ["item", "score", "reason"],
                                "properties": {"item": {"type": "string"}, "score": {"type": "number"}, "reason": {"type": "string"}},
                            },
                        },
                    },
                },
                "Accepted": {
                    "type": "object",
                    "properties": {"accepted": {"type": "integer"}, "rejected": {"type": "integer"}, "errors": {"type": "array"}},
                },
            }
        },
    }


__all__ = ["openapi_document"]
