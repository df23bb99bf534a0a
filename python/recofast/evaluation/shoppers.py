"""Simulated shoppers who act on the lists they are shown, against a running stack.

A seeded population in the shop of :mod:`recofast.evaluation.simulate` (the same items,
prices, tastes, popularity and context effects: :class:`~recofast.evaluation.simulate.Shop`).
In each session a shopper

1. asks the sidecar for its list, ``GET /v1/recommendations/{user}?k=K`` with the session's
   context as query parameters (``device``, ``country``, ``weather``, ``hour``; and
   ``explore`` when set);
2. looks down the list and clicks by the **click model** below; a click posts a ``click``
   and a ``view`` of the item, carrying the list's ``rec_id``; after a click the shopper may
   ``add_to_cart``, and after that ``purchase`` (with ``price`` and ``qty``), both with the
   ``rec_id``;
3. with probability ``browse`` (default 0.5) browses on its own, as the event simulator's
   shoppers do: a search naming the category (15 %), one to three views of items of a
   category drawn from its taste in the moment, the last view becoming a purchase (25 %)
   or an add-to-cart (20 %). These events carry no ``rec_id``: organic traffic, from which
   the model keeps learning tastes.

Events are Event v1 posted to the sidecar's ``POST /v1/events`` with ``ts`` the wall-clock
time in milliseconds (attribution compares it with the impression time the sidecar stamps).

**The click model** is position-based (each position is examined independently; not a
cascade, so a shopper may click several items of a list). For the item at position ``p``
(0 at the top) of a list shown to shopper ``u`` in context ``x``::

    P(click)                 = e(p) · a          e(p) = 1 / (1 + p) ** beta      (beta = 1)
    a                        = (1 − exp(−gamma · C · q_c(u, x) · r_j)) · wear ** n_uj · (bought if u bought j)
                                                  (gamma = 0.1, wear = 0.5, bought = 0.2)
    P(add_to_cart | click)   = min(1, cart · a)                                   (cart = 0.6)
    P(purchase | cart)       = min(1, buy · a)                                    (buy = 0.8)
    qty                      = 2 with probability 0.1, else 1

where ``q_c(u, x)`` is the share of the item's category ``c`` in the shopper's wants in
the moment (:meth:`Shop.category_weights`: taste × time-of-day peak × weather, normalised
over the ``C`` categories, so a shopper with no preference has ``C · q_c = 1``) and ``r_j``
is the item's appeal relative to the shop's median item, ``sqrt(w_j / median w)`` with
``w_j`` from :meth:`Shop.item_weights` (popularity, × ``exp(-price / 10)`` on mobile). An
item the shop does not know has ``a = 0``. Interest wears off: ``n_uj`` counts the shopper's
earlier clicks and views of the item in this run, each halving its appeal, and an item the
shopper bought keeps a fifth of it (shoppers rarely want what they just bought, and click
the same item less each time they have looked at it), so a list that shows the same items
again and again earns less with each showing.

**Reproducibility.** The schedule (which shopper has which session in which round) comes
from generators seeded by ``(seed, round)``; each session's context, decisions and browsing
from generators seeded by ``(seed, shopper, the shopper's session number)``. Draws are
taken in fixed numbers (five per list position, whatever the outcomes), so neither the order
in which concurrent requests finish nor what a list holds shifts any other draw. In
**lockstep** (what ``recofast simulate --shoppers`` runs) sessions run in rounds: all lists
of a round are fetched (concurrently, at most ``concurrency`` at once; one at a time when
``explore`` > 0, because the sidecar draws exploration from one generator in request
order), then the round's events are posted in session order (up to 400 to a request, so
the stream order is the same every run), then the driver waits until the engine has applied
the whole event stream (:class:`EngineSync`: the engine's ``/healthz`` ``stream_seq`` against
the stream's last sequence) and for the segment lists to be written (``settle``). The lists a
shopper sees then depend on the seed, not on timing; what stays timing-dependent is listed
in the README (section "Simulated shoppers").

>>> from recofast.evaluation.simulate import Shop
>>> shop = Shop.from_seed(1, users=10, items=40, events=100)
>>> model = ClickModel()
>>> [round(float(x), 3) for x in model.examination(4)]
[1.0, 0.5, 0.333, 0.25]
>>> ctx = Context(device="desktop", country="GB", weather="sun", hour=14)
>>> a = model.attraction(shop, 0, ["i1", "i2", "nope"], ctx)
>>> bool(0 < a[0] < 1), float(a[2])
(True, 0.0)
>>> ch = model.decide(np.random.default_rng(0), a)
>>> ch.clicks.shape, bool((ch.purchases <= ch.carts).all() and (ch.carts <= ch.clicks).all())
((3,), True)
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import aiohttp
import numpy as np

from recofast.evaluation.simulate import COUNTRIES, DEVICES, WEATHER, Shop

BETA = 1.0
"""Examination: position ``p`` (0 at the top) is looked at with probability ``1 / (1 + p) ** BETA``."""
GAMMA = 0.1
"""Attraction scale: ``a = 1 - exp(-GAMMA · C · q_c · r_j)``."""
CART = 0.6
"""``P(add_to_cart | click) = min(1, CART · a)``."""
BUY = 0.8
"""``P(purchase | add_to_cart) = min(1, BUY · a)``."""
BROWSE = 0.5
"""The share of sessions in which the shopper also browses on its own (organic events)."""
SEARCH = 0.15
"""The share of organic browsing that starts with a search naming the category."""
WEATHER_P = (0.4, 0.35, 0.25)
"""Weather of a session (sun, cloud, rain), as in the event simulator."""
WEAR = 0.5
"""Each earlier click or view of an item by the shopper multiplies its appeal by this."""
BOUGHT = 0.2
"""An item the shopper bought keeps this share of its appeal."""
POST_CHUNK = 400
"""Most events in one ``POST /v1/events`` (the sidecar takes 1000 and 256 KiB)."""
COUNTS = ("lists", "shown", "clicks", "carts", "purchases", "revenue", "window_carts", "window_purchases", "window_revenue")
"""What the tallies count. ``clicks``, ``carts``, ``purchases`` and ``revenue`` are the
shoppers' acts on a list (their events carry its ``rec_id``); ``window_*`` are organic
add-to-carts and purchases (no ``rec_id``) that the engine's window rule credits to a list:
the latest list shown to the shopper that held the item, within :data:`WINDOWS`, each list at
most once per item and kind (revenue: every such purchase)."""
WINDOWS = {"add_to_cart": 1800.0, "purchase": 86400.0}
"""The engine's default ``cart_window`` and ``purchase_window`` (seconds)."""


