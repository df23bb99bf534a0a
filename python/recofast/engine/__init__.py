"""The engine service (``recofast serve``): NATS JetStream in, learning, LMDB lists out,
checkpoints. The loop is in :mod:`~recofast.engine.service`; beside it, one module per job:
:mod:`~recofast.engine.config` (options), :mod:`~recofast.engine.streams` (the streams and
the schema registry), :mod:`~recofast.engine.enrich` (context of events),
:mod:`~recofast.engine.aggregates` (dedupe window, popular and trending lists),
:mod:`~recofast.engine.checkpoints` (versions and rollback), :mod:`~recofast.engine.erasure`
(forget requests), :mod:`~recofast.engine.metrics` (Prometheus),
:mod:`~recofast.engine.publish` (a producer that replays logs),
:mod:`~recofast.engine.stats` (the statistics of experiments and of exploration),
:mod:`~recofast.engine.natsserver` (an embedded nats-server) and
:mod:`~recofast.engine.stack` (``recofast up``)."""

from recofast.engine.config import EngineConfig, load_config
from recofast.engine.service import Engine, create_app, serve

__all__ = ["Engine", "EngineConfig", "create_app", "load_config", "serve"]
