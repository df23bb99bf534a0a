"""Why an item is in a list: the ranker's reason, and the words a shop shows for it.

The core's second stage (see ``rust/core/src/ranker.rs``) orders each list by features
learned from the shop's events; the reason of a listed item is the feature that counted
most for it (the blend's share split over the signals it is made of), with what it points
at: the shopper's item it goes with, the search words, the context value.

>>> r = Reason("cooc", "lamp-1")
>>> reason_text(r, {"lamp-1": "Brass desk lamp"}.get)
'bought with Brass desk lamp'
>>> reason_text(Reason("ctx_country", None, "country=gb"))
'popular in GB'
>>> reason_text(Reason("intent", None, "desk lamp"))
"matches your search 'desk lamp'"
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

#: The most characters of a reason text (titles are cut to fit).
MAX_REASON_CHARS = 120
#: The most characters of an item title inside a reason.
MAX_TITLE_CHARS = 60


@dataclass(frozen=True)
class Reason:
    """The reason of one listed item.

    ``kind`` is a ranker feature: ``cooc`` (often taken with ``item``), ``text`` (like
    ``item``), ``mf`` (the shopper's taste), ``intent`` (the search words in ``detail``),
    ``pop`` (trending), ``new``, ``seen`` (taken before), ``ctx_<field>`` (popular in the
    context value ``detail``, as ``field=value``), or ``blend``/``pop`` where the ranker had
    no say (an item exploration placed, a list of the first stage)."""

    kind: str
    item: str | None = None
    detail: str = ""
    contributions: dict[str, float] = field(default_factory=dict)
    rank: int | None = None
    score: float | None = None


_CONTEXT_WORDS = {
    "device": "popular on {v}",
    "hour": "popular at this time of day",
    "weekday": "popular on {v}",
    "country": "popular in {V}",
    "region": "popular in {V}",
    "weather": "popular in this weather",
    "segment": "popular with shoppers like you",
    "intent": "matches what you are looking for",
}


def _cut(s: str, n: int) -> str:
    s = " ".join(s.split())
    return s if len(s) <= n else s[: n - 1].rstrip() + "…"


def reason_text(r: Reason, title_of: Callable[[str], str | None] | None = None) -> str:
    """The words for a reason; ``title_of`` gives an item's title (the id when it has none)."""

    def title(item: str | None) -> str:
        t = (title_of(item) if title_of and item else None) or item or "your last item"
        return _cut(t, MAX_TITLE_CHARS)

    k = r.kind
    if k == "cooc":
        text = f"bought with {title(r.item)}"
    elif k == "text":
        text = f"like {title(r.item)}"
    elif k == "intent":
        text = f"matches your search '{_cut(r.detail, MAX_TITLE_CHARS)}'" if r.detail else "matches your search"
    elif k == "mf":
        text = "picked for you"
    elif k == "new":
        text = "new"
    elif k == "seen":
        text = "you bought this before"
    elif k.startswith("ctx_"):
        field_name = k[4:]
        value = r.detail.split("=", 1)[1] if "=" in r.detail else r.detail
        tmpl = _CONTEXT_WORDS.get(field_name, "popular right now")
        text = tmpl.format(v=value, V=value.upper() if len(value) <= 3 else value.title()) if value else "popular right now"
    else:  # pop, blend
        text = "trending"
    return _cut(text, MAX_REASON_CHARS)


__all__ = ["MAX_REASON_CHARS", "Reason", "reason_text"]
