"""The Python API of the online recommender (`recofast.Recommender`)."""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

import numpy as np

from recofast import _core
from recofast.explain import Reason

Id = str | int

_OPTION_NAMES = {name for name, _ in _core.default_options()}

#: The context fields the model learns from; other fields are ignored.
CONTEXT_FIELDS: tuple[str, ...] = tuple(_core.CONTEXT_FIELDS)

Context = Mapping[str, Any]


def _ctx_value(v: Any) -> str | None:
    """A context value as text; None (ignored) for missing values and types no field takes."""
    if v is None or isinstance(v, bool):
        return None
    if isinstance(v, str):
        return v
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    if isinstance(v, (float, np.floating)):
        if not math.isfinite(v):
            return None
        return str(int(v)) if float(v).is_integer() else str(float(v))
    return None


def _ctx_pairs(context: Context | None) -> list[tuple[str, str]] | None:
    """One event's or request's context as (field, value) pairs."""
    if context is None:
        return None
    if not isinstance(context, Mapping):
        raise ValueError(f"context must be a mapping of field to value (e.g. {{'device': 'mobile'}}), got {type(context).__name__}")
    pairs = []
    for f, v in context.items():
        if isinstance(f, str) and f in CONTEXT_FIELDS:
            t = _ctx_value(v)
            if t is not None:
                pairs.append((f, t))
    return pairs


def _ctx_columns(context: Any, n: int) -> list[tuple[str, list[str | None]]] | None:
    """The batch form of a context: a mapping of field to one value per event (a list or a
    numpy array), or a sequence of per-event mappings (None for an event without one)."""
    if context is None:
        return None
    if isinstance(context, Mapping):
        cols = []
        for f, col in context.items():
            if not (isinstance(f, str) and f in CONTEXT_FIELDS) or col is None:
                continue
            if isinstance(col, (str, bytes)) or not hasattr(col, "__len__"):
                raise ValueError(f"context[{f!r}] must hold one value per event (a list or an array), got {type(col).__name__}")
            if isinstance(col, np.ndarray) and col.ndim != 1:
                raise ValueError(f"context[{f!r}] must be one-dimensional, got an array of shape {col.shape}")
            if len(col) != n:
                raise ValueError(f"context[{f!r}] has {len(col)} values, expected {n} (one per event)")
            if isinstance(col, np.ndarray) and col.dtype.kind in "iuU":
                values = col.astype(str).tolist()  # ints and text: no per-value checks needed
            else:
                values = [v if type(v) is str else _ctx_value(v) for v in (col.tolist() if isinstance(col, np.ndarray) else col)]
            cols.append((f, values))
        return cols
    if isinstance(context, (str, bytes)) or not hasattr(context, "__len__"):
        raise ValueError("context must be a mapping of field to values, or one mapping per event")
    if len(context) != n:
        raise ValueError(f"context has {len(context)} entries, expected {n} (one per event)")
    fields: dict[str, list[str | None]] = {}
    for j, c in enumerate(context):
        for f, v in _ctx_pairs(c) or ():
            fields.setdefault(f, [None] * n)[j] = v
    return list(fields.items())


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _options(options: Mapping[str, Any]) -> list[tuple[str, str]]:
    pairs: list[tuple[str, str]] = []
    for name, value in options.items():
        if name == "event_weights":
            if not isinstance(value, Mapping):
                raise ValueError("event_weights must be a mapping of event type to weight")
            for event, weight in value.items():
                if event not in _core.EVENT_TYPES:
                    raise ValueError(
                        f"unknown event type {event!r} in event_weights; "
                        f"expected one of {', '.join(_core.EVENT_TYPES)}"
                    )
                pairs.append((f"weight_{event}", _text(weight)))
        elif name in _OPTION_NAMES:
            pairs.append((name, _text(value)))
        else:
            raise ValueError(f"unknown option {name!r}; known options: {', '.join(sorted(_OPTION_NAMES))}, event_weights")
    return pairs


def _seconds(ts: Any) -> float:
    if isinstance(ts, datetime):
        return ts.timestamp()
    if isinstance(ts, (int, float, np.integer, np.floating)) and not isinstance(ts, bool):
        try:
            return float(ts)
        except OverflowError:
            raise ValueError(f"ts {ts} is out of range for seconds since the epoch") from None
    raise ValueError(f"ts must be seconds since the epoch (a number) or a datetime, got {type(ts).__name__}")


