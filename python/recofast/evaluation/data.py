"""Reading event logs: CSV or CSV.gz with `user_id`, `item_id`, `timestamp` and an optional
`event` column (other columns are kept as extra columns), or JSON Lines of v1 events (what
`recofast simulate` writes; their context fields and search queries become extra columns);
and item catalogues (CSV, or JSON Lines of catalog upserts)."""

from __future__ import annotations

import csv
import gzip
import io
import os
from dataclasses import dataclass, field
from datetime import datetime

import numpy as np

from recofast._core import EVENT_TYPES

REQUIRED = ("user_id", "item_id", "timestamp")


@dataclass
class EventLog:
    """Events in file order. `ts` is seconds since the epoch; `events` is None when the
    file has no `event` column."""

    users: list[str]
    #: The item of each event; None for a search (whose words are in ``extra["query"]``).
    items: list[str | None]
    ts: np.ndarray
    events: list[str] | None = None
    extra: dict[str, list[str]] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.users)


def _open_text(path: str | os.PathLike[str], what: str = "event log") -> io.TextIOBase:
    p = os.fspath(path)
    if not os.path.exists(p):
        raise FileNotFoundError(f"no such {what}: {p}")
    with open(p, "rb") as f:
        magic = f.read(2)
    if magic == b"\x1f\x8b":
        return io.TextIOWrapper(gzip.open(p, "rb"), encoding="utf-8", newline="")
    return open(p, encoding="utf-8", newline="")


def parse_time(value: str) -> float:
    """Seconds since the epoch from unix seconds, unix milliseconds or RFC 3339 text.

    >>> parse_time("1291191960"), parse_time("1291191960000"), parse_time("2010-12-01T08:26:00+00:00")
    (1291191960.0, 1291191960.0, 1291191960.0)
    """
    v = value.strip()
    try:
        x = float(v)
    except ValueError:
        try:
            return datetime.fromisoformat(v.replace("Z", "+00:00")).timestamp()
        except ValueError:
            raise ValueError(f"timestamp {value!r} is neither epoch seconds/milliseconds nor RFC 3339") from None
    return x / 1000.0 if x > 1e11 else x


def _is_jsonl(path: str | os.PathLike[str], what: str = "event log") -> bool:
    p = os.fspath(path).lower()
    if p.endswith((".jsonl", ".jsonl.gz", ".ndjson", ".ndjson.gz")):
        return True
    with _open_text(path, what) as f:
        return f.read(1) == "{"


#: Context fields of v1 events kept as extra columns of a JSON Lines log.
JSONL_CONTEXT = ("device", "country", "region", "weather", "intent")


def _read_jsonl_events(path: str | os.PathLike[str], limit: int | None) -> EventLog:
    from recofast_sidecar.protocol.events import decode_events

    users: list[str] = []
    items: list[str | None] = []
    ts: list[float] = []
    events: list[str] = []
    extra: dict[str, list[str]] = {c: [] for c in (*JSONL_CONTEXT, "query")}
    with _open_text(path) as f:
        for lineno, line in enumerate(f, start=1):
            if limit is not None and len(users) >= limit:
                break
            if not line.strip():
                continue
            ok, bad = decode_events(line.encode(), window=None)
            if bad:
                raise ValueError(f"{os.fspath(path)}, line {lineno}: {bad[0].reason}")
            for e in ok:
                t = e.ts_seconds
                if t is None:
                    raise ValueError(f"{os.fspath(path)}, line {lineno}: the event has no ts")
                users.append(e.user)
                items.append(e.item)
                ts.append(t)
                events.append(e.type)
                c = e.context
                for k in JSONL_CONTEXT:
                    extra[k].append((getattr(c, k) or "") if c is not None else "")
                extra["query"].append(e.query or "")
    return EventLog(users, items, np.asarray(ts, dtype=np.float64), events, extra)


def read_events(path: str | os.PathLike[str], limit: int | None = None, keep: tuple[str, ...] = ()) -> EventLog:
    """Reads an event log. Raises ValueError naming the line of a malformed row.

    ``keep`` names extra columns to return in ``EventLog.extra`` (a JSON Lines log always
    returns its context fields and ``query``).
    """
    if _is_jsonl(path):
        return _read_jsonl_events(path, limit)
    with _open_text(path) as f:
        reader = csv.reader(f)
        try:
            header = [h.strip() for h in next(reader)]
        except StopIteration:
            raise ValueError(f"{os.fspath(path)}: the file is empty") from None
        missing = [c for c in REQUIRED if c not in header]
        if missing:
            raise ValueError(f"{os.fspath(path)}: missing column(s) {', '.join(missing)}; found {', '.join(header)}")
        iu, ii, it = (header.index(c) for c in REQUIRED)
        ie = header.index("event") if "event" in header else None
        ix = {c: header.index(c) for c in keep if c in header}
        users: list[str] = []
        items: list[str] = []
        ts: list[float] = []
        events: list[str] | None = [] if ie is not None else None
        extra: dict[str, list[str]] = {c: [] for c in ix}
        valid = set(EVENT_TYPES)
        for lineno, row in enumerate(reader, start=2):
            if limit is not None and len(users) >= limit:
                break
            if not row:
                continue
            try:
                users.append(row[iu])
                items.append(row[ii])
                ts.append(parse_time(row[it]))
                if events is not None:
                    e = row[ie].strip()
                    if e not in valid:
                        raise ValueError(f"unknown event type {e!r}")
                    events.append(e)
                for c, j in ix.items():
                    extra[c].append(row[j])
            except (IndexError, ValueError) as e:
                raise ValueError(f"{os.fspath(path)}, line {lineno}: {e}") from None
    return EventLog(users, items, np.asarray(ts, dtype=np.float64), events, extra)


def read_items(path: str | os.PathLike[str]) -> tuple[list[str], list[str]]:
    """Item ids and texts from a CSV with `item_id` and a `description`, `title` or `text`
    column (several of them are joined)."""
    with _open_text(path, "item catalogue") as f:
        reader = csv.DictReader(f)
        fields = reader.fieldnames or []
        if "item_id" not in fields:
            raise ValueError(f"{os.fspath(path)}: missing column item_id; found {', '.join(fields)}")
        cols = [c for c in ("title", "description", "text") if c in fields]
        if not cols:
            raise ValueError(f"{os.fspath(path)}: no text column (title, description or text)")
        ids: list[str] = []
        texts: list[str] = []
        for row in reader:
            ids.append(row["item_id"])
            texts.append(" ".join(row[c] or "" for c in cols))
    return ids, texts


@dataclass
class CatalogEntry:
    """An item's text and when it entered the catalogue (None: from the start)."""

    item: str
    text: str
    ts: float | None = None


def read_catalog(path: str | os.PathLike[str]) -> list[CatalogEntry]:
    """Item texts from a CSV catalogue (see :func:`read_items`) or from JSON Lines of catalog
    upserts (category, title and text joined; ``ts`` when the item arrives), in file order."""
    if not _is_jsonl(path, "item catalogue"):
        ids, texts = read_items(path)
        return [CatalogEntry(i, t) for i, t in zip(ids, texts)]
    from recofast_sidecar.protocol.events import _seconds, decode_item_upserts

    out: list[CatalogEntry] = []
    with _open_text(path, "item catalogue") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            ok, bad = decode_item_upserts(line.encode(), window=None)
            if bad:
                raise ValueError(f"{os.fspath(path)}, line {lineno}: {bad[0].reason}")
            for u in ok:
                text = " ".join(x for x in (u.category, u.title, u.text) if x)
                out.append(CatalogEntry(u.item, text, _seconds(u.ts)))
    return out
