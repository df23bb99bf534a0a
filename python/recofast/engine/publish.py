"""``recofast publish``: replays events into the RECOFAST_EVENTS stream.

Input is v1 JSON Lines (``.jsonl``, ``.json``, optionally ``.gz``; one event a line) or a
CSV purchase log with the columns ``user_id,item_id,timestamp,invoice,quantity,unit_price,
country`` (like the bundled Online Retail log). Each CSV row becomes a v1 ``purchase``
event whose id is a hash of the row number and the row, so replaying the same file twice
is deduplicated.

Events are packed ``--pack`` to a message (a JSON array; default 100): a JetStream
consumer is limited by messages, not bytes. A message's ``Nats-Msg-Id`` is the event id
(one event) or a hash of the ids it packs, so a retried publish is stored once.

>>> rows = list(csv_events(["user_id,item_id,timestamp,invoice,quantity,unit_price,country",
...                         "17850,85123A,1291191960,536365,6,2.55,United Kingdom"]))
>>> ev = rows[0]
>>> ev.type, ev.user, ev.item, ev.ts, ev.qty, ev.context.country
('purchase', '17850', '85123A', 1291191960000, 6.0, 'United Kingdom')
>>> ev.id == next(iter(csv_events(["user_id,item_id,timestamp,invoice,quantity,unit_price,country",
...                                "17850,85123A,1291191960,536365,6,2.55,United Kingdom"]))).id
True
"""

from __future__ import annotations

import asyncio
import csv
import gzip
import hashlib
import io
import itertools
import math
import time
import zlib
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import msgspec
from recofast_sidecar.protocol import events as ev
from recofast_sidecar.protocol.names import (
    CATALOG_SUBJECT,
    EVENTS_SUBJECT_PREFIX,
    MSG_ID_HEADER,
)

CSV_COLUMNS = ("user_id", "item_id", "timestamp", "invoice", "quantity", "unit_price", "country")


class _IdOnly(msgspec.Struct):
    id: Any = None
    user: Any = None
    ts: Any = None


_id_only = msgspec.json.Decoder(_IdOnly)


def _open_text(path: Path) -> io.TextIOBase:
    if path.suffix == ".gz":
        return gzip.open(path, "rt", newline="")  # type: ignore[return-value]
    return open(path, newline="")


def csv_events(lines: Iterable[str]) -> Iterator[ev.Event]:
    """v1 purchase events from CSV lines (header first)."""
    reader = csv.reader(lines)
    header = next(reader)
    missing = [c for c in CSV_COLUMNS if c not in header]
    if missing:
        raise ValueError(f"CSV lacks the columns {', '.join(missing)}")
    col = {c: header.index(c) for c in CSV_COLUMNS}
    for n, row in enumerate(reader, 1):
        digest = hashlib.blake2b(f"{n}|{'|'.join(row)}".encode(), digest_size=10).hexdigest()
        qty = float(row[col["quantity"]]) if row[col["quantity"]] else None
        price = float(row[col["unit_price"]]) if row[col["unit_price"]] else None
        yield ev.Event(
            v=1,
            id=f"csv-{digest}",
            type="purchase" if qty is None or qty > 0 else "remove_from_cart",
            user=row[col["user_id"]],
            item=row[col["item_id"]],
            ts=int(float(row[col["timestamp"]]) * 1000),
            qty=qty,
            price=price,
            session=row[col["invoice"]] or None,
            context=ev.Context(country=row[col["country"]] or None),
        )


def read_events(path: str | Path) -> Iterator[ev.Event | bytes]:
    """Events of a file: :class:`Event` objects from a CSV log, raw JSON bytes from JSON Lines."""
    path = Path(path)
    name = path.name.removesuffix(".gz")
    if name.endswith(".csv"):
        with _open_text(path) as f:
            yield from csv_events(f)
        return
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as fb:
        for line in fb:
            line = line.strip()
            if line:
                yield line


def _raw_field(e: bytes, name: str) -> Any:
    """Field ``name`` (id, user or ts) of an event the publisher passes on undecoded; None
    when the body is no JSON object."""
    try:
        return getattr(_id_only.decode(e), name)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None


def _event_id(e: ev.Event | bytes) -> str:
    if isinstance(e, ev.Event):
        return e.id
    i = _raw_field(e, "id")
    return str(i) if i is not None else "raw-" + hashlib.blake2b(e, digest_size=10).hexdigest()


