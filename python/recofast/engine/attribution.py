"""Attribution and online metrics: the closed loop's state, in SQLite (the standard library's),
so it survives restarts and is counted exactly once.

The engine reads two streams for it, each through a durable consumer of its own: the
impressions the sidecars publish (every served list, :mod:`recofast_sidecar.protocol.feedback`)
and the event stream (a second reader, apart from learning). Each batch of messages is
applied in one SQLite transaction together with the stream sequence it reaches, and acked
after the commit; a message at or below the stored sequence is skipped, so a crash anywhere
(even a SIGKILL between commit and ack) neither loses nor double counts anything.

What is counted:

- An **impression** is one served list: ``lists`` per list, ``shown`` per item in it.
- A ``click`` (or a ``view`` carrying a ``rec_id``), an ``add_to_cart`` and a ``purchase`` are
  **attributed** to a served list: by the event's ``rec_id`` when it has one (the list must
  have shown the item, to the same user when the list names one); otherwise to the latest
  list shown to that user that held the item, at most ``click_window`` (``cart_window``,
  ``purchase_window``) seconds before the event. A ``rec_id`` not (yet) known waits
  ``grace`` seconds for its impression, then falls back to the window. Each list is credited
  at most once per item and kind (so CTR is at most 1); revenue is price × quantity of each
  attributed purchase event (an event id is counted once).
- The **live hit rate**: for each list served by ``/v1/recommendations``, whether the user's
  next item event (view, click, add-to-cart or purchase, within ``click_window``) was an item
  of that list.

Roll-ups: per minute and endpoint, source, experiment and variant (``minutes``; a list's
counts go to the source of its first item, an item's to its own source); per hour and
position (``positions``); per experiment, variant and user (``units``, the sums the
experiments' statistics need); and totals that are never pruned (``totals``, what the
Prometheus counters read). Impressions are kept ``keep_hours`` for window attribution and
the off-policy estimates, at most ``max_impressions`` of them.
"""

from __future__ import annotations

import contextlib
import json
import logging
import sqlite3
import threading
import time
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
from recofast_sidecar.protocol import events as ev
from recofast_sidecar.protocol.feedback import Impression, decode_batch

from recofast.errors import LoopStoreError

log = logging.getLogger("recofast.engine")

FORMAT = 1
MAX_POSITION = 99
"""Positions from this one on are counted together."""
CLICK_KINDS = {"click": "clicks", "view": "clicks", "add_to_cart": "carts", "purchase": "purchases"}
ITEM_EVENTS = ("view", "click", "add_to_cart", "purchase")
DIMENSIONS = ("endpoint", "source", "experiment", "variant")
"""What the roll-ups are broken down by (besides time, and position in ``positions``)."""
COUNTS = ("lists", "shown", "clicks", "carts", "purchases", "revenue", "hit_checks", "hits")
"""The counted quantities of every roll-up row."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS position (name TEXT PRIMARY KEY, seq INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS impressions (
    rec_id TEXT PRIMARY KEY, ts INTEGER NOT NULL, user TEXT, endpoint TEXT NOT NULL, source TEXT NOT NULL,
    experiment TEXT NOT NULL, variant TEXT NOT NULL, items TEXT NOT NULL, sources TEXT NOT NULL,
    explore REAL NOT NULL, explored INTEGER NOT NULL, clicks INTEGER NOT NULL DEFAULT 0,
    checked INTEGER NOT NULL DEFAULT 0);
CREATE INDEX IF NOT EXISTS impressions_user ON impressions (user, ts);
CREATE INDEX IF NOT EXISTS impressions_ts ON impressions (ts);
CREATE TABLE IF NOT EXISTS credited (rec_id TEXT NOT NULL, item TEXT NOT NULL, kind TEXT NOT NULL, ts INTEGER NOT NULL,
    PRIMARY KEY (rec_id, item, kind)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS credited_ts ON credited (ts);
CREATE TABLE IF NOT EXISTS counted_events (id TEXT PRIMARY KEY, ts INTEGER NOT NULL) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS counted_events_ts ON counted_events (ts);
CREATE TABLE IF NOT EXISTS pending (seq INTEGER NOT NULL, idx INTEGER NOT NULL, user TEXT NOT NULL, deadline REAL NOT NULL,
    event BLOB NOT NULL, PRIMARY KEY (seq, idx));
CREATE TABLE IF NOT EXISTS minutes (minute INTEGER NOT NULL, endpoint TEXT NOT NULL, source TEXT NOT NULL,
    experiment TEXT NOT NULL, variant TEXT NOT NULL, {counts},
    PRIMARY KEY (minute, endpoint, source, experiment, variant)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS positions (hour INTEGER NOT NULL, endpoint TEXT NOT NULL, experiment TEXT NOT NULL,
    variant TEXT NOT NULL, position INTEGER NOT NULL, {counts},
    PRIMARY KEY (hour, endpoint, experiment, variant, position)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS totals (endpoint TEXT NOT NULL, source TEXT NOT NULL, experiment TEXT NOT NULL,
    variant TEXT NOT NULL, {counts}, PRIMARY KEY (endpoint, source, experiment, variant)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS units (experiment TEXT NOT NULL, variant TEXT NOT NULL, user TEXT NOT NULL, {counts},
    PRIMARY KEY (experiment, variant, user)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS unattributed (kind TEXT NOT NULL, reason TEXT NOT NULL, n INTEGER NOT NULL,
    PRIMARY KEY (kind, reason)) WITHOUT ROWID;
""".replace("{counts}", ", ".join(f"{c} {'REAL' if c == 'revenue' else 'INTEGER'} NOT NULL DEFAULT 0" for c in COUNTS))

