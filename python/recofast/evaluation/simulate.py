"""`recofast simulate`: a seeded shop simulator writing v1 events with known ground truth.

The shop has categories, each with items (a price and a latent vector); new items arrive
during the stream. Shoppers have a latent taste (a mix of categories), a home country and a
device; new shoppers arrive too. Each event is drawn from the shopper's taste *in the
context of the moment*, with known context effects:

- device: on mobile, cheaper items are more likely;
- hour of day: each category has a time of day it sells best (a morning, afternoon,
  evening or night peak);
- weather: rain boosts the categories marked as rain categories, sun the sun categories;
- drift (optional): at each ``--drift-at`` event, a share of the shoppers switch taste.

Events are views, add-to-carts and purchases (a session views a few items, sometimes carts
and buys one), and searches whose query names the category looked for. The same seed gives
the same file, byte for byte. The shop itself (items, shoppers, context effects) is a
:class:`Shop`, which the simulated shoppers of :mod:`recofast.evaluation.shoppers` act in.

>>> import io
>>> buf = io.StringIO()
>>> stats = simulate(buf, users=20, items=30, events=50, seed=3)
>>> stats["events"], stats["new_items"] > 0
(50, True)
>>> first = json.loads(buf.getvalue().splitlines()[0])
>>> sorted(first["context"])
['country', 'device', 'weather']
"""

from __future__ import annotations

import json
from typing import IO, Any

import numpy as np

CATEGORY_NAMES = ["lamps", "mugs", "tea", "umbrellas", "sunglasses", "candles", "garden", "toys",
                  "books", "bags", "scarves", "kitchen", "games", "socks", "plants", "prints"]
COUNTRIES = ["GB", "FR", "DE", "NL", "ES", "US"]
DEVICES = ["mobile", "desktop", "tablet"]
WEATHER = ["sun", "cloud", "rain"]
RAIN_CATEGORIES = {"umbrellas", "tea", "books", "candles", "games"}
SUN_CATEGORIES = {"sunglasses", "garden", "plants", "toys"}