def messages(evs: Iterable[ev.Event | bytes], pack: int, stamp_now: bool = False) -> Iterator[tuple[str, bytes, int]]:
    """(Nats-Msg-Id, body, number of events) for each message."""
    it = iter(evs)
    while True:
        chunk = list(itertools.islice(it, pack))
        if not chunk:
            return
        yield _message(chunk, stamp_now)


def _message(chunk: list[ev.Event | bytes], stamp_now: bool) -> tuple[str, bytes, int]:
    if stamp_now:
        now = int(time.time() * 1000)
        chunk = [_stamp(e, now) for e in chunk]
    bodies = [e if isinstance(e, bytes) else ev.encode(e) for e in chunk]
    ids = [_event_id(e) for e in chunk]
    if len(chunk) == 1:
        return ids[0], bodies[0], 1
    digest = hashlib.blake2b("\n".join(ids).encode(), digest_size=12).hexdigest()
    return f"pack-{digest}", b"[" + b",".join(bodies) + b"]", len(chunk)


def partition_of(user: str, partitions: int) -> int:
    """The partition a user's events go to, as the sidecar publishes them:
    ``crc32(user) % partitions``.

    >>> partition_of("17850", 4), partition_of("17850", 1)
    (1, 0)
    """
    return zlib.crc32(user.encode()) % partitions if partitions > 1 else 0


def _event_user(e: ev.Event | bytes) -> str:
    if isinstance(e, ev.Event):
        return e.user
    u = _raw_field(e, "user")
    return u if isinstance(u, str) else ""


def partitioned(evs: Iterable[ev.Event | bytes], pack: int, partitions: int,
                stamp_now: bool = False) -> Iterator[tuple[str, bytes, int, str]]:
    """Messages on ``recofast.events.p<crc32(user) % partitions>``, as (msg id, body, count,
    subject): each partition's events packed ``pack`` to a message in their order, so a
    user's events stay in one partition and in order (what engines that own partitions
    need). An event the publisher cannot read a user from goes to partition 0, where the
    engine dead-letters it.

    >>> users = ["ann", "bob", "cy"]  # partitions 1, 0, 1 of 2
    >>> evs = [ev.Event(v=1, id=f"e{i}", type="view", user=users[i % 3], item="a", ts=1) for i in range(6)]
    >>> [(subject, n) for _, _, n, subject in partitioned(evs, 2, 2)]
    [('recofast.events.p1', 2), ('recofast.events.p0', 2), ('recofast.events.p1', 2)]
    """
    if partitions <= 1:
        for m in messages(evs, pack, stamp_now):
            yield (*m, subject_for(0))
        return
    buf: dict[int, list[ev.Event | bytes]] = {}
    for e in evs:
        part = partition_of(_event_user(e), partitions)
        chunk = buf.setdefault(part, [])
        chunk.append(e)
        if len(chunk) >= pack:
            yield (*_message(chunk, stamp_now), subject_for(part))
            del buf[part]
    for part, chunk in buf.items():
        yield (*_message(chunk, stamp_now), subject_for(part))


def _stamp(e: ev.Event | bytes, now_ms: int) -> ev.Event | bytes:
    if isinstance(e, bytes):
        try:
            d = msgspec.json.decode(e)
        except msgspec.DecodeError:
            return e
        if isinstance(d, dict):
            d["ts"] = now_ms
            return msgspec.json.encode(d)
        return e
    return msgspec.structs.replace(e, ts=now_ms)


def subject_for(partition: int) -> str:
    return f"{EVENTS_SUBJECT_PREFIX}.p{partition}"


