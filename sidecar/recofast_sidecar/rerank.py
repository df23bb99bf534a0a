"""Re-ranking at the edge: filters, context, diversity (MMR over categories) and one
exploration slot.

Pure functions over candidates, so each step is tested on its own. A candidate is
``(item, score, reason)``; metadata comes from the LMDB ``items`` database.

>>> meta = {"a": ItemRecord(category="mug", price=5.0), "b": ItemRecord(category="mug", price=9.0),
...         "c": ItemRecord(category="tea", price=3.0), "d": ItemRecord(category="tea", in_stock=False)}
>>> cands = [Candidate("a", 0.9, "personal"), Candidate("b", 0.8, "personal"),
...          Candidate("c", 0.7, "personal"), Candidate("d", 0.6, "personal")]
>>> [c.item for c in apply_filters(cands, meta, Filters(max_price=6.0))]
['a', 'c']
>>> [c.item for c in mmr(cands[:3], meta, k=3, diversity=0.0)]
['a', 'b', 'c']
>>> [c.item for c in mmr(cands[:3], meta, k=3, diversity=1.0)]
['a', 'c', 'b']
>>> [(c.item, round(c.score, 3)) for c in context_rerank(cands[:3], [{"c": 0.5}], weight=1.0)]
[('c', 1.154), ('a', 0.9), ('b', 0.8)]
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import NamedTuple

from recofast_sidecar.protocol.codec import ItemRecord


class Candidate(NamedTuple):
    """One item of a list being served: its id, its score, and why it is there."""

    item: str
    score: float
    reason: str


@dataclass(frozen=True)
class Filters:
    """Real-time filters. Out-of-stock items are always removed. A price bound removes
    items whose price is unknown; a category removes items whose category is unknown."""

    category: str | None = None
    min_price: float | None = None
    max_price: float | None = None
    exclude: frozenset[str] = field(default_factory=frozenset)
    exclude_categories: frozenset[str] = field(default_factory=frozenset)
    """Categories (case-folded) whose items are removed; an item of unknown category stays."""

    @property
    def needs_price(self) -> bool:
        return self.min_price is not None or self.max_price is not None


def passes(item: str, rec: ItemRecord | None, f: Filters) -> bool:
    """Whether one item passes the filters (``rec`` is its metadata, None when unknown)."""
    if item in f.exclude:
        return False
    if rec is not None and rec.in_stock is False:
        return False
    if f.exclude_categories and rec is not None and rec.category.casefold() in f.exclude_categories:
        return False
    if f.category is not None and (rec is None or rec.category.casefold() != f.category.casefold()):
        return False
    if f.needs_price:
        if rec is None or rec.price is None:
            return False
        if f.min_price is not None and rec.price < f.min_price:
            return False
        if f.max_price is not None and rec.price > f.max_price:
            return False
    return True


def apply_filters(cands: Iterable[Candidate], meta: Mapping[str, ItemRecord | None], f: Filters) -> list[Candidate]:
    """The candidates that pass, in order, each item once."""
    seen: set[str] = set()
    out = []
    for c in cands:
        if c.item in seen:
            continue
        seen.add(c.item)
        if passes(c.item, meta.get(c.item), f):
            out.append(c)
    return out


def context_rerank(cands: list[Candidate], affinities: list[Mapping[str, float]], weight: float) -> list[Candidate]:
    """Re-ranks the leading ``personal`` candidates for a context: each score becomes
    ``score * exp(weight * a)``, where ``a`` sums the item's affinities to the request's
    context keys (one mapping per key; an item without one adds 0). A negative score is
    divided instead (``score * exp(-weight * a)``), so affinity always moves an item up.
    Candidates from other sources keep their place after them; with no affinity for any
    personal candidate (or ``weight`` 0) the list is returned as it is."""
    n = 0
    while n < len(cands) and cands[n].reason == "personal":
        n += 1
    if weight == 0.0 or n == 0 or not affinities:
        return cands
    if len(affinities) == 1:
        get = affinities[0].get
        sums = [get(c.item, 0.0) for c in cands[:n]]
    else:
        sums = [sum(a.get(c.item, 0.0) for a in affinities) for c in cands[:n]]
    if not any(sums):
        return cands
    exp = math.exp
    boosted = [
        Candidate(c.item, c.score * exp(min(weight * a, 700.0) if c.score >= 0.0 else -min(weight * a, 700.0)), c.reason)
        if a else c
        for c, a in zip(cands[:n], sums)
    ]
    # Stable: ties keep the list's order; a NaN score goes last.
    boosted.sort(key=lambda c: -c.score if c.score == c.score else math.inf)
    return boosted + cands[n:]


def mmr(cands: list[Candidate], meta: Mapping[str, ItemRecord | None], k: int, diversity: float) -> list[Candidate]:
    """Maximal marginal relevance over categories: picks greedily by
    ``(1 - diversity) * relevance - diversity * same_category``, where relevance is the rank-
    preserving score scaled to [0, 1] and ``same_category`` is 1 when an already picked item
    has the same category (items of unknown category are similar to none). ``diversity=0``
    keeps the order."""
    if diversity <= 0.0 or len(cands) <= 1:
        return cands[:k]
    n = len(cands)
    # Relevance from the rank, so lists from different sources (scores on different scales) mix.
    rel = [1.0 - i / n for i in range(n)]
    cats = [(meta.get(c.item) or ItemRecord()).category for c in cands]
    picked: list[int] = []
    used: set[str] = set()
    left = list(range(n))
    while left and len(picked) < k:
        best, best_v = left[0], -1e18
        for i in left:
            sim = 1.0 if cats[i] and cats[i] in used else 0.0
            v = (1.0 - diversity) * rel[i] - diversity * sim
            if v > best_v:
                best, best_v = i, v
        picked.append(best)
        left.remove(best)
        if cats[best]:
            used.add(cats[best])
    return [cands[i] for i in picked]


def explore_slot(
    chosen: list[Candidate],
    pool: Iterable[Candidate],
    exposure: Mapping[str, int],
    epsilon: float,
    rng: random.Random,
    k: int,
) -> list[Candidate]:
    """Epsilon-greedy exploration: with probability ``epsilon`` one slot (at a random position)
    goes to the least exposed item of ``pool`` (trending or new items that passed the
    filters) not already in the list; its reason becomes ``explore``."""
    if epsilon <= 0.0 or rng.random() >= epsilon:
        return chosen
    have = {c.item for c in chosen}
    options = [c for c in pool if c.item not in have]
    if not options:
        return chosen
    low = min(exposure.get(c.item, 0) for c in options)
    pick = rng.choice([c for c in options if exposure.get(c.item, 0) == low])
    out = list(chosen)
    slot = Candidate(pick.item, pick.score, "explore")
    if len(out) < k:
        out.insert(rng.randrange(len(out) + 1), slot)
    else:
        out[rng.randrange(len(out))] = slot
    return out


__all__ = ["Candidate", "Filters", "apply_filters", "context_rerank", "explore_slot", "mmr", "passes"]