@dataclass(frozen=True)
class Context:
    """A session's context: the shopper's device and country, the weather and the hour."""

    device: str
    country: str
    weather: str
    hour: int

    def query(self) -> dict[str, str]:
        """The query parameters of the list request."""
        return {"device": self.device, "country": self.country, "weather": self.weather, "hour": str(self.hour)}

    def event_context(self) -> dict[str, str]:
        """The ``context`` of the session's events (the engine takes the hour from ``ts``)."""
        return {"device": self.device, "country": self.country, "weather": self.weather}


@dataclass(frozen=True)
class Choices:
    """What a shopper did with a list, per position."""

    clicks: np.ndarray
    carts: np.ndarray
    purchases: np.ndarray
    qty: np.ndarray


@dataclass(frozen=True)
class ClickModel:
    """The position-based click model of the module docstring, with its parameters."""

    beta: float = BETA
    gamma: float = GAMMA
    cart: float = CART
    buy: float = BUY
    wear: float = WEAR
    bought: float = BOUGHT

    def __post_init__(self) -> None:
        if not (self.beta >= 0 and self.gamma > 0 and 0 <= self.cart and 0 <= self.buy):
            raise ValueError("beta must be ≥ 0, gamma > 0, cart and buy ≥ 0")
        if not (0.0 <= self.wear <= 1.0 and 0.0 <= self.bought <= 1.0):
            raise ValueError("wear and bought must be between 0 and 1")

    def examination(self, n: int) -> np.ndarray:
        """The probability that each of ``n`` positions is looked at."""
        return 1.0 / (1.0 + np.arange(n, dtype=np.float64)) ** self.beta

    def attraction(self, shop: Shop, u: int, items: list[str], ctx: Context,
                   history: dict[int, list[int]] | None = None) -> np.ndarray:
        """How much shopper ``u`` wants each item in this context, in ``[0, 1)``; ``history``
        maps an item's index to ``[earlier clicks and views, bought (0 or 1)]``."""
        w = shop.category_weights(u, ctx.hour, ctx.weather)
        q = w / w.sum()
        idx = np.array([_item_index(i, shop.items) for i in items], dtype=np.int64)
        known = idx >= 0
        a = np.zeros(len(items))
        if known.any():
            j = idx[known]
            r = np.sqrt(shop.item_weights(j, ctx.device) / shop.median_item_weight(ctx.device))
            a[known] = 1.0 - np.exp(-self.gamma * len(shop.categories) * q[shop.item_cat[j]] * r)
        if history:
            for p, j in enumerate(idx):
                h = history.get(int(j)) if j >= 0 else None
                if h is not None:
                    a[p] *= self.wear ** h[0] * (self.bought if h[1] else 1.0)
        return a

    def decide(self, rng: np.random.Generator, attraction: np.ndarray) -> Choices:
        """Clicks, add-to-carts, purchases and quantities for a list whose items have these
        attractions, from five draws per position (whatever the outcomes)."""
        a = np.asarray(attraction, dtype=np.float64)
        n = len(a)
        d = rng.random((5, n))
        clicks = (d[0] < self.examination(n)) & (d[1] < a)
        carts = clicks & (d[2] < np.minimum(1.0, self.cart * a))
        purchases = carts & (d[3] < np.minimum(1.0, self.buy * a))
        qty = np.where(d[4] < 0.1, 2, 1)
        return Choices(clicks, carts, purchases, qty)