class Recommender:
    """An online recommender for implicit feedback, learning from each event at once.

    It combines matrix factorisation trained by BPR with sampled negatives, an
    item-to-item co-occurrence signal ("viewed or bought together" within a user's recent
    items and sessions) and a trending-popularity prior. Every option has a default; see
    :func:`Recommender.default_options`.

    >>> rec = Recommender(dim=8, seed=7)
    >>> rec.learn_one("u1", "lamp", event="purchase")
    >>> rec.learn_one("u1", "bulb", event="add_to_cart")
    >>> rec.learn_one("u2", "lamp")
    >>> [item for item, _ in rec.recommend("u2", k=1)]
    ['bulb']
    >>> rec.recommend("someone-new", k=2)[0][0]    # unknown users get popular items
    'lamp'
    >>> rec.n_users, rec.n_items
    (2, 2)

    Options (keyword arguments): ``dim`` (64), ``lr``, ``lr_decay``, ``reg``,
    ``negatives``, ``window``, ``session_gap``, ``w_mf``, ``w_cooc``, ``w_pop``, ``seed``,
    ``event_weights`` (a mapping such as ``{"purchase": 5.0}``), ``simd`` and others.
    An unknown option or an out-of-range value raises :class:`ValueError`.

    Bounded memory (see :meth:`expire`): ``user_idle`` (180 days, in seconds of event
    time), ``max_users`` (2,000,000), ``item_idle`` (90 days), ``ctx_min_count`` (3),
    ``ctx_idle`` (90 days), ``max_context_keys`` (200,000); 0 turns a limit off.
    """

    def __init__(self, dim: int = 64, **options: Any) -> None:
        self._m = _core.Model(_options({"dim": dim, **options}))
        self.last_expired: dict[str, list[str]] = {"users": [], "items": [], "contexts": []}

    @classmethod
    def _wrap(cls, m: Any) -> Recommender:
        self = cls.__new__(cls)
        self._m = m
        self.last_expired = {"users": [], "items": [], "contexts": []}
        return self

    # -- bounded memory and erasure ------------------------------------------------------

    def expire(self, now: Any = None) -> list[str]:
        """Frees what the model no longer needs and returns the evicted user ids (delete
        their stored lists): users idle for ``user_idle`` seconds of event time before
        ``now`` (default: the newest event time learned), the least recently active users
        past ``max_users`` (including those the cap evicted during learning since the last
        call, see :meth:`drain_evicted`), items idle for ``item_idle`` seconds that are not
        in the catalogue (no text, see :meth:`set_in_catalogue`), and context keys not seen
        for ``ctx_idle`` seconds (or the least recently seen, when the table is nearly
        full). Freed rows are reused by new users and items. The retired items and pruned
        keys are in :attr:`last_expired`.

        >>> rec = Recommender(dim=4, user_idle=3600)
        >>> rec.learn_many(["old", "new"], ["a", "b"], ts=[0.0, 7200.0])
        2
        >>> rec.expire()
        ['old']
        >>> rec.n_users
        1
        """
        users, items, contexts = self._m.expire(None if now is None else _seconds(now))
        self.last_expired = {"users": list(users), "items": list(items), "contexts": list(contexts)}
        return list(users)

    def drain_evicted(self) -> list[str]:
        """The users the ``max_users`` cap evicted during learning since the last drain (or
        :meth:`expire`), oldest first. At most 1,000,000 wait; older ones are dropped and
        counted in ``memory_info()["evicted_dropped"]``."""
        return self._m.drain_evicted()

    def forget(self, users: Sequence[Id] | np.ndarray) -> int:
        """Erases users: their id, factors (zeroed), history, sessions and intent; returns
        how many were known. A later :meth:`save` holds no byte of their ids, and the users
        become unknown (they get the popular list). Item co-occurrence and item factors
        learned from their events stay: they hold no user id.

        >>> rec = Recommender(dim=4)
        >>> rec.learn_many(["alice", "bob"], ["a", "b"])
        2
        >>> rec.forget(["alice", "nobody"])
        1
        >>> rec.history("alice")
        []
        """
        if isinstance(users, (str, bytes)):
            raise ValueError("users must be a collection of ids, not a single string")
        return self._m.forget(users)

    def set_in_catalogue(self, items: Sequence[Id], in_catalogue: bool = True) -> None:
        """Marks items as in the catalogue (never retired by :meth:`expire`), or no longer.
        An item with text (:meth:`set_item_text`) is in the catalogue anyway."""
        if isinstance(items, (str, bytes)):
            raise ValueError("items must be a collection of ids, not a single string")
        self._m.set_catalogue(items, bool(in_catalogue))

    def memory_info(self) -> dict[str, float]:
        """Row counts: live users, items and context keys, rows allocated and free, context
        values waiting for admission, evicted ids waiting, and the clock (the newest event
        time seen)."""
        return dict(self._m.memory_info())

    # -- learning -----------------------------------------------------------------------

    def learn_one(
        self, user: Id, item: Id | None = None, event: str = "view", ts: Any = None, weight: float | None = None,
        context: Context | None = None, query: str | None = None,
    ) -> None:
        """Learns from one event. ``ts`` is seconds since the epoch (or a datetime).

        ``context`` is what was true when it happened: ``device``, ``hour`` (0–23 or a band:
        night, morning, afternoon, evening), ``weekday`` (0 = Monday, or a name), ``country``,
        ``region``, ``weather``, ``segment`` and ``intent`` (words). Each value is an
        embedding learned with the event; missing or unknown fields and values are ignored.
        A ``search`` event takes ``query`` (see :meth:`search`), an item, or both.
        """
        if event == "search":
            if query is None and item is None:
                raise ValueError("a search event needs query= (the search terms) or an item")
            if query is not None:
                self.search(user, query, ts)
            if item is None:
                return
        if item is None:
            raise ValueError(f"a {event} event needs an item")
        self._m.learn_one(user, item, event, None if ts is None else _seconds(ts), weight, _ctx_pairs(context))

    def search(self, user: Id, query: str, ts: Any = None) -> None:
        """A search: the query becomes the user's session intent until the session ends
        (``session_gap`` seconds without events), so items whose text matches move up, and
        the words are learned as context of what the user does next.

        >>> rec = Recommender(dim=4, seed=1)
        >>> rec.set_item_text(["l1", "l2", "m1", "m2"], ["desk lamp", "floor lamp", "tea mug", "big mug"])
        >>> for u in range(20):
        ...     _ = rec.learn_many([f"p{u}", f"p{u}"], ["m1", "m2"])
        >>> rec.learn_one("me", "m1", ts=100)
        >>> rec.recommend("me", k=1)[0][0]
        'm2'
        >>> rec.search("me", "lamp", ts=110)
        >>> sorted(i for i, _ in rec.recommend("me", k=2))
        ['l1', 'l2']
        >>> rec.intent("me")
        'lamp'
        """
        if not isinstance(query, str):
            raise ValueError(f"query must be text, got {type(query).__name__}")
        ts_arr = None if ts is None else np.array([_seconds(ts)], dtype=np.float64)
        self._m.search_many([user], [query], ts_arr)

    def intent(self, user: Id) -> str | None:
        """The user's session intent (their last search in this session), or None."""
        return self._m.user_intent(user)

    def learn_many(
        self,
        users: Sequence[Id] | np.ndarray,
        items: Sequence[Id] | np.ndarray,
        events: str | Sequence[str] | None = None,
        ts: Sequence[float] | np.ndarray | None = None,
        weights: Sequence[float] | np.ndarray | None = None,
        context: Mapping[str, Any] | Sequence[Context | None] | None = None,
    ) -> int:
        """Learns from many events in order, with the GIL released; returns their number.

        ``users`` and ``items`` are lists of ids or numpy integer arrays; ``events`` is one
        event type for all, or one per event; ``ts`` seconds since the epoch; ``weights``
        overrides the event type's weight; ``context`` maps each field to one value per
        event (lists or arrays, None where missing), or is one mapping per event.
        """
        n = len(users)
        ts_arr = None if ts is None else _float_array(ts, "ts", np.float64, n)
        w_arr = None if weights is None else _float_array(weights, "weights", np.float32, n)
        cols = _ctx_columns(context, n)
        return self._m.learn_many(users, items, events, ts_arr, w_arr, cols or None)

    def set_item_text(self, items: Sequence[Id], texts: Sequence[str]) -> None:
        """Sets the text (title, description) of items, creating the ones not seen yet.

        Item text adds a content signal (TF-IDF similarity to the user's recent items,
        weighted by ``w_text``), so a new item can be recommended before anyone took it.

        >>> rec = Recommender(dim=4, seed=1)
        >>> rec.set_item_text(["mug-red", "mug-blue", "sofa"], ["Red mug", "Blue mug", "Sofa"])
        >>> rec.learn_one("u", "mug-red")
        >>> rec.recommend("u", k=1)[0][0]
        'mug-blue'
        """
        if isinstance(texts, str):
            raise ValueError("texts must be a sequence of strings, one per item")
        texts = list(texts)
        if not all(isinstance(t, str) for t in texts):
            raise ValueError("texts must hold strings")
        self._m.set_item_text(items, texts)

    # -- recommending -------------------------------------------------------------------

    def recommend(
        self,
        user: Id,
        k: int = 10,
        exclude: Iterable[Id] | None = None,
        allow: Iterable[Id] | None = None,
        exclude_seen: bool = True,
        context: Context | None = None,
        explore: int = 0,
        ts: Any = None,
        weights: Mapping[str, float] | None = None,
    ) -> list[tuple[str, float]]:
        """The top ``k`` (item, score) pairs for ``user``, best first.

        ``exclude`` removes items, ``allow`` restricts to a set of items, ``exclude_seen``
        removes what the user already interacted with. ``context`` (the fields of
        :meth:`learn_one`) re-weighs the list by what sells in that context; an ``intent``
        there replaces the session's. ``explore`` gives up to that many of the last slots to
        new items (introduced by :meth:`set_item_text`, still without many events).
        ``ts`` (the time of the request) lets the model tell a new session from the current
        one (see the ``new_session_weight`` option).
        An unknown user gets popular items (in the context, when one is given).

        ``weights`` scores this request with other weights than the model's options, so
        that experiment variants which differ only in scoring share one model: a mapping of
        ``w_mf``, ``w_cooc``, ``w_pop``, ``w_text``, ``w_ctx`` (``{"w_ctx": 0.0}`` scores
        without the context factor) or ``w_intent`` to a value; the others keep the model's.
        An unknown name or a value the option would not take raises :class:`ValueError`.

        >>> rec = Recommender(dim=8, seed=7)
        >>> for u in range(5):
        ...     rec.learn_one(f"p{u}", "mug", event="purchase")
        >>> rec.learn_many(["q1", "q1", "me"], ["lamp", "bulb", "lamp"])
        3
        >>> [item for item, _ in rec.recommend("me", k=2)]          # bought together first
        ['bulb', 'mug']
        >>> [item for item, _ in rec.recommend("me", k=2, weights={"w_pop": 10.0})]
        ['mug', 'bulb']
        """
        k = _check_k(k)
        return self._m.recommend(user, k, _id_list(exclude), _id_list(allow), exclude_seen, _ctx_pairs(context),
                                 _check_explore(explore), None if ts is None else _seconds(ts), _weights(weights))

    def recommend_many(self, users: Sequence[Id], k: int = 10, exclude_seen: bool = True,
                       context: Context | None = None, explore: int = 0,
                       weights: Mapping[str, float] | None = None) -> list[list[tuple[str, float]]]:
        """:meth:`recommend` for many users (one context and one set of ``weights`` for
        all), in parallel with the GIL released.

        >>> rec = Recommender(dim=8, seed=7)
        >>> rec.learn_many(["a", "a", "b", "c"], ["lamp", "bulb", "lamp", "mug"])
        4
        >>> lists = rec.recommend_many(["b", "c"], k=1, weights={"w_cooc": 0.5})
        >>> lists == [rec.recommend(u, k=1, weights={"w_cooc": 0.5}) for u in ["b", "c"]]
        True
        """
        return self._m.recommend_many(users, _check_k(k), exclude_seen, _ctx_pairs(context), _check_explore(explore),
                                      _weights(weights))

    def recommend_explained(self, user: Id, k: int = 10, exclude: Iterable[Id] | None = None,
                            allow: Iterable[Id] | None = None, exclude_seen: bool = True,
                            context: Context | None = None, explore: int = 0, ts: Any = None,
                            weights: Mapping[str, float] | None = None) -> list[tuple[str, float, Reason]]:
        """:meth:`recommend`, with the :class:`~recofast.explain.Reason` of each item: the
        signal the ranker counted most for it (see :mod:`recofast.explain`).

        >>> rec = Recommender(dim=8, seed=7)
        >>> rec.learn_many(["q1", "q1", "me"], ["lamp", "bulb", "lamp"])
        3
        >>> item, score, why = rec.recommend_explained("me", k=1)[0]
        >>> item, why.kind, why.item
        ('bulb', 'cooc', 'lamp')
        """
        got = self._m.recommend_why(user, _check_k(k), _id_list(exclude), _id_list(allow), exclude_seen,
                                    _ctx_pairs(context), _check_explore(explore),
                                    None if ts is None else _seconds(ts), _weights(weights))
        return [(i, s, Reason(kind, w or None, d, dict(c))) for i, s, kind, w, d, c in got]

    def recommend_many_explained(self, users: Sequence[Id], k: int = 10, exclude_seen: bool = True,
                                 context: Context | None = None, explore: int = 0,
                                 weights: Mapping[str, float] | None = None) -> list[list[tuple[str, float, Reason]]]:
        """:meth:`recommend_many` with each item's :class:`~recofast.explain.Reason` (without
        the contributions), in parallel with the GIL released."""
        got = self._m.recommend_many_why(users, _check_k(k), exclude_seen, _ctx_pairs(context),
                                         _check_explore(explore), _weights(weights))
        return [[(i, s, Reason(kind, w or None, d)) for i, s, kind, w, d in lst] for lst in got]

    def explain(self, user: Id, item: Id, context: Context | None = None, ts: Any = None,
                weights: Mapping[str, float] | None = None, exclude_seen: bool = False) -> Reason | None:
        """Why ``item`` ranks where it does for ``user``: its :class:`~recofast.explain.Reason`
        with each feature's contribution to the ranker's score (``w × x``) and its rank among
        the candidates; None when the item is not among the ranker's candidates (the
        ``ranker_candidates`` best of the first stage, and the trending and new items).

        >>> rec = Recommender(dim=8, seed=7)
        >>> rec.learn_many(["q1", "q1", "me"], ["lamp", "bulb", "lamp"])
        3
        >>> why = rec.explain("me", "bulb", exclude_seen=True)
        >>> why.kind, why.item, why.rank, why.contributions["blend"] > 0
        ('cooc', 'lamp', 0, True)
        >>> rec.explain("me", "no-such-item") is None
        True
        """
        n = int(dict(self._m.options()).get("ranker_candidates", "100")) + 40
        got = self._m.recommend_why(user, n, None, None, exclude_seen, _ctx_pairs(context), 0,
                                    None if ts is None else _seconds(ts), _weights(weights))
        for rank, (i, s, kind, w, d, c) in enumerate(got):
            if i == str(item):
                return Reason(kind, w or None, d, dict(c), rank, s)
        return None

    def ranker_weights(self) -> dict[str, dict[str, float]]:
        """The learned second stage's weights, per shopper state (``new:0`` … ``session:10+``:
        a new session or not × the history length), by feature; the per-field context
        weights are the ``ctx_<field>`` entries.

        >>> w = Recommender(dim=8).ranker_weights()
        >>> w["session:10+"]["blend"], w["session:10+"]["ctx_hour"]
        (1.0, 0.0)
        """
        buckets, _pairs = self._m.ranker_weights()
        return {b: dict(fw) for b, fw in buckets}

    def context_affinities(self, top: int = 100) -> dict[str, list[tuple[str, float]]]:
        """Each learned context value (``"device=mobile"``, ``"hour=evening"``, ...) with its
        ``top`` items by affinity (a z-score of the context vector with the item's, positive
        only): what serving needs to apply context without the model."""
        return dict(self._m.context_affinities(_check_k(top)))

    def fresh_items(self) -> list[str]:
        """New items (introduced by :meth:`set_item_text` before their first events) that are
        still candidates for exploration, newest first."""
        return self._m.fresh_items()

    @staticmethod
    def context_keys(context: Context) -> list[str]:
        """The embedding keys of a context, as the model normalises it.

        >>> Recommender.context_keys({"device": "Mobile", "hour": 20, "weekday": 6, "mood": "x"})
        ['device=mobile', 'hour=evening', 'hour=20', 'weekday=sun']
        """
        return _core.Model.context_keys(_ctx_pairs(context) or [])

    def similar_items(self, item: Id, k: int = 10, weights: Mapping[str, float] | None = None) -> list[tuple[str, float]]:
        """Items most like ``item`` (co-occurrence and factor similarity); [] if unknown.
        ``weights`` as for :meth:`recommend`; ``w_cooc`` and ``w_mf`` weigh the two here."""
        return self._m.similar_items(item, _check_k(k), _weights(weights))

    # -- inspection and export -----------------------------------------------------------

    def item_factors(self) -> tuple[list[str], np.ndarray]:
        """(item ids, float32 array of shape (n_items, dim))."""
        return self._m.item_factors()

    def user_factors(self) -> tuple[list[str], np.ndarray]:
        """(user ids, float32 array of shape (n_users, dim))."""
        return self._m.user_factors()

    def history(self, user: Id) -> list[str]:
        """The user's most recent items, most recent first ([] for an unknown user)."""
        h = self._m.user_history(user)
        return [] if h is None else list(h[0])

    def has_seen(self, user: Id, item: Id) -> bool:
        """Whether the user had a positive event on the item."""
        return self._m.has_seen(user, item)

    def adapt(self, lr_boost: float = 2.0, recency_decay: float = 0.2, events: int = 2_000) -> None:
        """Adapts to a detected drift for the next ``events`` events: a learning rate
        ``lr_boost`` times higher, and scoring that forgets older context faster
        (the p-th most recent item weighs ``recency_decay**p``).

        :class:`recofast.adaptation.DriftMonitor` calls this when a detector fires.
        """
        if isinstance(events, bool) or not isinstance(events, (int, np.integer)) or events < 0:
            raise ValueError(f"events must be a non-negative integer, got {events!r}")
        self._m.adapt(float(lr_boost), float(recency_decay), int(events))

    @property
    def adapting(self) -> bool:
        """Whether an adaptation started by :meth:`adapt` is in force."""
        return self._m.adaptation()[0]

    def refresh(self) -> None:
        """Rebuilds the scoring snapshot of the item factors now (it is rebuilt on a
        cadence of ``snapshot_every`` events or ``snapshot_ms`` milliseconds anyway)."""
        self._m.refresh()

    @property
    def n_users(self) -> int:
        return self._m.n_users

    @property
    def n_items(self) -> int:
        return self._m.n_items

    @property
    def events_learned(self) -> int:
        """Events learned so far (all types, including zero-weight ones)."""
        return self._m.events

    @property
    def simd_level(self) -> str:
        return self._m.simd_level

    def options(self) -> dict[str, str]:
        """The model's options, as text."""
        return dict(self._m.options())

    @staticmethod
    def default_options() -> dict[str, str]:
        """Every option with its default, as text."""
        return dict(_core.default_options())

    # -- engines that share items -------------------------------------------------------

    def share_items(self, cap: int = 100_000) -> None:
        """Starts gathering what learning does to items, for :meth:`take_item_delta`
        (``cap``: the most items one delta gathers; updates beyond it are dropped and
        counted in :attr:`item_delta_dropped`); ``cap=0`` stops."""
        if not isinstance(cap, int) or isinstance(cap, bool) or cap < 0:
            raise ValueError(f"cap must be a whole number ≥ 0, got {cap!r}")
        self._m.share_items(cap)

    def set_replay(self, share: bool = True, items: bool = True) -> None:
        """How the next learning calls treat their events, while replaying events whose
        effect on items has already been shared as deltas: ``share=False`` leaves them out
        of :meth:`take_item_delta` (an engine that restarts from its checkpoint replays the
        events it had shared), ``items=False`` learns them for their users only, leaving
        items, popularity and co-occurrence as the deltas made them (an engine that takes a
        partition over replays the previous owner's events). ``set_replay()`` is normal
        learning again.

        >>> a, b = Recommender(dim=8, seed=1), Recommender(dim=8, seed=2)
        >>> a.share_items()
        >>> a.learn_many(["u1", "u1"], ["lamp", "bulb"], ts=[1.0, 2.0])
        2
        >>> for d in a.take_item_delta():
        ...     _ = b.apply_item_delta(d)
        >>> b.set_replay(share=False, items=False)
        >>> b.learn_many(["u1", "u1"], ["lamp", "bulb"], ts=[1.0, 2.0])
        2
        >>> b.set_replay()
        >>> b.take_item_delta(), "u1" in b.user_factors()[0]
        ([], True)
        """
        self._m.set_replay(bool(share), bool(items))

    def take_item_delta(self, max_bytes: int = 1 << 20) -> list[bytes]:
        """What learning did to items since the last call (co-occurrence increments,
        popularity, factor and bias changes; never anything about users), as compact
        binary deltas of at most ``max_bytes`` each (a message's limit) for another model's
        :meth:`apply_item_delta`. Empty when nothing was learned or sharing is off.

        >>> a, b = Recommender(dim=8, seed=1), Recommender(dim=8, seed=2)
        >>> a.share_items()
        >>> a.learn_many(["u", "u"], ["lamp", "bulb"], events=["purchase", "purchase"])
        2
        >>> [b.apply_item_delta(d) for d in a.take_item_delta()]
        [(2, 2)]
        >>> [i for i, _ in b.similar_items("lamp", k=1)]
        ['bulb']
        """
        return self._m.take_item_delta(max_bytes)

    def apply_item_delta(self, data: bytes) -> tuple[int, int]:
        """Applies another model's :meth:`take_item_delta`: (items, pairs) applied. Its items
        are created if new. Raises ``ValueError`` (applying nothing) on an invalid delta."""
        return self._m.apply_item_delta(bytes(data))

    @property
    def item_delta_dropped(self) -> int:
        """Item updates dropped because a delta's outbox was full, since sharing started."""
        return self._m.item_delta_dropped()

    def import_users(self, other: Recommender, users: Iterable[Id]) -> int:
        """Copies the ``users`` that ``other`` knows (their factors, recent and seen items)
        into this model, replacing any it knows: how an engine takes over the users of a
        partition from the previous owner's checkpoint. Returns how many were copied."""
        return self._m.import_users(other._m, list(users))

    # -- persistence ----------------------------------------------------------------------

    def save(self, path: str | os.PathLike[str]) -> None:
        """Writes a versioned, checksummed snapshot atomically (temp file, fsync, rename)."""
        self._m.save(os.fspath(path))

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Recommender:
        """Reads a snapshot written by :meth:`save`.

        Raises :class:`recofast.errors.SnapshotError` if the file is truncated or corrupt.
        """
        return cls._wrap(_core.Model.load(os.fspath(path)))

    def __getstate__(self) -> bytes:
        return bytes(self._m.to_bytes())

    def __setstate__(self, state: bytes) -> None:
        self._m = _core.Model.from_bytes(state)
        self.last_expired = {"users": [], "items": [], "contexts": []}

    def __repr__(self) -> str:
        return f"Recommender(dim={self.options()['dim']}, users={self.n_users}, items={self.n_items})"


