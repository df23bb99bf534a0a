"""The sidecar's options: :class:`SidecarConfig`, loaded in layers by
:func:`recofast_sidecar.protocol.settings.load` (the defaults, then the ``[sidecar]`` table of
a TOML file, then ``RECOFAST_SIDECAR_<OPTION>`` variables, then the command's flags).

The annotated ``sidecar/recofast-sidecar.toml`` shows every option with its default.

>>> cfg = load_config(env={"RECOFAST_SIDECAR_PORT": "9000", "RECOFAST_SIDECAR_FALLBACK_ITEMS": "a,b"})
>>> cfg.port, cfg.fallback_items, cfg.max_k
(9000, ('a', 'b'), 200)
>>> load_config(env={"RECOFAST_SIDECAR_SYNC": "true"})
Traceback (most recent call last):
...
recofast_sidecar.protocol.settings.ConfigError: sync needs nats and lmdb
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Annotated, Any, Literal

import msgspec

from recofast_sidecar.protocol.liststore import DEFAULT_MAX_MAP_SIZE
from recofast_sidecar.protocol.names import LISTS_BUCKET
from recofast_sidecar.protocol.settings import ConfigError, load

ENV_PREFIX = "RECOFAST_SIDECAR_"
TABLE = "sidecar"

REMOVED_OPTIONS = {
    "similar_scan_limit": "/similar reads the neighbours the engine exports, it never scans lists",
    "similar_cache_seconds": "/similar reads the neighbours the engine exports, nothing is cached",
}
"""Options that no longer exist, each with why: an old file that sets them still loads."""

def check_timezone(name: str) -> None:
    """Raises ValueError unless ``name`` is a time zone this machine knows."""
    from zoneinfo import ZoneInfo

    try:
        ZoneInfo(name)
    except (ValueError, OSError, KeyError) as e:
        raise ValueError(f"timezone {name!r} is not a known time zone ({type(e).__name__})") from None


class SidecarConfig(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Every option of the sidecar, with its default. The CLI flags set some of these."""

    lmdb: str | None = None
    """The list store the engine writes (a directory). None or missing: static fallback only."""
    host: str = "127.0.0.1"
    port: int = 8080
    processes: Annotated[int, msgspec.Meta(ge=1, le=256)] = 1
    """Server processes sharing the port (SO_REUSEPORT), each with its own reader and NATS
    connection. More than 1 cannot be combined with ``sync`` (one writer per store)."""
    nats: str | None = None
    """NATS URL for ``POST /v1/events`` and impressions. None: events answer 503."""
    partitions: Annotated[int, msgspec.Meta(ge=1, le=1024)] = 1
    """Events go to ``recofast.events.p<crc32(user) % partitions>``."""
    fallback_items: tuple[str, ...] = ()
    """Served (source ``fallback``) when no list can be read at all."""
    token_secret: str | None = None
    """When set, ``/v1/recommendations/{user}`` needs ``hex(HMAC-SHA256(secret, user))`` as a
    ``Bearer`` token or ``?token=``: a shopper can fetch only its own list; and ``POST
    /v1/events`` needs that token too, every event in the body for that user (or a producer
    key): a shopper can post only its own events."""
    producer_keys: tuple[str, ...] = ()
    """Keys of shop backends (and other trusted producers): with user tokens on, a request
    with one of them in the ``X-Recofast-Producer-Key`` header may post events for any user.
    Compared in constant time. Prefer ``RECOFAST_SIDECAR_PRODUCER_KEYS`` (comma-separated)."""
    cors_origins: tuple[str, ...] = ()
    """Origins allowed by CORS (``*`` for any). Empty: no CORS headers."""
    dashboard_url: str | None = None
    """Where ``GET /`` redirects (302), e.g. the engine's dashboard; None: ``/`` answers 404."""
    max_body: int = 256 * 1024
    """Largest request body in bytes (413 above)."""
    max_events: int = 1000
    """Most events in one ``POST /v1/events``."""
    max_k: int = 200
    impressions: bool = True
    """Publish every served list to ``recofast.impressions`` (when NATS is configured)."""
    impression_queue: int = 10000
    """Impressions waiting beyond this are dropped (and counted), never awaited."""
    reopen_seconds: float = 2.0
    """How often to retry opening a missing or unreadable list store."""
    publish_timeout: float = 2.0
    schema_refresh_seconds: float = 30.0
    """How often the event versions registered in the schema registry (NATS KV bucket
    ``recofast_schemas``) are re-read; posted events must be of a registered version."""
    seed: int | Literal[""] | None = None
    """Seed of the exploration draws (None, or an empty string in a file: from the OS)."""
    jetstream_domain: Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9_-]*$", max_length=64)] = ""
    """The JetStream domain of the hub, for a sidecar whose ``nats`` is a leaf node without
    JetStream of its own: its streams and KV buckets (the schema registry, the ``sync``
    mirror) are the hub's, reached through the leaf connection (``jetstream { domain: ... }``
    in the hub's nats-server configuration). Empty: the server's own JetStream."""
    sync: bool = False
    """Mirror the list store from the NATS KV bucket ``recofast_lists`` into ``lmdb`` (needs
    ``nats``); this sidecar is then the one writer of its local store."""
    sync_bucket: str = LISTS_BUCKET
    map_size: int = 1 << 30
    """Initial LMDB map size when this sidecar writes the store (``sync``); doubled as the
    store fills, up to ``max_map_size``."""
    max_map_size: int = DEFAULT_MAX_MAP_SIZE
    """Largest LMDB map the ``sync`` mirror grows its store to (64 GiB): past it the mirror
    fails (logged, counted, retried; ``/readyz`` answers 503) instead of writing."""
    context_weight: Annotated[float, msgspec.Meta(ge=0.0, le=10.0)] | None = None
    """Context re-rank of personal lists: each score times ``exp(context_weight * Σ affinity)``
    over the request's context keys (affinities exported by the engine); 0 turns it off.
    None (the default): the engine's, from the store's meta record (the model's ``w_ctx``);
    a value here overrides the engine's."""
    timezone: str | None = None
    """The shop's time zone (IANA name): a request without ``hour`` is in the hour and
    weekday of the server clock there. None (the default): the engine's ``timezone``, from
    the store's meta record; a value here overrides the engine's."""

    def __post_init__(self) -> None:
        # An empty string in a file or a variable means "not set".
        for name in ("lmdb", "nats", "token_secret", "timezone", "dashboard_url"):
            if getattr(self, name) == "":
                setattr(self, name, None)
        if self.seed == "":
            self.seed = None
        if self.sync and not (self.nats and self.lmdb):
            raise ValueError("sync needs nats and lmdb")
        if self.sync and self.processes > 1:
            raise ValueError("sync needs a single process (one writer per store)")
        if self.map_size < 1 << 16 or self.max_map_size < self.map_size:
            raise ValueError("map_size must be at least 65536 and max_map_size at least map_size")
        if any(len(key) < 16 for key in self.producer_keys):
            raise ValueError("producer_keys must be at least 16 characters each")
        if self.timezone is not None:
            check_timezone(self.timezone)
        if self.dashboard_url is not None and not self.dashboard_url.startswith(("http://", "https://", "/")):
            raise ValueError("dashboard_url must be an http(s) URL or a path")


def load_config(
    path: str | os.PathLike[str] | None = None,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> SidecarConfig:
    """The defaults, then the ``[sidecar]`` table of a TOML file (the annotated
    ``sidecar/recofast-sidecar.toml`` shows every option), then ``RECOFAST_SIDECAR_<OPTION>``
    variables of ``env`` (default :data:`os.environ`), then ``overrides`` (None values are
    ignored). Raises :class:`~recofast_sidecar.protocol.settings.ConfigError` (a ValueError)
    naming the option that is wrong."""
    return load(SidecarConfig, table=TABLE, env_prefix=ENV_PREFIX, path=path, env=env, overrides=overrides, removed=REMOVED_OPTIONS)


__all__ = ["ENV_PREFIX", "ConfigError", "SidecarConfig", "check_timezone", "load_config"]