def _touch(seen: dict[int, list[int]], j: int, bought: bool) -> None:
    if j < 0:
        return
    h = seen.setdefault(j, [0, 0])
    h[0] += 1
    h[1] = h[1] or int(bought)


def _item_index(item: str, n: int) -> int:
    if len(item) > 1 and item[0] == "i" and item[1:].isdigit():
        j = int(item[1:])
        return j if j < n else -1
    return -1


# -- sessions ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Session:
    """One planned session: its number in the run, the shopper, the shopper's session number."""

    number: int
    shopper: int
    nth: int


@dataclass
class SessionRecord:
    """What happened in a session (kept with ``keep_log``): the list shown and the events posted."""

    number: int
    user: str
    nth: int
    context: Context
    rec_id: str
    source: str
    variant: str
    items: list[str]
    clicks: list[int]
    carts: list[int]
    purchases: list[int]
    events: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class _Shown:
    variant: str
    source: str
    at: float
    credited: set[str]


def _tally() -> dict[str, float]:
    return dict.fromkeys(COUNTS, 0)


def _rates(c: dict[str, float]) -> dict[str, Any]:
    shown = c["shown"]
    out: dict[str, Any] = {k: (round(v, 2) if k.endswith("revenue") else int(v)) for k, v in c.items()}
    out["ctr"] = c["clicks"] / shown if shown else None
    out["conversion"] = c["purchases"] / shown if shown else None
    out["rpm"] = 1000.0 * c["revenue"] / shown if shown else None
    return out


class EngineSync:
    """Waits until the engine has applied every event in the stream: the stream's last
    sequence (JetStream stream info) against the ``stream_seq`` of the engine's ``/healthz``;
    then ``settle`` seconds more, for the segment lists (written ``segment_seconds`` after the
    events that changed them). Use as an async context manager (it holds a NATS connection)."""

    def __init__(self, engine_url: str, nats_url: str, settle: float = 0.0, timeout: float = 60.0) -> None:
        self.engine_url = engine_url.rstrip("/")
        self.nats_url = nats_url
        self.settle = settle
        self.timeout = timeout
        self._nc: Any = None
        self._js: Any = None

    async def __aenter__(self) -> EngineSync:
        import nats

        self._nc = await nats.connect(self.nats_url, name="recofast-shoppers")
        self._js = self._nc.jetstream()
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._nc is not None:
            await self._nc.drain()
            self._nc = None

    @property
    def js(self) -> Any:
        """The JetStream context of the connection."""
        return self._js

    async def stream_seq(self) -> int:
        from recofast_sidecar.protocol.names import STREAM

        return int((await self._js.stream_info(STREAM)).state.last_seq)

    async def engine_state(self, http: Any) -> dict[str, Any]:
        """The engine's ``/healthz`` body (also while it answers 503)."""
        async with http.get(f"{self.engine_url}/healthz") as r:
            return dict(await r.json(content_type=None))

    async def loop_report(self, http: Any, by: str = "variant", settle: float = 1.0, timeout: float = 30.0) -> dict[str, Any] | None:
        """The engine's own online metrics (``/v1/loop?by=...``) once its closed loop has read
        both streams (its consumers have nothing pending) and the report has not changed for
        ``settle`` seconds (an event whose impression came late waits ``attribution_grace``);
        None when the engine has no loop report."""
        from recofast_sidecar.protocol.names import IMPRESSIONS_STREAM, LOOP_EVENTS_CONSUMER, LOOP_IMPRESSIONS_CONSUMER, STREAM

        deadline = time.monotonic() + timeout
        for stream, consumer in ((IMPRESSIONS_STREAM, LOOP_IMPRESSIONS_CONSUMER), (STREAM, LOOP_EVENTS_CONSUMER)):
            while True:
                try:
                    info = await self._js.consumer_info(stream, consumer)
                    if not (info.num_pending or info.num_ack_pending):
                        break
                except Exception:  # noqa: BLE001 - no such consumer (yet): no loop, or not started
                    if time.monotonic() > deadline:
                        return None
                if time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.05)
        last, since = None, time.monotonic()
        while True:
            try:
                async with http.get(f"{self.engine_url}/v1/loop", params={"by": by}) as r:
                    if r.status != 200:
                        return None
                    body = dict(await r.json())
            except (aiohttp.ClientError, OSError, ValueError, asyncio.TimeoutError):
                return None
            key = json.dumps([body.get("total"), body.get("rows")], sort_keys=True)
            if key != last:
                last, since = key, time.monotonic()
            elif time.monotonic() - since >= settle or time.monotonic() > deadline:
                return body
            await asyncio.sleep(0.2)

    async def wait(self, http: Any) -> dict[str, Any]:
        """Returns the engine's ``/healthz`` body once it has applied the whole stream."""
        last = await self.stream_seq()
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                state = await self.engine_state(http)
                if int(state.get("stream_seq", -1)) >= last:
                    break
            except (aiohttp.ClientError, OSError, ValueError, asyncio.TimeoutError):
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"the engine did not apply the stream up to seq {last} within {self.timeout:.0f} s")
            await asyncio.sleep(0.01)
        if self.settle > 0:
            await asyncio.sleep(self.settle)
        return state