def _weights(weights: Mapping[str, float] | None) -> list[tuple[str, float]] | None:
    """Scoring weights of one request as (name, value) pairs; the core checks names and values."""
    if weights is None:
        return None
    if not isinstance(weights, Mapping):
        raise ValueError(f"weights must be a mapping of weight name to value (e.g. {{'w_ctx': 0.0}}), got {type(weights).__name__}")
    return list(weights.items())


def _check_explore(explore: Any) -> int:
    if isinstance(explore, bool) or not isinstance(explore, (int, np.integer)) or not 0 <= explore <= 1_000_000:
        raise ValueError(f"explore must be an integer between 0 and 1,000,000 (at most k slots are used), got {explore!r}")
    return int(explore)


def _check_k(k: Any) -> int:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
        raise ValueError(f"k must be a positive integer, got {k!r}")
    if not 0 < k <= 1_000_000_000:
        raise ValueError(f"k must be a positive integer (at most 1,000,000,000), got {k}")
    return int(k)


def _id_list(ids: Iterable[Id] | None) -> list[Id] | None:
    if ids is None:
        return None
    if isinstance(ids, (str, bytes)):
        raise ValueError("exclude/allow must be a collection of ids, not a single string")
    return list(ids)


def _float_array(values: Any, name: str, dtype: Any, n: int) -> np.ndarray:
    if isinstance(values, np.ndarray) and values.dtype.kind not in "fiu":
        raise ValueError(f"{name} must be numeric, got an array of dtype {values.dtype}")
    try:
        arr = np.ascontiguousarray(values, dtype=dtype)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{name} must be numeric: {e}") from None
    if arr.ndim != 1 or len(arr) != n:
        raise ValueError(f"{name} has shape {arr.shape}, expected ({n},) like users")
    return arr
