"""Context keys, hour bands and segment keys: the core's normalisation of a context, in pure
Python, and the popularity segments engine and sidecar share.

The engine exports, for each learned context key (``device=mobile``, ``hour=evening``,
``intent=lamp``), the items with the highest affinity to it. To use them the sidecar must
turn a request's context into exactly the keys the core would
(``recofast.Recommender.context_keys``, ``rust/core/src/context.rs``): values trimmed (Rust's
whitespace) and lowercased; ``hour`` an hour 0–23 (giving its band and the hour) or a band
name; ``weekday`` 0–6 (0 = Monday) or a name; ``intent`` up to three words (alphanumeric runs
of two or more characters, lowercased, each once); other fields cut at 64 characters;
unknown fields and values a field cannot take give no key; intent words first; each key
once; at most eight keys.

>>> context_keys({"device": " Mobile ", "hour": 20, "weekday": 6, "mood": "x", "intent": "Desk LAMP, desk"})
['intent=desk', 'intent=lamp', 'device=mobile', 'hour=evening', 'hour=20', 'weekday=sun']
>>> context_keys({"hour": "25", "weekday": "funday", "country": ""})
[]
"""

from __future__ import annotations

import bisect
import math
import re
from collections.abc import Mapping
from typing import Any

from recofast_sidecar.protocol._unicode import ALNUM_ENDS, ALNUM_STARTS, LOWER

CONTEXT_FIELDS: tuple[str, ...] = ("device", "hour", "weekday", "country", "region", "weather", "segment", "intent")
"""The fields the model learns from (the core's ``CONTEXT_FIELDS``)."""
MAX_KEYS = 8
MAX_INTENT_WORDS = 3
MAX_VALUE_CHARS = 64
HOUR_BANDS = ("night", "morning", "afternoon", "evening")
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
# Rust's char::is_whitespace (the White_Space property), which str.trim() strips.
_RUST_WS = "\t\n\x0b\x0c\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000"
_ASCII_WORD = re.compile(r"[A-Za-z0-9]+")
_U32_MAX = 2**32 - 1
_U64_MAX = 2**64 - 1