class Shoppers:
    """A seeded population of ``shop.users`` shoppers (``{user_prefix}0`` ...) acting on the
    lists the sidecar at ``base_url`` serves them. :meth:`run` runs sessions; :meth:`tallies`
    is their ground truth: lists seen, items shown, clicks, add-to-carts, purchases and revenue
    per experiment variant (the answer's ``variant``, ``"none"`` outside experiments), per
    source (lists by the answer's ``source``, the rest by each item's own source, from its
    ``reason``, as the engine's roll-ups count them), per position, and the organic traffic."""

    def __init__(self, shop: Shop, base_url: str, *, seed: int = 0, k: int = 10, model: ClickModel | None = None,
                 browse: float = BROWSE, concurrency: int = 8, explore: float = 0.0,
                 hours: Literal["seeded", "wall"] = "seeded", user_prefix: str = "shopper",
                 round_size: int | None = None, keep_log: bool = True, request_timeout: float = 10.0,
                 drift_at: int | None = None, drift_share: float = 0.5) -> None:
        if not 1 <= k <= 200:
            raise ValueError(f"k must be between 1 and 200, got {k}")
        if not 0.0 <= browse <= 1.0 or not 0.0 <= explore <= 1.0:
            raise ValueError("browse and explore must be between 0 and 1")
        if concurrency < 1:
            raise ValueError(f"concurrency must be at least 1, got {concurrency}")
        if hours not in ("seeded", "wall"):
            raise ValueError(f"hours must be 'seeded' or 'wall', got {hours!r}")
        self.shop = shop
        self.base_url = base_url.rstrip("/")
        self.seed = seed
        self.k = k
        self.model = model or ClickModel()
        self.browse = browse
        self.concurrency = concurrency
        self.explore = explore
        self.hours = hours
        self.user_prefix = user_prefix
        self.round_size = max(1, min(shop.users, round_size if round_size else 50))
        self.keep_log = keep_log
        self.request_timeout = request_timeout
        if drift_at is not None and drift_at < 0:
            raise ValueError(f"drift_at must be a session number (≥ 0), got {drift_at}")
        if not 0.0 < drift_share <= 1.0:
            raise ValueError(f"drift_share must be in (0, 1], got {drift_share}")
        self.drift_at, self.drift_share = drift_at, drift_share
        self.drift: dict[str, Any] | None = None  # when and how the tastes switched
        self.run_id = uuid.uuid4().hex[:8]  # event ids only: unique across runs, no effect on learning
        self.activity = np.random.default_rng([seed, 101]).pareto(2.0, shop.users) + 1.0
        self._next_nth = np.zeros(shop.users, dtype=np.int64)
        self._round = 0
        self._number = 0
        self.log: list[SessionRecord] = []
        self.variants: dict[str, dict[str, float]] = {}
        self.sources: dict[str, dict[str, float]] = {}
        self.positions = np.zeros((k, 4), dtype=np.int64)  # shown, clicks, carts, purchases
        self.organic = {"sessions": 0, "searches": 0, "views": 0, "carts": 0, "purchases": 0, "revenue": 0.0}
        self.experiments: set[str] = set()
        self.counters = {"sessions": 0, "events_posted": 0, "events_rejected": 0, "failed_sessions": 0, "failed_posts": 0}
        # Per shopper, per item: the latest list that showed it (variant, the item's source,
        # when, the kinds it has been credited with), to tally what the window rule credits.
        self._latest: dict[int, dict[int, _Shown]] = {}
        # Per shopper, per item: [earlier clicks and views, bought]: how interest wears off.
        self._history: dict[int, dict[int, list[int]]] = {}
        self.errors: list[str] = []

    # -- the plan ---------------------------------------------------------------------------

    def next_round(self) -> list[Session]:
        """The next round's sessions: ``round_size`` distinct shoppers, drawn by activity."""
        rng = np.random.default_rng([self.seed, 102, self._round])
        self._round += 1
        p = self.activity / self.activity.sum()
        who = rng.choice(self.shop.users, size=self.round_size, replace=False, p=p)
        out = []
        for u in who:
            u = int(u)
            out.append(Session(self._number, u, int(self._next_nth[u])))
            self._next_nth[u] += 1
            self._number += 1
        return out

    def context(self, s: Session) -> Context:
        """The session's context: the shopper's device and country, a drawn weather, and the
        hour (drawn uniformly with ``hours="seeded"``, which moves the shopper's wants but is not
        sent to the sidecar, whose clock and the engine's agree on the hour; the UTC hour now,
        sent, with ``"wall"``)."""
        rng = np.random.default_rng([self.seed, 103, s.shopper, s.nth])
        weather = WEATHER[int(rng.choice(3, p=WEATHER_P))]
        hour = int(rng.integers(0, 24))
        if self.hours == "wall":
            hour = time.gmtime().tm_hour
        u = s.shopper
        return Context(DEVICES[int(self.shop.device[u])], COUNTRIES[int(self.shop.country[u])], weather, hour)

    def user(self, u: int) -> str:
        return f"{self.user_prefix}{u}"

    # -- one session ------------------------------------------------------------------------

    def switch_tastes(self, number: int) -> None:
        """Drift: ``drift_share`` of the shoppers (drawn from the seed) get a new taste, drawn as
        the shop draws tastes, as the event simulator's ``--drift-at`` does; recorded in
        :attr:`drift` with the session number and the events posted so far."""
        rng = np.random.default_rng([self.seed, 105])
        movers = np.flatnonzero(rng.random(self.shop.users) < self.drift_share)
        self.shop.taste[movers] = rng.dirichlet(np.full(self.shop.taste.shape[1], 0.3), len(movers))
        self.drift = {"session": number, "shoppers": int(len(movers)), "events_posted": self.counters["events_posted"],
                      "time": time.time()}

    def act(self, s: Session, ctx: Context, answer: dict[str, Any]) -> list[dict[str, Any]]:
        """The events of session ``s`` after being shown ``answer`` (the sidecar's list JSON),
        tallied. Pure but for the tallies and the wall clock of ``ts`` (and, at session
        ``drift_at``, the switch of tastes)."""
        if self.drift_at is not None and self.drift is None and s.number >= self.drift_at:
            self.switch_tastes(s.number)
        shop = self.shop
        items = [str(x["item"]) for x in answer.get("items", [])][: self.k]
        reasons = [str(x.get("reason", "")) for x in answer.get("items", [])][: self.k]
        rec_id = str(answer.get("rec_id", ""))
        source = str(answer.get("source", "fallback"))
        variant = str(answer.get("variant") or "none")
        if answer.get("experiment"):
            self.experiments.add(str(answer["experiment"]))
        seen = self._history.setdefault(s.shopper, {})
        a = self.model.attraction(shop, s.shopper, items, ctx, seen)
        ch = self.model.decide(np.random.default_rng([self.seed, 104, s.shopper, s.nth]), a)
        user = self.user(s.shopper)
        now = int(time.time() * 1000)
        events: list[dict[str, Any]] = []

        def event(kind: str, **kw: Any) -> None:
            e = {"v": 1, "id": f"shop-{self.run_id}-{s.shopper}-{s.nth}-{len(events)}", "type": kind, "user": user,
                 "session": f"{self.run_id}-{s.shopper}-{s.nth}", "ts": now, "context": ctx.event_context()}
            e.update({k: v for k, v in kw.items() if v is not None})
            events.append(e)

        from recofast_sidecar.protocol.feedback import source_of

        tv = self.variants.setdefault(variant, _tally())
        tl = self.sources.setdefault(source, _tally())
        tv["lists"] += 1
        tl["lists"] += 1
        latest = self._latest.setdefault(s.shopper, {})
        for p, item in enumerate(items):
            src = source_of(reasons[p])
            ts = self.sources.setdefault(src, _tally())
            j = _item_index(item, shop.items)
            if j >= 0:
                latest[j] = _Shown(variant, src, time.time(), {"click"} if ch.clicks[p] else set())
            tv["shown"] += 1
            ts["shown"] += 1
            self.positions[p, 0] += 1
            if not ch.clicks[p]:
                continue
            event("click", item=item, rec_id=rec_id)
            event("view", item=item, rec_id=rec_id)
            _touch(seen, j, bought=bool(ch.purchases[p]))
            for t in (tv, ts):
                t["clicks"] += 1
            self.positions[p, 1] += 1
            if ch.carts[p]:
                latest[j].credited.add("add_to_cart")
                event("add_to_cart", item=item, rec_id=rec_id)
                for t in (tv, ts):
                    t["carts"] += 1
                self.positions[p, 2] += 1
            if ch.purchases[p]:
                latest[j].credited.add("purchase")
                price, qty = float(shop.price[j]), int(ch.qty[p])
                event("purchase", item=item, rec_id=rec_id, price=price, qty=qty)
                for t in (tv, ts):
                    t["purchases"] += 1
                    t["revenue"] += price * qty
                self.positions[p, 3] += 1
        self._browse(s, ctx, event, latest, seen)
        if self.keep_log:
            self.log.append(SessionRecord(s.number, user, s.nth, ctx, rec_id, source, variant, items,
                                          [int(x) for x in np.flatnonzero(ch.clicks)], [int(x) for x in np.flatnonzero(ch.carts)],
                                          [int(x) for x in np.flatnonzero(ch.purchases)], events))
        self.counters["sessions"] += 1
        return events

    def _browse(self, s: Session, ctx: Context, event: Callable[..., None], latest: dict[int, _Shown],
                seen: dict[int, list[int]]) -> None:
        """Organic browsing (no ``rec_id``), as the event simulator's sessions: draws in fixed
        numbers whether or not the shopper browses."""
        shop = self.shop
        rng = np.random.default_rng([self.seed, 105, s.shopper, s.nth])
        go, search, last = rng.random(3)
        w = shop.category_weights(s.shopper, ctx.hour, ctx.weather)
        c = int(rng.choice(len(shop.categories), p=w / w.sum()))
        live = np.flatnonzero(shop.item_cat == c)
        n_views = int(rng.integers(1, 4))
        if go >= self.browse or len(live) == 0:
            return
        p = shop.item_weights(live, ctx.device)
        views = rng.choice(live, size=min(len(live), n_views), replace=False, p=p / p.sum())
        o = self.organic
        o["sessions"] += 1
        if search < SEARCH:
            event("search", query=shop.categories[c])
            o["searches"] += 1
        for k, j in enumerate(views):
            j = int(j)
            kind = "view"
            if k == len(views) - 1:
                kind = "purchase" if last < 0.25 else "add_to_cart" if last < 0.45 else "view"
            if kind == "purchase":
                event("purchase", item=f"i{j}", price=float(shop.price[j]), qty=1)
                o["purchases"] += 1
                o["revenue"] += float(shop.price[j])
            else:
                event(kind, item=f"i{j}")
                o["views" if kind == "view" else "carts"] += 1
            _touch(seen, j, bought=kind == "purchase")
            if kind != "view":
                self._by_window(latest.get(j), kind, float(shop.price[j]))

    def _by_window(self, shown: _Shown | None, kind: str, price: float) -> None:
        """Tallies an organic add-to-cart or purchase the engine's window rule credits to the
        latest list that showed the item (once per list, item and kind; revenue every time)."""
        if shown is None or time.time() - shown.at > WINDOWS[kind]:
            return
        tallies = (self.variants[shown.variant], self.sources[shown.source])
        if kind == "purchase":
            for t in tallies:
                t["window_revenue"] += price
        if kind in shown.credited:
            return
        shown.credited.add(kind)
        for t in tallies:
            t["window_carts" if kind == "add_to_cart" else "window_purchases"] += 1

    # -- HTTP -------------------------------------------------------------------------------

    async def fetch(self, http: Any, s: Session, ctx: Context, retries: int = 5) -> dict[str, Any]:
        """The shopper's list (retried on a connection error or a 5xx)."""
        q = {"k": str(self.k), **ctx.query()}
        if self.hours == "seeded":
            # The engine learns the hour from the events' wall-clock ts; a drawn hour in the
            # request would ask for a context it never saw. The drawn hour moves the shopper's
            # wants only, like any unobserved cause.
            q.pop("hour", None)
        if self.explore > 0:
            q["explore"] = repr(self.explore)
        url = f"{self.base_url}/v1/recommendations/{self.user(s.shopper)}"
        for attempt in range(retries):
            try:
                async with http.get(url, params=q) as r:
                    if r.status == 200:
                        return dict(await r.json())
                    err = f"GET {url}: {r.status} {await r.text()}"
                    if r.status < 500:
                        raise RuntimeError(err)
            except (aiohttp.ClientError, OSError, asyncio.TimeoutError) as e:
                err = f"GET {url}: {type(e).__name__}: {e}"
            await asyncio.sleep(0.1 * 2**attempt)
        raise RuntimeError(err)

    async def post(self, http: Any, events: list[dict[str, Any]], retries: int = 5) -> None:
        """Posts events in order, :data:`POST_CHUNK` to a request (retried on a connection
        error or a 503: JetStream drops a retried message it already stored, by its id)."""
        for lo in range(0, len(events), POST_CHUNK):
            part = events[lo : lo + POST_CHUNK]
            for attempt in range(retries):
                try:
                    async with http.post(f"{self.base_url}/v1/events", json=part) as r:
                        body = await r.json(content_type=None)
                        if r.status in (202, 400):
                            self.counters["events_posted"] += int(body.get("accepted", 0))
                            self.counters["events_rejected"] += int(body.get("rejected", 0))
                            if body.get("errors") and len(self.errors) < 10:
                                self.errors.append(json.dumps(body["errors"][:3]))
                            break
                        err = f"POST /v1/events: {r.status} {body}"
                except (aiohttp.ClientError, OSError, ValueError, asyncio.TimeoutError) as e:
                    err = f"POST /v1/events: {type(e).__name__}: {e}"
                await asyncio.sleep(0.1 * 2**attempt)
            else:
                raise RuntimeError(err)

    def _client(self) -> Any:
        return aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=self.concurrency),
                                     timeout=aiohttp.ClientTimeout(total=self.request_timeout))

    # -- runs -------------------------------------------------------------------------------

    async def run_lockstep(self, sessions: int, sync: EngineSync | None, progress: bool = False) -> dict[str, Any]:
        """Runs ``sessions`` sessions in rounds (see the module docstring); after each round,
        ``sync.wait`` (None: no waiting, for a stack that is not the driver's). Returns
        :meth:`tallies`."""
        from tqdm import tqdm

        sem = asyncio.Semaphore(1 if self.explore > 0 else self.concurrency)
        async with self._client() as http:
            with tqdm(total=sessions, unit="session", desc="shoppers", disable=not progress, file=sys.stderr) as bar:
                done = 0
                while done < sessions:
                    plan = self.next_round()[: sessions - done]
                    ctxs = [self.context(s) for s in plan]

                    async def one(s: Session, c: Context) -> dict[str, Any]:
                        async with sem:
                            return await self.fetch(http, s, c)

                    answers = await asyncio.gather(*(one(s, c) for s, c in zip(plan, ctxs)))
                    events = [e for s, c, a in zip(plan, ctxs, answers) for e in self.act(s, c, a)]
                    await self.post(http, events)
                    if sync is not None:
                        await sync.wait(http)
                    done += len(plan)
                    bar.update(len(plan))
        return self.tallies()

    async def run_continuous(self, sessions: int | None = None, rate: float | None = None,
                             should_stop: Callable[[], bool] = lambda: False) -> dict[str, Any]:
        """Runs sessions without rounds, ``concurrency`` shoppers in flight, each posting its
        own events; at most ``rate`` events per second (None: as fast as answers come), until
        ``sessions`` sessions (None: until ``should_stop()``). A failing request is counted
        and the session dropped; the run goes on."""
        sem = asyncio.Semaphore(self.concurrency)
        tasks: set[asyncio.Task[None]] = set()
        start = time.monotonic()

        async def one(http: Any, s: Session) -> None:
            try:
                c = self.context(s)
                answer = await self.fetch(http, s, c, retries=2)
                await self.post(http, self.act(s, c, answer), retries=2)
            except (RuntimeError, aiohttp.ClientError, OSError, asyncio.TimeoutError) as e:
                self.counters["failed_sessions"] += 1
                if len(self.errors) < 10:
                    self.errors.append(str(e)[:300])
            finally:
                sem.release()

        n = 0
        async with self._client() as http:
            while (sessions is None or n < sessions) and not should_stop():
                for s in self.next_round():
                    if (sessions is not None and n >= sessions) or should_stop():
                        break
                    if rate:
                        ahead = self.counters["events_posted"] / rate - (time.monotonic() - start)
                        if ahead > 0:
                            await asyncio.sleep(min(ahead, 0.5))
                    await sem.acquire()
                    t = asyncio.create_task(one(http, s))
                    tasks.add(t)
                    t.add_done_callback(tasks.discard)
                    n += 1
            if tasks:
                await asyncio.gather(*tasks)
        return self.tallies()

    # -- ground truth -----------------------------------------------------------------------

    def tallies(self) -> dict[str, Any]:
        """The shoppers' ground truth so far (JSON-ready). With ``keep_log``, digests of the
        sessions' plans and contexts, of the lists shown and of what was done with them, in
        session order: two runs with the same seed can be compared by them."""
        total = _tally()
        for t in self.variants.values():
            for c in COUNTS:
                total[c] += t[c]
        out: dict[str, Any] = {
            "seed": self.seed,
            "shoppers": self.shop.users,
            "sessions": self.counters["sessions"],
            "click_model": {"beta": self.model.beta, "gamma": self.model.gamma, "cart": self.model.cart, "buy": self.model.buy,
                            "browse": self.browse, "k": self.k, "explore": self.explore},
            "total": _rates(total),
            "experiments": sorted(self.experiments),
            "variants": {v: _rates(t) for v, t in sorted(self.variants.items())},
            "sources": {v: _rates(t) for v, t in sorted(self.sources.items())},
            "positions": [{"position": p, "shown": int(r[0]), "clicks": int(r[1]), "carts": int(r[2]), "purchases": int(r[3]),
                           "ctr": r[1] / r[0] if r[0] else None} for p, r in enumerate(self.positions)],
            "organic": {k: (round(v, 2) if k == "revenue" else int(v)) for k, v in self.organic.items()},
            **self.counters,
        }
        if self.drift is not None:
            out["drift"] = dict(self.drift)
        if self.keep_log:
            log = sorted(self.log, key=lambda r: r.number)
            out["digests"] = {
                "sessions": _digest((r.number, r.user, r.nth, r.context.query()) for r in log),
                "lists": _digest((r.number, r.source, r.variant, r.items) for r in log),
                "actions": _digest((r.number, r.clicks, r.carts, r.purchases) for r in log),
            }
        if self.errors:
            out["errors"] = self.errors
        return out


    def write_log(self, out: Any) -> int:
        """Writes the sessions (with ``keep_log``) as JSON Lines in session order: number,
        user, the shopper's session number, context, ``rec_id``, source, variant, the items
        shown, the positions clicked, carted and bought, and the events posted. Returns the
        number written."""
        for r in sorted(self.log, key=lambda r: r.number):
            out.write(json.dumps({"session": r.number, "user": r.user, "nth": r.nth, "context": r.context.query(),
                                  "rec_id": r.rec_id, "source": r.source, "variant": r.variant, "items": r.items,
                                  "clicks": r.clicks, "carts": r.carts, "purchases": r.purchases, "events": r.events}) + "\n")
        return len(self.log)


