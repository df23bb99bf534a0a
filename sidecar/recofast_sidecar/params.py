"""Request parsing: query parameters, ids, the request's context, filters, and who is asking
(user tokens and producer keys). Anything wrong raises :class:`BadRequest`, which the app
answers with a 4xx and a JSON error.

>>> _int({"k": "5"}, "k", 10, 1, 200), _int({}, "k", 10, 1, 200)
(5, 10)
>>> _int({"k": "0"}, "k", 10, 1, 200)
Traceback (most recent call last):
...
recofast_sidecar.params.BadRequest: `k` must be between 1 and 200
>>> parse_context({"country": "gb", "device": "Mobile", "hour": "20"}).segments()
['country=GB|device=mobile|hour=evening', 'country=GB', 'device=mobile', 'hour=evening', 'all']
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import math
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from recofast_sidecar.protocol.context import context_keys, request_segments
from recofast_sidecar.rerank import Filters


class BadRequest(Exception):
    """Bad input: answered with ``status`` (a 4xx) and a JSON error."""

    def __init__(self, msg: str, status: int = 400) -> None:
        super().__init__(msg)
        self.msg = msg
        self.status = status


TOKEN = re.compile(r"^[A-Za-z0-9_.:\-]{1,64}$")
"""A short label (device, weather): what a context value may look like."""
_ID_MAX = 512
_INTENT = re.compile(r"^[\w .,'\-]{1,128}$", re.UNICODE)
_COUNTRY = re.compile(r"[A-Za-z]{2,3}")
_SEGMENT = re.compile(r"[A-Za-z0-9=|_.:\-]+")


def _int(q: Mapping[str, str], name: str, default: int, lo: int, hi: int) -> int:
    raw = q.get(name)
    if raw is None:
        return default
    try:
        v = int(raw)
    except ValueError:
        raise BadRequest(f"`{name}` must be an integer") from None
    if not lo <= v <= hi:
        raise BadRequest(f"`{name}` must be between {lo} and {hi}")
    return v


def _float(q: Mapping[str, str], name: str, lo: float, hi: float) -> float | None:
    raw = q.get(name)
    if raw is None:
        return None
    try:
        v = float(raw)
    except ValueError:
        raise BadRequest(f"`{name}` must be a number") from None
    if not math.isfinite(v) or not lo <= v <= hi:
        raise BadRequest(f"`{name}` must be between {lo:g} and {hi:g}")
    return v


def _token(q: Mapping[str, str], name: str, pattern: re.Pattern[str] = TOKEN) -> str | None:
    raw = q.get(name)
    if raw is None:
        return None
    if not pattern.match(raw):
        raise BadRequest(f"`{name}` has an invalid value")
    return raw


def ident(raw: str, what: str) -> str:
    """A user or item id from the path or a list: not empty, at most 512 bytes, no control
    characters."""
    if not raw or len(raw.encode()) > _ID_MAX or any(ord(ch) < 32 for ch in raw):
        raise BadRequest(f"invalid {what}")
    return raw


def k_param(q: Mapping[str, str], max_k: int) -> int:
    """``k``, the list length (default 10)."""
    return _int(q, "k", 10, 1, max_k)


def fraction(q: Mapping[str, str], name: str) -> float:
    """A number from 0 to 1 (``diversity``, ``explore``); 0 when absent."""
    return _float(q, name, 0.0, 1.0) or 0.0


def segment_param(q: Mapping[str, str]) -> tuple[str, str]:
    """``segment`` (default ``all``) and ``kind`` (``popular`` or ``trending``) of ``/v1/popular``."""
    seg = q.get("segment", "all")
    if not seg or len(seg) > 256 or not _SEGMENT.fullmatch(seg):
        raise BadRequest("invalid `segment`")
    kind = q.get("kind", "popular")
    if kind not in ("popular", "trending"):
        raise BadRequest("`kind` must be popular or trending")
    return seg, kind


# -- context ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Context:
    device: str | None = None
    country: str | None = None
    hour: int | None = None
    weather: str | None = None
    intent: str | None = None

    def keys(self, clock: tuple[int, int]) -> list[str]:
        """The context keys of the request, as the core normalises them (the hour and weekday
        of ``clock`` when the request gave no hour). Intent first: at most eight keys count."""
        hour, weekday = (self.hour, None) if self.hour is not None else clock
        ck = (self.intent, self.device, self.country, self.weather, hour, weekday)
        hit = _KEYS_CACHE.get(ck)
        if hit is None:
            hit = context_keys(
                {"intent": self.intent, "device": self.device, "country": self.country, "weather": self.weather,
                 "hour": hour, "weekday": weekday}
            )
            if len(_KEYS_CACHE) >= 10_000:
                _KEYS_CACHE.clear()
            _KEYS_CACHE[ck] = hit
        return hit

    def segments(self) -> list[str]:
        """Segment keys to try, most specific first (as the engine writes them), then ``all``."""
        return request_segments(self.country, self.device, self.hour)


_KEYS_CACHE: dict[tuple[Any, ...], list[str]] = {}


class Clock:
    """Hour of day and weekday (0 = Monday) now, in a time zone; recomputed once a minute."""

    def __init__(self, timezone: str) -> None:
        from zoneinfo import ZoneInfo

        self.timezone = timezone
        self.tz = ZoneInfo(timezone)
        self._until = 0.0
        self._now = (0, 0)

    def now(self) -> tuple[int, int]:
        t = time.time()
        if t >= self._until:
            from datetime import datetime

            d = datetime.fromtimestamp(t, self.tz)
            self._now = (d.hour, d.weekday())
            self._until = t - (t % 60) + 60  # offsets change on whole minutes at most
        return self._now


def parse_context(q: Mapping[str, str]) -> Context:
    """The request's context: ``device``, ``country``, ``hour``, ``weather``, ``intent``."""
    country = _token(q, "country")
    if country is not None:
        if not _COUNTRY.fullmatch(country):
            raise BadRequest("`country` must be a 2 or 3 letter code")
        country = country.upper()
    device = _token(q, "device")
    return Context(
        device=None if device is None else device.lower(),
        country=country,
        hour=_int(q, "hour", -1, 0, 23) if "hour" in q else None,
        weather=_token(q, "weather"),
        intent=_token(q, "intent", _INTENT),
    )