def hour_band(hour: int) -> str:
    """``night`` (0–5), ``morning`` (6–11), ``afternoon`` (12–17), ``evening`` (18–23)."""
    return HOUR_BANDS[hour // 6]


def _value(v: Any) -> str | None:
    """A context value as the Python API passes it to the core (``recommender._ctx_value``)."""
    if v is None or isinstance(v, bool):
        return None
    if isinstance(v, str):
        return v
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if not math.isfinite(v):
            return None
        return str(int(v)) if v.is_integer() else str(v)
    try:  # numpy scalars, without importing numpy here
        import numpy as np

        if isinstance(v, np.integer):
            return str(int(v))
        if isinstance(v, np.floating):
            return _value(float(v))
    except ImportError:  # pragma: no cover
        pass
    return None


def _parse_unsigned(v: str, most: int) -> int | None:
    """Rust's ``str::parse::<u32>`` / ``<usize>``: an optional ``+``, ASCII digits, no overflow."""
    s = v[1:] if v[:1] == "+" else v
    if not s or not s.isascii() or not s.isdigit():
        return None
    n = int(s)
    return n if n <= most else None


def _isalnum(ch: str) -> bool:
    if ch.isalnum():
        return True
    cp = ord(ch)
    i = bisect.bisect_right(ALNUM_STARTS, cp) - 1
    return i >= 0 and cp <= ALNUM_ENDS[i]


def _lower(s: str) -> str:
    """Rust's ``str::to_lowercase`` (Python's, with the characters whose mapping differs)."""
    if s.isascii():
        return s.lower()
    if not any(ord(ch) in LOWER for ch in s):
        return s.lower()
    return "".join(LOWER.get(ord(ch)) or ch.lower() for ch in s)


def _lower_chars(s: str) -> str:
    """Rust's per-character ``char::to_lowercase`` (no final-sigma rule)."""
    if s.isascii():
        return s.lower()
    return "".join(LOWER.get(ord(ch)) or ch.lower() for ch in s)


def tokenize(text: str) -> list[str]:
    """The core's ``text::tokenize``: alphanumeric runs of two or more characters,
    lowercased, each once, in first-seen order.

    >>> tokenize("A big, BIG lamp-shade 2x x")
    ['big', 'lamp', 'shade', '2x']
    """
    if text.isascii():
        words = _ASCII_WORD.findall(text)
    else:
        words, cur = [], []
        for ch in text:
            if _isalnum(ch):
                cur.append(ch)
            elif cur:
                words.append("".join(cur))
                cur = []
        if cur:
            words.append("".join(cur))
    out: list[str] = []
    for w in words:
        if len(w) < 2:
            continue
        w = _lower(w)
        if w not in out:
            out.append(w)
    return out


def keys_of(field: str, value: str, out: list[str]) -> None:
    """Appends the keys of one (field, value) to ``out`` (the core's ``keys_of``)."""
    v = value.strip(_RUST_WS)
    if not v:
        return
    if field == "hour":
        h = _parse_unsigned(v, _U32_MAX)
        if h is not None:
            if h < 24:
                out.append(f"hour={hour_band(h)}")
                out.append(f"hour={h}")
        elif v.isascii():
            low = v.lower()
            if low in HOUR_BANDS:
                out.append(f"hour={low}")
    elif field == "weekday":
        d = _parse_unsigned(v, _U64_MAX)
        if d is not None:
            if d < 7:
                out.append(f"weekday={WEEKDAYS[d]}")
        else:
            low = _lower(v)
            for day in WEEKDAYS:
                if low.startswith(day):
                    out.append(f"weekday={day}")
                    break
    elif field == "intent":
        for w in tokenize(v)[:MAX_INTENT_WORDS]:
            out.append(f"intent={w}")
    elif field in CONTEXT_FIELDS:
        out.append(f"{field}={_lower_chars(v[:MAX_VALUE_CHARS])}")


def context_keys(context: Mapping[str, Any] | None) -> list[str]:
    """The keys of a context (a mapping of field to value), as the core normalises it: what
    ``recofast.Recommender.context_keys`` returns, without the core."""
    if not context:
        return []
    out: list[str] = []
    items = list(context.items())
    for f, raw in [p for p in items if p[0] == "intent"] + [p for p in items if p[0] != "intent"]:
        if isinstance(f, str) and f in CONTEXT_FIELDS:
            v = _value(raw)
            if v is not None:
                keys_of(f, v, out)
    return list(dict.fromkeys(out))[:MAX_KEYS]


# -- segments ---------------------------------------------------------------------------------
# The engine keeps popular and trending lists per segment; the sidecar looks them up for a
# request's context. Both build the keys here.

SEGMENT_ALL = "all"
"""The segment of the whole shop."""


def segment_of(country: str, device: str, hour: int) -> str:
    """The full segment key of a context (what an event counts in, besides its parts).

    >>> segment_of("GB", "mobile", 20)
    'country=GB|device=mobile|hour=evening'
    """
    return f"country={country}|device={device}|hour={hour_band(hour)}"


def segment_variants(segment: str) -> tuple[str, ...]:
    """Every segment an event of ``segment`` counts in: itself, ``all`` and each of its parts.

    >>> segment_variants("country=GB|device=mobile|hour=evening")
    ('country=GB|device=mobile|hour=evening', 'all', 'country=GB', 'device=mobile', 'hour=evening')
    """
    return (segment, SEGMENT_ALL, *segment.split("|"))


def request_segments(country: str | None, device: str | None, hour: int | None) -> list[str]:
    """The segments to try for a request, most specific first, then ``all``.

    >>> request_segments("GB", None, 7)
    ['country=GB', 'hour=morning', 'all']
    """
    out = []
    if country and device and hour is not None:
        out.append(segment_of(country, device, hour))
    if country:
        out.append(f"country={country}")
    if device:
        out.append(f"device={device}")
    if hour is not None:
        out.append(f"hour={hour_band(hour)}")
    out.append(SEGMENT_ALL)
    return out


__all__ = [
    "CONTEXT_FIELDS",
    "HOUR_BANDS",
    "SEGMENT_ALL",
    "WEEKDAYS",
    "context_keys",
    "hour_band",
    "keys_of",
    "request_segments",
    "segment_of",
    "segment_variants",
    "tokenize",
]
