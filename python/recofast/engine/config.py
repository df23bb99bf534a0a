"""Engine configuration: defaults, then ``recofast.toml``, then ``RECOFAST_*`` environment
variables, then CLI flags; each overrides the one before. The annotated ``recofast.toml``
at the repository root documents every option.

>>> cfg = load_config(None, env={"RECOFAST_TOP_N": "5", "RECOFAST_MODEL__DIM": "16"})
>>> cfg.top_n, cfg.model["dim"], cfg.refresh_seconds
(5, 16, 60.0)
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any

import msgspec
from recofast_sidecar.protocol.experiments import Experiment
from recofast_sidecar.protocol.experiments import check as check_experiments
from recofast_sidecar.protocol.experiments import load as load_experiments
from recofast_sidecar.protocol.settings import ConfigError, load
from recofast_sidecar.protocol.settings import replace as _replace

ENV_PREFIX = "RECOFAST_"


class EngineConfig(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Every option of the engine, with its default (``recofast.toml`` documents each)."""

    # where things are
    nats: str = ""
    lmdb: str = "data/lmdb"
    model_dir: str = "data/models"
    nats_data_dir: str = "data/nats"
    http_port: int = 0
    # the dashboard (recofast.engine.dashboard) and the address of the HTTP server
    http_host: str = "127.0.0.1"
    admin_token: str = ""
    # the stream and the consumer
    batch_size: int = 500
    fetch_timeout: float = 0.25
    duplicate_window: float = 120.0
    stream_max_age: float = 7 * 86400.0
    stream_max_bytes: int = -1
    stream_replicas: int = 1
    # scale-out (recofast.engine.partitions): fixed partitions ("0-3", "0,2") or leases
    partitions: str = ""
    lease_partitions: int = 0
    lease_ttl: float = 3.0
    engine_id: str = ""
    # what partitioned engines share (recofast.engine.share): item deltas, checkpoints
    share_items: bool = True
    share_seconds: Annotated[float, msgspec.Meta(gt=0.0)] = 0.5
    share_max_items: Annotated[int, msgspec.Meta(ge=1)] = 100_000
    share_max_age: Annotated[float, msgspec.Meta(gt=0.0)] = 3600.0
    share_max_bytes: int = 1 << 30
    checkpoint_objects: bool = True
    # learning and lists
    top_n: int = 20
    reasons: bool = True
    timezone: str = "UTC"
    dedupe_window: int = 1_000_000
    # the door: event times accepted (epoch seconds; future tolerance in seconds)
    event_earliest: float = 946_684_800.0
    event_max_future: float = 86_400.0
    # periodic work
    refresh_seconds: float = 60.0
    refresh_chunk: int = 100
    checkpoint_keep: int = 5
    popular_n: int = 50
    trending_half_life: float = 3600.0
    context_top: int = 200
    segment_seconds: float = 1.0
    similar_top: int = 20
    similar_per_round: int = 5_000
    refresh_budget: float = 0.05
    expire_seconds: float = 60.0
    # health
    health_seconds: float = 5.0
    stall_seconds: float = 30.0
    store_retry_seconds: float = 2.0
    # LMDB
    lmdb_map_size: int = 1 << 32
    lmdb_max_map_size: int = 1 << 36
    lmdb_sync: bool = True
    # mirror every LMDB commit into the NATS KV bucket recofast_lists (for remote edges)
    publish_lists: bool = False
    # weather provider: "none", "static" (weather_table) or "http" (weather_url)
    weather: str = "static"
    weather_table: dict[str, str] = {}
    weather_url: str = ""
    weather_ttl: float = 600.0
    # the closed loop: attribution and online metrics (see recofast.engine.attribution)
    attribution: bool = True
    loop_db: str = ""
    click_window: Annotated[float, msgspec.Meta(ge=0.0)] = 1800.0
    cart_window: Annotated[float, msgspec.Meta(ge=0.0)] = 1800.0
    purchase_window: Annotated[float, msgspec.Meta(ge=0.0)] = 86400.0
    attribution_grace: Annotated[float, msgspec.Meta(ge=0.0)] = 10.0
    loop_keep_hours: Annotated[float, msgspec.Meta(gt=0.0)] = 48.0
    loop_max_impressions: Annotated[int, msgspec.Meta(ge=1000)] = 5_000_000
    loop_keep_days: Annotated[float, msgspec.Meta(gt=0.0)] = 30.0
    impressions_max_age: Annotated[float, msgspec.Meta(gt=0.0)] = 7 * 86400.0
    impressions_max_bytes: int = 1 << 30
    # drift and staleness (see recofast.engine.monitor)
    drift_detection: bool = True
    drift_delta: Annotated[float, msgspec.Meta(gt=0.0, lt=1.0)] = 0.002
    drift_mix_delta: Annotated[float, msgspec.Meta(gt=0.0, lt=1.0)] = 0.0001
    drift_min_observations: Annotated[int, msgspec.Meta(ge=1)] = 200
    drift_cooldown: Annotated[float, msgspec.Meta(ge=0.0)] = 300.0
    drift_adapt: bool = True
    drift_adapt_on_mix: bool = False
    adapt_lr_boost: Annotated[float, msgspec.Meta(gt=0.0)] = 2.0
    adapt_recency_decay: Annotated[float, msgspec.Meta(ge=0.0, le=1.0)] = 0.2
    adapt_events: Annotated[int, msgspec.Meta(ge=0)] = 5000
    staleness_guard: bool = False
    staleness_ratio: Annotated[float, msgspec.Meta(gt=0.0, lt=1.0)] = 0.7
    staleness_seconds: Annotated[float, msgspec.Meta(ge=0.0)] = 600.0
    staleness_window: Annotated[int, msgspec.Meta(ge=10)] = 200
    staleness_baseline_half_life: Annotated[float, msgspec.Meta(ge=1.0)] = 2000.0
    staleness_min_checks: Annotated[int, msgspec.Meta(ge=1)] = 50
    # experiments: the [[experiments]] of the configuration file (re-read when it changes)
    experiments: tuple[Experiment, ...] = ()
    config_file: str = ""
    # options of recofast.Recommender
    model: dict[str, Any] = msgspec.field(default_factory=lambda: {"dim": 64})

    def __post_init__(self) -> None:
        check_experiments(self.experiments)
        if self.loop_keep_hours * 3600 < max(self.click_window, self.cart_window, self.purchase_window):
            raise ConfigError("option `loop_keep_hours`: impressions must be kept at least as long as the longest attribution window")

    def replace(self, **changes: Any) -> EngineConfig:
        """A copy with ``changes``, validated like a loaded configuration."""
        return _replace(self, **changes)


def load_config(
    path: str | os.PathLike[str] | None = None,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> EngineConfig:
    """Reads the ``[engine]`` table (and ``[engine.model]``, ``[engine.weather_table]``) of
    a TOML file, then ``RECOFAST_<OPTION>`` (``RECOFAST_MODEL__<OPTION>`` for model
    options) from ``env``, then ``overrides`` (None values are ignored); the layered loader
    of :mod:`recofast_sidecar.protocol.settings`. Raises :class:`ConfigError` (a
    ``ValueError``) naming the option it cannot take. The file's top-level
    ``[[experiments]]`` become the option ``experiments``, and the file is remembered as
    ``config_file`` (the engine re-reads its experiments when it changes)."""
    extra: dict[str, Any] = {}
    if path is not None and Path(path).exists():
        extra = {"experiments": load_experiments(path), "config_file": str(path)}
    return load(EngineConfig, table="engine", env_prefix=ENV_PREFIX, path=path, env=env, overrides={**extra, **(overrides or {})})


__all__ = ["ENV_PREFIX", "ConfigError", "EngineConfig", "load_config", "load_experiments"]
