"""The Python API of the online recommender (`recofast.Recommender`)."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

import numpy as np

from recofast import _core

Id = str | int

_OPTION_NAMES = {name for name, _ in _core.default_options()}


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
        return float(ts)
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
    """

    def __init__(self, dim: int = 64, **options: Any) -> None:
        self._m = _core.Model(_options({"dim": dim, **options}))

    @classmethod
    def _wrap(cls, m: Any) -> Recommender:
        self = cls.__new__(cls)
        self._m = m
        return self

    # -- learning -----------------------------------------------------------------------

    def learn_one(
        self, user: Id, item: Id, event: str = "view", ts: Any = None, weight: float | None = None
    ) -> None:
        """Learns from one event. ``ts`` is seconds since the epoch (or a datetime)."""
        self._m.learn_one(user, item, event, None if ts is None else _seconds(ts), weight)

    def learn_many(
        self,
        users: Sequence[Id] | np.ndarray,
        items: Sequence[Id] | np.ndarray,
        events: str | Sequence[str] | None = None,
        ts: Sequence[float] | np.ndarray | None = None,
        weights: Sequence[float] | np.ndarray | None = None,
    ) -> int:
        """Learns from many events in order, with the GIL released; returns their number.

        ``users`` and ``items`` are lists of ids or numpy integer arrays; ``events`` is one
        event type for all, or one per event; ``ts`` seconds since the epoch; ``weights``
        overrides the event type's weight.
        """
        n = len(users)
        ts_arr = None if ts is None else _float_array(ts, "ts", np.float64, n)
        w_arr = None if weights is None else _float_array(weights, "weights", np.float32, n)
        return self._m.learn_many(users, items, events, ts_arr, w_arr)

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
    ) -> list[tuple[str, float]]:
        """The top ``k`` (item, score) pairs for ``user``, best first.

        ``exclude`` removes items, ``allow`` restricts to a set of items, ``exclude_seen``
        removes what the user already interacted with. An unknown user gets popular items.
        """
        k = _check_k(k)
        return self._m.recommend(user, k, _id_list(exclude), _id_list(allow), exclude_seen)

    def recommend_many(self, users: Sequence[Id], k: int = 10, exclude_seen: bool = True) -> list[list[tuple[str, float]]]:
        """:meth:`recommend` for many users, in parallel with the GIL released."""
        return self._m.recommend_many(users, _check_k(k), exclude_seen)

    def similar_items(self, item: Id, k: int = 10) -> list[tuple[str, float]]:
        """Items most like ``item`` (co-occurrence and factor similarity); [] if unknown."""
        return self._m.similar_items(item, _check_k(k))

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

    def __repr__(self) -> str:
        return f"Recommender(dim={self.options()['dim']}, users={self.n_users}, items={self.n_items})"


def _check_k(k: Any) -> int:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
        raise ValueError(f"k must be a positive integer, got {k!r}")
    if k <= 0:
        raise ValueError(f"k must be a positive integer, got {k}")
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