class Shop:
    """The simulated shop's ground truth: items (a category, a price, a popularity, when each
    arrives), the time of day each category sells best, and shoppers (a taste over the
    categories, a country, a device, when each arrives). :func:`simulate` writes events from
    it; :class:`recofast.evaluation.shoppers.Shoppers` acts in it against a running stack.

    ``Shop.from_seed(seed, ...)`` draws exactly what ``simulate(..., seed=seed)`` draws first,
    so both see the same shop and the same shoppers.

    >>> shop = Shop.from_seed(3, users=20, items=30, events=50)
    >>> shop.users, shop.items, len(shop.categories)
    (20, 30, 12)
    >>> w = shop.category_weights(0, hour=9, weather="rain")
    >>> bool((w > 0).all()), w.shape
    (True, (12,))
    """

    def __init__(self, rng: np.random.Generator, users: int, items: int, events: int, categories: int = 12,
                 new_item_share: float = 0.2, new_user_share: float = 0.3) -> None:
        if users <= 0 or items <= 0 or events < 0 or not 1 <= categories <= len(CATEGORY_NAMES):
            raise ValueError("users and items must be positive, events ≥ 0, categories between 1 and "
                             f"{len(CATEGORY_NAMES)}")
        self.users, self.items = users, items
        self.categories = CATEGORY_NAMES[:categories]
        # Items: a category, a price, a popularity; the last `new_item_share` arrive mid-stream.
        self.item_cat = rng.integers(0, categories, items)
        self.price = np.round(np.exp(rng.normal(2.5, 0.7, items)), 2)
        self.item_pop = rng.pareto(1.5, items) + 1.0
        self.n_new_items = int(items * new_item_share)
        self.item_arrival = np.zeros(items, dtype=np.int64)
        self.item_arrival[items - self.n_new_items:] = np.sort(rng.integers(events // 10, max(events, 1), self.n_new_items))
        # Categories sell best at one time of day.
        self.peak_hour = rng.choice([9, 14, 19, 23], categories)
        # Shoppers: a taste over categories, a country, a device; some arrive mid-stream.
        self.taste = rng.dirichlet(np.full(categories, 0.3), users)
        self.country = rng.integers(0, len(COUNTRIES), users)
        self.device = rng.choice(len(DEVICES), users, p=[0.6, 0.3, 0.1])
        self.n_new_users = int(users * new_user_share)
        self.user_arrival = np.zeros(users, dtype=np.int64)
        self.user_arrival[users - self.n_new_users:] = np.sort(rng.integers(0, max(events, 1), self.n_new_users))

    @classmethod
    def from_seed(cls, seed: int, users: int = 2_000, items: int = 1_000, events: int = 100_000, categories: int = 12,
                  new_item_share: float = 0.2, new_user_share: float = 0.3) -> Shop:
        """The shop ``simulate(..., seed=seed)`` with the same sizes writes events from."""
        return cls(np.random.default_rng(seed), users, items, events, categories, new_item_share, new_user_share)

    def category_weights(self, u: int, hour: int, weather: str) -> np.ndarray:
        """How much shopper ``u`` wants each category in this context (unnormalised): the
        taste × the time-of-day peak (``exp(-hours away / 4)``) × 3 for the categories the
        weather favours (rain or sun)."""
        hour_gap = np.minimum(np.abs(self.peak_hour - hour), 24 - np.abs(self.peak_hour - hour))
        w = self.taste[u] * np.exp(-hour_gap / 4.0)
        for c, name in enumerate(self.categories):
            if weather == "rain" and name in RAIN_CATEGORIES or weather == "sun" and name in SUN_CATEGORIES:
                w[c] *= 3.0
        return w

    def item_weights(self, items: np.ndarray, device: str) -> np.ndarray:
        """How likely each of ``items`` is to be picked on ``device`` (unnormalised): its
        popularity, × ``exp(-price / 10)`` on mobile (cheaper items)."""
        return self.item_pop[items] * (np.exp(-self.price[items] / 10.0) if device == "mobile" else 1.0)

    def median_item_weight(self, device: str) -> float:
        """The median of :meth:`item_weights` over every item of the shop, on ``device``."""
        cache: dict[str, float] = self.__dict__.setdefault("_median_weight", {})
        if device not in cache:
            cache[device] = float(np.median(self.item_weights(np.arange(self.items), device)))
        return cache[device]


def simulate(out: IO[str], users: int = 2_000, items: int = 1_000, events: int = 100_000, seed: int = 0,
             categories: int = 12, drift_at: tuple[int, ...] = (), drift_share: float = 0.5,
             new_item_share: float = 0.2, new_user_share: float = 0.3, start_ts_ms: int = 1_700_000_000_000,
             catalog: IO[str] | None = None, user_prefix: str = "u") -> dict[str, Any]:
    """Writes `events` v1 events as JSON Lines to `out` (and item metadata to `catalog`).
    Returns counts of what was generated."""
    rng = np.random.default_rng(seed)
    shop = Shop(rng, users, items, events, categories, new_item_share, new_user_share)
    cats, item_cat, price, taste, device = shop.categories, shop.item_cat, shop.price, shop.taste, shop.device
    n_new_items, n_new_users, item_arrival, user_arrival = shop.n_new_items, shop.n_new_users, shop.item_arrival, shop.user_arrival
    drift_points = sorted(d for d in drift_at if 0 <= d < events)

    def upsert(j: int, ts_ms: int) -> None:
        if catalog is not None:
            catalog.write(json.dumps({"v": 1, "item": f"i{j}", "category": cats[item_cat[j]],
                                      "title": f"{cats[item_cat[j]]} item {j}", "price": float(price[j]),
                                      "ts": int(ts_ms)}) + "\n")

    # The catalog: the first items at the start, each new item when it arrives.
    for j in range(items - n_new_items):
        upsert(j, start_ts_ms)
    next_new = items - n_new_items
    ts = start_ts_ms
    n = 0
    session = 0
    stats = {"events": 0, "purchases": 0, "searches": 0, "new_items": n_new_items, "new_users": n_new_users,
             "drifts": len(drift_points)}
    while n < events:
        if drift_points and n >= drift_points[0]:
            drift_points.pop(0)
            movers = rng.random(users) < drift_share
            taste[movers] = rng.dirichlet(np.full(categories, 0.3), int(movers.sum()))
        ts += int(rng.exponential(20_000))
        while next_new < items and item_arrival[next_new] <= n:
            upsert(next_new, ts)
            next_new += 1
        hour = (ts // 3_600_000) % 24
        weather = int(rng.choice(3, p=[0.4, 0.35, 0.25]))
        live_users = np.flatnonzero(user_arrival <= n)
        u = int(rng.choice(live_users))
        dev = DEVICES[device[u]]
        # The category in this context: taste × time-of-day peak × weather.
        w = shop.category_weights(u, hour, WEATHER[weather])
        c = int(rng.choice(categories, p=w / w.sum()))
        live = np.flatnonzero((item_cat == c) & (item_arrival <= n))
        if len(live) == 0:
            continue
        p = shop.item_weights(live, dev)
        session += 1
        ctx = {"device": dev, "country": COUNTRIES[shop.country[u]], "weather": WEATHER[weather]}
        base = {"v": 1, "user": f"{user_prefix}{u}", "session": f"s{session}", "context": ctx}
        if rng.random() < 0.15 and n < events:
            out.write(json.dumps({**base, "id": f"sim{seed}-{n}", "type": "search", "query": cats[c],
                                  "ts": int(ts)}) + "\n")
            n += 1
            stats["searches"] += 1
        views = rng.choice(live, size=min(len(live), int(rng.integers(1, 4))), replace=False, p=p / p.sum())
        for k, j in enumerate(views):
            if n >= events:
                break
            kind = "view"
            if k == len(views) - 1:
                r = rng.random()
                kind = "purchase" if r < 0.25 else "add_to_cart" if r < 0.45 else "view"
            ev = {**base, "id": f"sim{seed}-{n}", "type": kind, "item": f"i{int(j)}", "ts": int(ts) + k * 1000}
            if kind == "purchase":
                ev["price"] = float(price[j])
                ev["qty"] = 1
                stats["purchases"] += 1
            out.write(json.dumps(ev) + "\n")
            n += 1
    stats["events"] = n
    return stats