IMPRESSIONS, EVENTS = "impressions", "events"
MAX_ARMS = 1024
"""Most (experiment, variant) pairs the roll-ups keep apart; impressions naming more (a
misconfigured or hostile publisher) are counted under experiment and variant ``other``, so the tables and
the Prometheus labels stay bounded."""


@dataclass(frozen=True)
class Windows:
    """How long after a list a click, an add-to-cart or a purchase is attributed to it
    without a ``rec_id`` (seconds), and how long an unknown ``rec_id`` waits for its
    impression (wall-clock seconds)."""

    click: float = 1800.0
    cart: float = 1800.0
    purchase: float = 86400.0
    grace: float = 10.0
    skew: float = 5.0
    """An event up to this many seconds *before* a list may still be its outcome (clocks of
    the sidecar and the shopper's device differ)."""

    def of(self, etype: str) -> float:
        return self.purchase if etype == "purchase" else self.cart if etype == "add_to_cart" else self.click


@dataclass
class _Imp:
    rec_id: str
    ts: int
    user: str | None
    endpoint: str
    source: str
    experiment: str
    variant: str
    items: list[str]
    sources: list[str]


@dataclass
class _Batch:
    """Counts gathered over one batch, written in one go."""

    minutes: defaultdict[tuple, list[float]] = field(default_factory=lambda: defaultdict(lambda: [0.0] * len(COUNTS)))
    positions: defaultdict[tuple, list[float]] = field(default_factory=lambda: defaultdict(lambda: [0.0] * len(COUNTS)))
    totals: defaultdict[tuple, list[float]] = field(default_factory=lambda: defaultdict(lambda: [0.0] * len(COUNTS)))
    units: defaultdict[tuple, list[float]] = field(default_factory=lambda: defaultdict(lambda: [0.0] * len(COUNTS)))
    unattributed: defaultdict[tuple, int] = field(default_factory=lambda: defaultdict(int))
    hits: list[int] = field(default_factory=list)  # the hit checks of the batch, in order (1 hit, 0 miss)

    def add(self, ts_ms: int, endpoint: str, source: str, exp: str, var: str, what: str, n: float = 1.0,
            position: int | None = None, user: str | None = None) -> None:
        i = _INDEX[what]
        self.minutes[(ts_ms // 60_000, endpoint, source, exp, var)][i] += n
        self.totals[(endpoint, source, exp, var)][i] += n
        if position is not None:
            self.positions[(ts_ms // 3_600_000, endpoint, exp, var, min(position, MAX_POSITION))][i] += n
        if exp and user is not None:
            self.units[(exp, var, user)][i] += n


_INDEX = {c: i for i, c in enumerate(COUNTS)}


def _upsert(table: str, keys: Sequence[str]) -> str:
    cols = [*keys, *COUNTS]
    sets = ", ".join(f"{c} = {c} + excluded.{c}" for c in COUNTS)
    return (f"INSERT INTO {table} ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))}) "
            f"ON CONFLICT ({', '.join(keys)}) DO UPDATE SET {sets}")


_UPSERT_MINUTES = _upsert("minutes", ("minute", "endpoint", "source", "experiment", "variant"))
_UPSERT_POSITIONS = _upsert("positions", ("hour", "endpoint", "experiment", "variant", "position"))
_UPSERT_TOTALS = _upsert("totals", ("endpoint", "source", "experiment", "variant"))
_UPSERT_UNITS = _upsert("units", ("experiment", "variant", "user"))


class LoopStore:
    """The SQLite file of the closed loop. Methods run in one thread at a time (the engine
    calls them from worker threads, one after another); :meth:`read` opens a second,
    read-only connection for reports."""

    def __init__(self, path: str | Path, windows: Windows = Windows(), keep_hours: float = 48.0,
                 max_impressions: int = 5_000_000, keep_days: float = 30.0) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.windows = windows
        self.keep_hours = keep_hours
        self.max_impressions = max_impressions
        self.keep_days = keep_days
        self._lock = threading.Lock()
        self._new_hits: list[int] = []
        try:
            self.db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=NORMAL")  # WAL: a process crash loses no commit
            self.db.executescript(_SCHEMA)
            row = self.db.execute("SELECT value FROM meta WHERE key = 'format'").fetchone()
        except sqlite3.DatabaseError as e:
            raise LoopStoreError(f"{self.path}: not a usable loop database ({e})") from None
        self._arms = {(e, v) for e, v in self.db.execute("SELECT DISTINCT experiment, variant FROM totals")} if row is not None else set()
        if row is None:
            self.db.execute("INSERT INTO meta VALUES ('format', ?)", (str(FORMAT),))
        elif row[0] != str(FORMAT):
            raise LoopStoreError(f"{self.path}: loop database format {row[0]}, this engine reads {FORMAT}")

    def close(self) -> None:
        with self._lock:
            self.db.close()

    @contextlib.contextmanager
    def _txn(self) -> Iterator[None]:
        """One transaction: committed when the block ends, rolled back when it raises."""
        self.db.execute("BEGIN")
        try:
            yield
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    def seq(self, name: str) -> int:
        row = self.db.execute("SELECT seq FROM position WHERE name = ?", (name,)).fetchone()
        return int(row[0]) if row else 0

    # -- applying -------------------------------------------------------------------------------

    def apply_impressions(self, msgs: Sequence[tuple[int, bytes]]) -> tuple[int, int]:
        """Stores the impression records of ``(stream seq, data)`` messages past the stored
        sequence and counts them; returns (records stored, messages not decodable)."""
        with self._lock:
            last = self.seq(IMPRESSIONS)
            todo = [(s, d) for s, d in msgs if s > last]
            if not todo:
                return 0, 0
            b, stored, bad = _Batch(), 0, 0
            rows = []
            for _, data in todo:
                try:
                    recs = decode_batch(data)
                except (msgspec.DecodeError, msgspec.ValidationError) as e:
                    bad += 1
                    log.warning("an impressions message is not valid (%s); skipped", e)
                    continue
                for r in recs:
                    rows.append(r)
            with self._txn():
                for r in rows:
                    if self._store_impression(r, b):
                        stored += 1
                self._write(b)
                self._set_seq(IMPRESSIONS, todo[-1][0])
            return stored, bad

    def _store_impression(self, r: Impression, b: _Batch) -> bool:
        n = len(r.items)
        sources = list(r.sources) if len(r.sources) == n else [r.source] * n
        exp, var = r.experiment or "", r.variant or ""
        if (exp, var) not in self._arms:
            if len(self._arms) >= MAX_ARMS:
                exp, var = "other", "other"
            self._arms.add((exp, var))
        cur = self.db.execute(
            "INSERT OR IGNORE INTO impressions (rec_id, ts, user, endpoint, source, experiment, variant, items, sources,"
            " explore, explored) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (r.rec_id, r.ts, r.user, r.endpoint, r.source, exp, var, json.dumps(r.items), json.dumps(sources),
             float(r.explore), int(r.explored)),
        )
        if cur.rowcount == 0:
            return False  # the same rec_id twice: counted once
        user = r.user if r.user else None
        b.add(r.ts, r.endpoint, r.source, exp, var, "lists", user=user)
        for pos, src in enumerate(sources):
            b.add(r.ts, r.endpoint, src, exp, var, "shown", position=pos, user=user)
        return True

    def apply_events(self, msgs: Sequence[tuple[int, str, bytes]], now: float | None = None,
                     accepted: tuple[int, ...] = ev.ACCEPTED_VERSIONS, window: ev.TimeWindow | None = None,
                     forget_subject: str = "", skip_subjects: Iterable[str] = ()) -> int:
        """Attributes the events of ``(stream seq, subject, data)`` messages past the stored
        sequence (invalid events are the learning loop's business: they are skipped here);
        a message on ``forget_subject`` erases its user. Returns the events credited."""
        now = time.time() if now is None else now
        skip = set(skip_subjects)
        with self._lock:
            last = self.seq(EVENTS)
            todo = [m for m in msgs if m[0] > last]
            if not todo:
                return 0
            b = _Batch()
            credited = 0
            with self._txn():
                for seq, subject, data in todo:
                    if subject in skip:
                        continue
                    if forget_subject and subject == forget_subject:
                        self._forget(data)
                        continue
                    ok, _ = ev.decode_events(data, accepted, window, now) if window is not None else ev.decode_events(data, accepted)
                    for idx, e in enumerate(ok):
                        credited += self._event(e, seq, idx, now, b)
                credited += self._retry_pending(now, b)
                self._write(b)
                self._set_seq(EVENTS, todo[-1][0])
            self._new_hits.extend(b.hits)
            return credited

    def take_hits(self) -> list[int]:
        """The hit checks committed since the last call, in the order they were made (1: the
        user's next item was in the list last served to them, 0: it was not); what the
        engine's drift detectors and staleness guard read."""
        with self._lock:
            out, self._new_hits = self._new_hits, []
        return out

    def retry_pending(self, now: float | None = None) -> int:
        """Attributes the events that waited for their impression (each as soon as the
        impression is known, or by the window once ``grace`` has passed)."""
        now = time.time() if now is None else now
        with self._lock:
            if self.db.execute("SELECT 1 FROM pending LIMIT 1").fetchone() is None:
                return 0
            b = _Batch()
            with self._txn():
                n = self._retry_pending(now, b)
                self._write(b)
            return n

    def _retry_pending(self, now: float, b: _Batch) -> int:
        rows = self.db.execute("SELECT seq, idx, deadline, event FROM pending ORDER BY seq, idx").fetchall()
        n = 0
        for seq, idx, deadline, raw in rows:
            e = ev.decode_events(raw)[0]
            if not e:
                self.db.execute("DELETE FROM pending WHERE seq = ? AND idx = ?", (seq, idx))
                continue
            e0 = e[0]
            known = self._impression(e0.rec_id) is not None
            if known or now >= deadline:
                self.db.execute("DELETE FROM pending WHERE seq = ? AND idx = ?", (seq, idx))
                n += self._attribute(e0, _ts_ms(e0, now), b, waited=True)
        return n

    def _event(self, e: ev.Event, seq: int, idx: int, now: float, b: _Batch) -> int:
        if e.item is None or e.type not in ITEM_EVENTS:
            return 0
        ts = _ts_ms(e, now)
        self._hit_check(e, ts, b)
        if e.type == "view" and not e.rec_id:
            return 0  # a view is an outcome only when it came from a list
        if e.rec_id and self._impression(e.rec_id) is None:
            # The impression may still be on its way: wait for it a little.
            self.db.execute("INSERT OR IGNORE INTO pending VALUES (?, ?, ?, ?, ?)",
                            (seq, idx, e.user, now + self.windows.grace, ev.encode(e)))
            return 0
        return self._attribute(e, ts, b)

    def _attribute(self, e: ev.Event, ts: int, b: _Batch, waited: bool = False) -> int:
        kind = CLICK_KINDS[e.type]
        imp = self._impression(e.rec_id) if e.rec_id else None
        if imp is not None:
            if e.item not in imp.items:
                b.unattributed[(e.type, "the list of its rec_id did not show the item")] += 1
                return 0
            if imp.user is not None and imp.user != e.user:
                b.unattributed[(e.type, "the list of its rec_id was another user's")] += 1
                return 0
        elif e.type == "view":
            b.unattributed[(e.type, "unknown rec_id")] += 1
            return 0
        else:
            imp = self._by_window(e, ts)
            if imp is None:
                why = "unknown rec_id and no list in the window showed the item" if e.rec_id else "no list in the window showed the item"
                b.unattributed[(e.type, why)] += 1
                return 0
        if self.db.execute("INSERT OR IGNORE INTO counted_events VALUES (?, ?)", (e.id, ts)).rowcount == 0:
            return 0  # this event was counted before
        pos = imp.items.index(e.item)  # type: ignore[arg-type]
        src = imp.sources[pos] if pos < len(imp.sources) else imp.source
        user = imp.user if imp.user else None
        first = self.db.execute("INSERT OR IGNORE INTO credited VALUES (?, ?, ?, ?)", (imp.rec_id, e.item, kind, imp.ts)).rowcount
        if first:
            b.add(ts, imp.endpoint, src, imp.experiment, imp.variant, kind, position=pos, user=user)
            if kind == "clicks":
                self.db.execute("UPDATE impressions SET clicks = clicks + 1 WHERE rec_id = ?", (imp.rec_id,))
        if kind == "purchases" and e.price is not None:
            b.add(ts, imp.endpoint, src, imp.experiment, imp.variant, "revenue", float(e.price) * float(e.qty if e.qty is not None else 1.0),
                  position=pos, user=user)
        return 1

    def _hit_check(self, e: ev.Event, ts: int, b: _Batch) -> None:
        w = self.windows
        row = self.db.execute(
            "SELECT rec_id, checked, items, source, experiment, variant, ts FROM impressions"
            " WHERE user = ? AND endpoint = 'recommendations' AND ts <= ? AND ts >= ? ORDER BY ts DESC LIMIT 1",
            (e.user, ts + int(w.skew * 1000), ts - int(w.click * 1000)),
        ).fetchone()
        if row is None or row[1]:
            return
        rec_id, _, items, source, exp, var, its = row
        self.db.execute("UPDATE impressions SET checked = 1 WHERE rec_id = ?", (rec_id,))
        hit = e.item in json.loads(items)
        b.hits.append(int(hit))
        b.add(its, "recommendations", source, exp, var, "hit_checks", user=e.user if exp else None)
        if hit:
            b.add(its, "recommendations", source, exp, var, "hits", user=e.user if exp else None)

    def _impression(self, rec_id: str | None) -> _Imp | None:
        if not rec_id:
            return None
        row = self.db.execute(
            "SELECT rec_id, ts, user, endpoint, source, experiment, variant, items, sources FROM impressions WHERE rec_id = ?",
            (rec_id,),
        ).fetchone()
        return _row(row) if row else None

    def _by_window(self, e: ev.Event, ts: int) -> _Imp | None:
        w = self.windows
        for row in self.db.execute(
            "SELECT rec_id, ts, user, endpoint, source, experiment, variant, items, sources FROM impressions"
            " WHERE user = ? AND ts <= ? AND ts >= ? ORDER BY ts DESC LIMIT 50",
            (e.user, ts + int(w.skew * 1000), ts - int(w.of(e.type) * 1000)),
        ):
            imp = _row(row)
            if e.item in imp.items:
                return imp
        return None

    def _forget(self, data: bytes) -> None:
        try:
            user = msgspec.json.decode(data).get("user")
        except (msgspec.DecodeError, AttributeError):
            return
        if isinstance(user, str) and user:
            self.db.execute("DELETE FROM impressions WHERE user = ?", (user,))
            self.db.execute("DELETE FROM units WHERE user = ?", (user,))
            self.db.execute("DELETE FROM pending WHERE user = ?", (user,))

    def _write(self, b: _Batch) -> None:
        x = self.db.executemany
        if b.minutes:
            x(_UPSERT_MINUTES, [(*k, *v) for k, v in b.minutes.items()])
            x(_UPSERT_TOTALS, [(*k, *v) for k, v in b.totals.items()])
        if b.positions:
            x(_UPSERT_POSITIONS, [(*k, *v) for k, v in b.positions.items()])
        if b.units:
            x(_UPSERT_UNITS, [(*k, *v) for k, v in b.units.items()])
        if b.unattributed:
            x("INSERT INTO unattributed VALUES (?, ?, ?) ON CONFLICT (kind, reason) DO UPDATE SET n = n + excluded.n",
              [(*k, v) for k, v in b.unattributed.items()])

    def _set_seq(self, name: str, seq: int) -> None:
        self.db.execute("INSERT INTO position VALUES (?, ?) ON CONFLICT (name) DO UPDATE SET seq = excluded.seq", (name, seq))

    def prune(self, now: float | None = None) -> int:
        """Drops impressions (and what hangs on them) older than ``keep_hours`` or beyond
        ``max_impressions``, and minute and hour roll-ups older than ``keep_days``."""
        now = time.time() if now is None else now
        cut = int((now - self.keep_hours * 3600) * 1000)
        with self._lock, self._txn():
            n = self.db.execute("DELETE FROM impressions WHERE ts < ?", (cut,)).rowcount
            row = self.db.execute("SELECT count(*) FROM impressions").fetchone()
            over = int(row[0]) - self.max_impressions
            if over > 0:
                n += self.db.execute(
                    "DELETE FROM impressions WHERE rec_id IN (SELECT rec_id FROM impressions ORDER BY ts LIMIT ?)", (over,)
                ).rowcount
                oldest = self.db.execute("SELECT min(ts) FROM impressions").fetchone()[0]
                cut = max(cut, int(oldest or cut))
            self.db.execute("DELETE FROM credited WHERE ts < ?", (cut,))
            self.db.execute("DELETE FROM counted_events WHERE ts < ?", (cut,))
            old = now - self.keep_days * 86400
            self.db.execute("DELETE FROM minutes WHERE minute < ?", (int(old // 60),))
            self.db.execute("DELETE FROM positions WHERE hour < ?", (int(old // 3600),))
        return n

    # -- reading --------------------------------------------------------------------------------

    def totals(self) -> list[tuple[tuple[str, str, str, str], dict[str, float]]]:
        """Every total row: ((endpoint, source, experiment, variant), counts)."""
        with self._lock:
            rows = self.db.execute(f"SELECT endpoint, source, experiment, variant, {', '.join(COUNTS)} FROM totals").fetchall()
        return [((r[0], r[1], r[2], r[3]), dict(zip(COUNTS, r[4:]))) for r in rows]

    def unattributed(self) -> dict[tuple[str, str], int]:
        with self._lock:
            return {(k, r): int(n) for k, r, n in self.db.execute("SELECT kind, reason, n FROM unattributed")}


def _row(row: tuple[Any, ...]) -> _Imp:
    return _Imp(row[0], int(row[1]), row[2], row[3], row[4], row[5], row[6], json.loads(row[7]), json.loads(row[8]))


def _ts_ms(e: ev.Event, now: float) -> int:
    s = ev._seconds(e.ts)
    return int((now if s is None else min(s, now + 86400.0)) * 1000)


def connect_readonly(path: str | Path) -> sqlite3.Connection:
    """A read-only connection to a loop database (for reports while the engine writes it)."""
    p = Path(path)
    if not p.exists():
        raise LoopStoreError(f"{p}: no loop database here (is attribution on, and has the engine run?)")
    try:
        db = sqlite3.connect(f"file:{p}?mode=ro", uri=True)
        row = db.execute("SELECT value FROM meta WHERE key = 'format'").fetchone()
    except sqlite3.DatabaseError as e:
        raise LoopStoreError(f"{p}: not a usable loop database ({e})") from None
    if row is None or row[0] != str(FORMAT):
        raise LoopStoreError(f"{p}: loop database format {row[0] if row else 'unknown'}, this version reads {FORMAT}")
    return db


__all__ = ["COUNTS", "DIMENSIONS", "MAX_ARMS", "EVENTS", "FORMAT", "IMPRESSIONS", "LoopStore", "LoopStoreError", "Windows", "connect_readonly"]