def _digest(rows: Any) -> str:
    h = hashlib.sha256()
    for r in rows:
        h.update(json.dumps(r, sort_keys=True).encode())
        h.update(b"\n")
    return h.hexdigest()[:16]


def compare(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """Two runs' tallies side by side: which digests agree (the sessions and their contexts,
    the lists shown, what was done with them), and per variant the items shown, clicks and
    purchases of each run.

    >>> t = {"digests": {"sessions": "x", "lists": "y", "actions": "z"}, "variants": {"v": {"shown": 10, "clicks": 2, "purchases": 1}}}
    >>> compare(t, t)["same"]
    {'sessions': True, 'lists': True, 'actions': True}
    """
    da, db = a.get("digests", {}), b.get("digests", {})
    out: dict[str, Any] = {"same": {k: da.get(k) == db.get(k) for k in ("sessions", "lists", "actions")}, "variants": {}}
    for v in sorted(set(a.get("variants", {})) | set(b.get("variants", {}))):
        ta, tb = a["variants"].get(v, {}), b["variants"].get(v, {})
        out["variants"][v] = {c: [ta.get(c, 0), tb.get(c, 0)] for c in ("shown", "clicks", "purchases")}
    return out


__all__ = ["BETA", "BROWSE", "BUY", "CART", "GAMMA", "ClickModel", "Context", "EngineSync", "Session", "SessionRecord",
           "Shoppers", "compare"]
