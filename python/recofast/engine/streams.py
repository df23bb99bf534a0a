"""The engine's streams: the event stream and the dead-letter stream (created or checked at
start), and the schema registry (a NATS KV bucket) that ``recofast schema check`` reads.

The engine registers the event versions it accepts under ``event.v<N>`` (the value is the
version's JSON Schema); a producer checks a file of events (JSON Lines) against the
versions the registry holds, or against this package's versions without ``--nats``.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import logging
import time
from collections.abc import Iterator
from pathlib import Path

from recofast_sidecar.protocol import events
from recofast_sidecar.protocol.names import (
    CONSUMER,
    DLQ_REASON_HEADER,
    DLQ_SEQ_HEADER,
    DLQ_STREAM,
    DLQ_SUBJECT,
    EVENTS_SUBJECTS,
    IMPRESSIONS_STREAM,
    IMPRESSIONS_SUBJECT,
    MSG_ID_HEADER,
    SCHEMA_BUCKET,
    SCHEMA_KEY_PREFIX,
    STREAM,
)

from recofast.engine.config import EngineConfig

log = logging.getLogger("recofast.engine")

_KEY = SCHEMA_KEY_PREFIX + "{}"


async def _bucket(js):  # noqa: ANN001, ANN202
    from nats.js.errors import BucketNotFoundError

    try:
        return await js.key_value(SCHEMA_BUCKET)
    except BucketNotFoundError:
        return await js.create_key_value(bucket=SCHEMA_BUCKET, history=1, description="recofast event schema versions")


async def register_versions(js, versions: tuple[int, ...] = events.ACCEPTED_VERSIONS) -> None:  # noqa: ANN001
    """Puts each accepted version and its JSON Schema into the registry bucket."""
    kv = await _bucket(js)
    schema = json.dumps(events.json_schema(), sort_keys=True).encode()
    for v in versions:
        await kv.put(_KEY.format(v), schema)


async def registered_versions(js) -> tuple[int, ...]:  # noqa: ANN001
    """The versions in the registry (empty if the bucket is empty)."""
    from nats.js.errors import NoKeysError

    kv = await _bucket(js)
    try:
        keys = await kv.keys()
    except NoKeysError:
        return ()
    out = []
    for k in keys:
        if k.startswith("event.v") and k[len("event.v") :].isdigit():
            out.append(int(k[len("event.v") :]))
    return tuple(sorted(out))


def _lines(path: Path) -> Iterator[bytes]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        yield from f


def check_file(path: str | Path, accepted: tuple[int, ...]) -> tuple[int, list[tuple[int, str]]]:
    """(events that pass, [(line number, reason)] of those that fail). A line may hold one
    event or a JSON array of events."""
    ok_n = 0
    bad: list[tuple[int, str]] = []
    for n, line in enumerate(_lines(Path(path)), 1):
        line = line.strip()
        if not line:
            continue
        ok, rejected = events.decode_events(line, accepted)
        ok_n += len(ok)
        for r in rejected:
            bad.append((n, r.reason if not line.startswith(b"[") else f"[{r.index}] {r.reason}"))
    return ok_n, bad


async def registry_versions(url: str) -> tuple[int, ...]:
    import nats

    async with await nats.connect(url, connect_timeout=5, max_reconnect_attempts=1) as nc:
        versions = await registered_versions(nc.jetstream())
        await nc.drain()
        return versions


async def wait_streams(url: str, cfg: EngineConfig | None = None, timeout: float = 30.0) -> None:
    """Until the streams exist (created by :func:`ensure_streams` with ``cfg``'s replicas) and
    the event stream has a leader: a new JetStream cluster elects its meta leader in the first
    seconds after its nodes start, and refuses to create streams until then. Raises the last
    error after ``timeout`` seconds."""
    import nats

    deadline = time.monotonic() + timeout
    async with await nats.connect(url, connect_timeout=5, max_reconnect_attempts=-1) as nc:
        js = nc.jetstream()
        while True:
            try:
                await ensure_streams(js, cfg)
                info = await js.stream_info(STREAM)
                if info.cluster is None or info.cluster.leader:
                    return
            except Exception:  # noqa: BLE001 - not ready yet
                if time.monotonic() > deadline:
                    raise
            if time.monotonic() > deadline:
                raise TimeoutError(f"stream {STREAM} has no leader after {timeout:.0f} s")
            await asyncio.sleep(0.2)


def _limits_stream(name: str, subject: str, cfg: EngineConfig, max_age: float, max_bytes: int):  # noqa: ANN202
    """A file-backed stream with limits retention (the oldest messages go first)."""
    from nats.js import api

    return api.StreamConfig(
        name=name, subjects=[subject], retention=api.RetentionPolicy.LIMITS, storage=api.StorageType.FILE,
        duplicate_window=cfg.duplicate_window, max_age=max_age, max_bytes=max_bytes, discard=api.DiscardPolicy.OLD,
        num_replicas=max(1, cfg.stream_replicas),
    )


async def ensure_streams(js, cfg: EngineConfig | None = None) -> None:  # noqa: ANN001
    """Creates the event stream, the DLQ stream and the impressions stream if missing;
    checks an existing event stream."""
    cfg = EngineConfig() if cfg is None else cfg
    from nats.js import api
    from nats.js.errors import NotFoundError

    want = _limits_stream(STREAM, EVENTS_SUBJECTS, cfg, cfg.stream_max_age, cfg.stream_max_bytes)
    try:
        info = await js.stream_info(STREAM)
        if EVENTS_SUBJECTS not in (info.config.subjects or []):
            raise RuntimeError(f"stream {STREAM} exists without subject {EVENTS_SUBJECTS}: {info.config.subjects}")
        if info.config.duplicate_window != cfg.duplicate_window:
            await js.update_stream(info.config.evolve(duplicate_window=cfg.duplicate_window))
    except NotFoundError:
        await js.add_stream(want)
    try:
        await js.stream_info(DLQ_STREAM)
    except NotFoundError:
        await js.add_stream(name=DLQ_STREAM, subjects=[DLQ_SUBJECT], storage=api.StorageType.FILE, duplicate_window=cfg.duplicate_window,
                            num_replicas=max(1, cfg.stream_replicas))
    imps = _limits_stream(IMPRESSIONS_STREAM, IMPRESSIONS_SUBJECT, cfg, cfg.impressions_max_age, cfg.impressions_max_bytes)
    try:
        info = await js.stream_info(IMPRESSIONS_STREAM)
        if (info.config.max_age, info.config.max_bytes) != (imps.max_age, imps.max_bytes):
            await js.update_stream(info.config.evolve(max_age=imps.max_age, max_bytes=imps.max_bytes))
    except NotFoundError:
        await js.add_stream(imps)


async def unsubscribe_quietly(sub) -> None:  # noqa: ANN001
    """Unsubscribes ``sub`` when there is one, ignoring a connection already gone."""
    if sub is None:
        return
    try:
        await sub.unsubscribe()
    except Exception:  # noqa: BLE001 - the connection may be gone already
        pass


async def bind_durable(js, stream: str, durable: str, after_seq: int, quiet: bool = False):  # noqa: ANN001, ANN201
    """(Re)creates a durable pull consumer of ``stream`` that starts right after
    ``after_seq`` (ack policy *all*; at the stream's first message when that is later) and
    returns the subscription bound to it. The engine's position is in its checkpoints, the
    closed loop's in its own database."""
    from nats.js import api
    from nats.js.errors import NotFoundError

    try:
        await js.delete_consumer(stream, durable)
    except NotFoundError:
        pass
    info = await js.stream_info(stream)
    start = after_seq + 1
    if info.state.first_seq and start < info.state.first_seq:
        if after_seq and info.state.messages and not quiet:
            log.warning("%s starts at seq %d, after the loop's %d: what is in between is not counted", stream, info.state.first_seq, start)
        start = info.state.first_seq
    await js.add_consumer(stream, api.ConsumerConfig(
        durable_name=durable,
        deliver_policy=api.DeliverPolicy.BY_START_SEQUENCE,
        opt_start_seq=max(start, 1),
        ack_policy=api.AckPolicy.ALL,
        ack_wait=60.0,
        max_ack_pending=-1,
        max_waiting=16,
    ))
    return await js.pull_subscribe_bind(durable=durable, stream=stream)


async def bind_consumer(js, applied_seq: int):  # noqa: ANN001, ANN201
    """(Re)creates the engine's durable consumer to start right after ``applied_seq``;
    returns the pull subscription bound to it."""
    info = await js.stream_info(STREAM)
    if info.state.last_seq and applied_seq > info.state.last_seq:
        raise RuntimeError(
            f"checkpoint is at stream seq {applied_seq} but {STREAM} ends at {info.state.last_seq}: "
            "was the stream recreated? Start from an empty model dir or roll back."
        )
    if info.state.first_seq and applied_seq + 1 < info.state.first_seq and info.state.messages:
        log.warning("stream starts at seq %d, after the checkpoint's %d: events in between are lost", info.state.first_seq, applied_seq + 1)
    return await bind_durable(js, STREAM, CONSUMER, applied_seq, quiet=True)


async def publish_dlq(js, dlq: list[tuple[int, int, str, bytes]]) -> None:  # noqa: ANN001
    """Publishes rejected events ``(stream seq, index, reason, raw)`` to the dead-letter subject."""
    futs = []
    for seq, index, reason, raw in dlq:
        headers = {DLQ_REASON_HEADER: reason[:1000].replace("\n", " "), DLQ_SEQ_HEADER: str(seq), MSG_ID_HEADER: f"dlq-{seq}-{index}"}
        futs.append(js.publish(DLQ_SUBJECT, raw, headers=headers))
    for r in await asyncio.gather(*futs, return_exceptions=True):
        if isinstance(r, Exception):
            log.error("could not publish to %s: %s", DLQ_SUBJECT, r)


__all__ = ["bind_consumer", "bind_durable", "check_file", "ensure_streams", "publish_dlq", "register_versions", "registered_versions", "registry_versions", "unsubscribe_quietly", "wait_streams"]