async def publish(
    url: str,
    msgs: Iterable[tuple[str, bytes, int] | tuple[str, bytes, int, str]],
    rate: float | None = None,
    progress: Any = None,
    max_pending: int = 2000,
    subject: str | None = None,
) -> tuple[int, int]:
    """Publishes messages with JetStream acks (retrying a failed one with the same id);
    ``rate`` limits events per second. A message goes to its own subject (the fourth field),
    else to ``subject``, else to partition 0 (see :func:`partitioned` for the partitions of
    users). Returns (messages, events) published."""
    import nats

    n_msgs = n_events = 0
    async with await nats.connect(url, name="recofast-publish", max_reconnect_attempts=-1) as nc:
        js = nc.jetstream(publish_async_max_pending=max_pending)
        from recofast.engine.streams import ensure_streams

        await ensure_streams(js)  # so events published before the engine's first start are kept
        start = time.perf_counter()
        pending: list[tuple[Any, str, str, bytes]] = []

        async def settle() -> None:
            for fut, subject, msg_id, body in pending:
                try:
                    await fut
                except Exception:  # noqa: BLE001 — retry once synchronously, same id
                    await js.publish(subject, body, headers={MSG_ID_HEADER: msg_id}, timeout=10)
            pending.clear()

        for m in msgs:
            msg_id, body, count = m[0], m[1], m[2]
            subj = (m[3] if len(m) > 3 else None) or subject or subject_for(0)
            fut = await js.publish_async(subj, body, headers={MSG_ID_HEADER: msg_id})
            pending.append((fut, subj, msg_id, body))
            if len(pending) >= max_pending // 2:
                await settle()
            n_msgs += 1
            n_events += count
            if progress is not None:
                progress.update(count)
            if rate:
                ahead = n_events / rate - (time.perf_counter() - start)
                if ahead > 0:
                    await settle()
                    await asyncio.sleep(ahead)
        await settle()
        await nc.flush()
    return n_msgs, n_events


def catalog_messages(path: Path, pack: int = 100) -> Iterator[tuple[str, bytes, int]]:
    """Catalog upserts (JSON Lines) packed ``pack`` to a message, as (msg id, body, count).
    Each line is checked with the v1 upsert decoder first; a bad line is a ValueError
    naming it."""
    for lines in _pack(_catalog_lines(path), pack):
        body = ("[" + ",".join(x for _, x in lines) + "]").encode()
        yield "catalog-" + hashlib.sha1(body).hexdigest()[:24], body, len(lines)


def _pack(xs: list[Any], pack: int) -> Iterator[list[Any]]:
    for k in range(0, len(xs), pack):
        yield xs[k : k + pack]


def _catalog_lines(path: Path) -> list[tuple[float | None, str]]:
    """(ts in seconds or None, line) of each upsert, checked."""
    out: list[tuple[float | None, str]] = []
    with _open_text(path) as f:
        for lineno, line in enumerate(f, start=1):
            line = line.strip()
            if not line:
                continue
            ok, bad = ev.decode_item_upserts(line.encode())
            if bad or not ok:
                raise ValueError(f"{path}, line {lineno}: {bad[0].reason if bad else 'not a catalog upsert'}")
            out.append((ev._seconds(ok[0].ts), line))
    return out


def _event_seconds(e: ev.Event | bytes) -> float | None:
    if isinstance(e, ev.Event):
        return e.ts_seconds
    try:
        return ev._seconds(_raw_field(e, "ts"))
    except (TypeError, ValueError):
        return None


def interleaved(path: Path, evs: Iterable[ev.Event | bytes], pack: int, stamp_now: bool = False,
                partitions: int = 1) -> Iterator[tuple[str, bytes, int, str]]:
    """Catalog upserts and events in time order: the upserts without a time or not later
    than the first event first, then each one just before the first event after its time
    (so items arrive mid-stream as they did), as (msg id, body, count, subject). With
    ``partitions``, each ``pack`` events are spread over the partitions of their users (see
    :func:`partitioned`)."""
    lines = sorted(_catalog_lines(path), key=lambda x: -math.inf if x[0] is None else x[0])
    pos = 0

    def upserts_until(t: float | None) -> Iterator[tuple[str, bytes, int, str]]:
        nonlocal pos
        end = pos
        while end < len(lines) and (t is None or lines[end][0] is None or lines[end][0] <= t):
            end += 1
        for chunk in _pack(lines[pos:end], pack):
            body = ("[" + ",".join(x for _, x in chunk) + "]").encode()
            yield "catalog-" + hashlib.sha1(body).hexdigest()[:24], body, len(chunk), CATALOG_SUBJECT
        pos = end

    it = iter(evs)
    first = next(it, None)
    if first is None:
        yield from upserts_until(None)
        return
    yield from upserts_until(_event_seconds(first) or -math.inf)
    for chunk in _pack_iter(itertools.chain([first], it), pack):
        t = _event_seconds(chunk[0])
        if t is not None:
            yield from upserts_until(t)
        yield from partitioned(chunk, pack, partitions, stamp_now)
    yield from upserts_until(None)


def _pack_iter(it: Iterator[Any], pack: int) -> Iterator[list[Any]]:
    while chunk := list(itertools.islice(it, pack)):
        yield chunk