def parse_filters(q: Mapping[str, str]) -> Filters:
    """``category``, ``min_price``, ``max_price`` and ``exclude`` (comma-separated ids)."""
    lo = _float(q, "min_price", 0.0, 1e12)
    hi = _float(q, "max_price", 0.0, 1e12)
    if lo is not None and hi is not None and lo > hi:
        raise BadRequest("`min_price` is above `max_price`")
    exclude: frozenset[str] = frozenset()
    raw = q.get("exclude")
    if raw:
        ids = [x for x in raw.split(",") if x]
        if len(ids) > 1000:
            raise BadRequest("`exclude` holds at most 1000 ids")
        exclude = frozenset(ident(x, "id in `exclude`") for x in ids)
    cat = q.get("category")
    if cat is not None and (not cat or len(cat) > 256):
        raise BadRequest("`category` must be 1 to 256 characters")
    return Filters(category=cat, min_price=lo, max_price=hi, exclude=exclude)


@dataclass(frozen=True)
class ListParams:
    """The parameters of a list request (``k``, the context, the filters, ``diversity`` and
    ``explore``), parsed once per distinct query string. ``serial`` tells two parses apart
    cheaply (a cache key), whatever their values."""

    k: int
    ctx: Context
    flt: Filters
    diversity: float
    explore: float
    serial: int


_SERIALS = itertools.count()


def parse_list_params(q: Mapping[str, str], max_k: int) -> ListParams:
    """The parameters of ``/v1/recommendations/{user}`` (checked in this order: ``k``, the
    context, the filters, ``diversity``, ``explore``).

    >>> p = parse_list_params({"k": "5", "device": "Mobile", "diversity": "0.5"}, 200)
    >>> p.k, p.ctx.device, p.diversity, p.explore
    (5, 'mobile', 0.5, 0.0)
    """
    k = k_param(q, max_k)
    ctx = parse_context(q)
    flt = parse_filters(q)
    return ListParams(k, ctx, flt, fraction(q, "diversity"), fraction(q, "explore"), next(_SERIALS))


class ParamCache:
    """Parsed query strings (at most ``size``, the oldest dropped first): a query string
    seen before is not parsed again. Only queries that parse are kept; a bad one raises
    :class:`BadRequest` every time.

    >>> c = ParamCache(2)
    >>> c.get("k=3", {"k": "3"}, 200) is c.get("k=3", {"k": "3"}, 200)
    True
    """

    def __init__(self, size: int = 1024) -> None:
        self.size = size
        self._parsed: dict[str, ListParams] = {}

    def __len__(self) -> int:
        return len(self._parsed)

    def get(self, query_string: str, q: Mapping[str, str], max_k: int) -> ListParams:
        hit = self._parsed.get(query_string)
        if hit is None:
            hit = parse_list_params(q, max_k)
            if len(self._parsed) >= self.size:
                del self._parsed[next(iter(self._parsed))]
            self._parsed[query_string] = hit
        return hit


# -- who is asking ----------------------------------------------------------------------------


def user_token(secret: str, user: str) -> str:
    """The token a shop backend hands to ``user``: hex HMAC-SHA256 of the user id.

    >>> user_token("s3cret", "u1")[:16]
    '8f0d05b747219f7d'
    """
    return hmac.new(secret.encode(), user.encode(), hashlib.sha256).hexdigest()


def given_token(headers: Mapping[str, str], q: Mapping[str, str]) -> str | None:
    """The user token of a request: an ``Authorization: Bearer`` header, else ``?token=``."""
    auth = headers.get("Authorization", "")
    tok = auth[7:].strip() if auth[:7].lower() == "bearer " else q.get("token")
    return tok or None


def token_is(secret: str, tok: str, user: str) -> bool:
    """Whether ``tok`` is ``user``'s token (constant time; any text, non-ASCII too, is safe)."""
    return tok.isascii() and hmac.compare_digest(tok.encode(), user_token(secret, user).encode())


def check_user_token(secret: str | None, tok: str | None, user: str) -> None:
    """401 without a token, 403 with another user's, when tokens are on (``secret`` set)."""
    if not secret:
        return
    if not tok:
        raise BadRequest("a user token is required", 401)
    if not token_is(secret, tok, user):
        raise BadRequest("the token does not belong to this user", 403)


def is_producer(key: str, keys: tuple[str, ...]) -> bool:
    """Whether ``key`` is one of the producer keys, compared in constant time with each."""
    try:
        given = key.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        return False
    found = False
    for k in keys:
        found |= hmac.compare_digest(given, k.encode())
    return found


__all__ = [
    "BadRequest",
    "Clock",
    "Context",
    "ListParams",
    "ParamCache",
    "check_user_token",
    "fraction",
    "given_token",
    "ident",
    "is_producer",
    "k_param",
    "parse_context",
    "parse_filters",
    "parse_list_params",
    "segment_param",
    "token_is",
    "user_token",
]
