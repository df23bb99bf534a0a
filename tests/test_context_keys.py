"""The sidecar's context keys (pure Python) equal the core's, so exported affinities match."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from recofast import Recommender
from recofast.recommender import CONTEXT_FIELDS as CORE_FIELDS
from recofast_sidecar.protocol.context import CONTEXT_FIELDS, context_keys, tokenize

# Text the core can receive (no lone surrogates: they are not valid UTF-8 and never reach it).
_text = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=80)
_values = st.one_of(
    _text,
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    st.none(),
    st.sampled_from(["19", "+7", "007", "-1", "24", " Evening ", "NIGHT", "Sunday", "tUe", "6", "7", "99999999999999999999"]),
    st.sampled_from(["ΑΣ", "ΣΑΣ λάμπα", "İstanbul", "ǅemal", "\u1c89x", "a\u0345b", "Ꞌx", "\u0939\u093f\u0928\u094d\u0926\u0940"]),
)
_fields = st.one_of(st.sampled_from(CONTEXT_FIELDS), st.sampled_from(["mood", "Device", "", "ua"]))


def test_the_fields_are_the_cores() -> None:
    assert CONTEXT_FIELDS == CORE_FIELDS


@pytest.mark.parametrize(
    "ctx",
    [
        {"device": "Mobile", "hour": 20},
        {"device": " Mobile\u3000", "hour": "19", "weekday": 6, "country": "GB", "intent": "Desk LAMP lamp"},
        {"hour": 0, "weekday": "Monday", "weather": "RAIN", "region": "Europe-West", "segment": "age:25-34"},
        {"hour": "afternoon", "weekday": "7", "intent": "a b cc dd ee ff"},
        {"hour": 23.0, "weekday": 2.5, "device": True, "country": None, "intent": ""},
        {"hour": "+5", "weekday": "+0", "device": "\x1cmobile\x1c"},
        {"country": "x" * 100, "region": "É" * 70, "intent": "ΣΑΣ ΑΣ"},
        {"device": "a", "hour": 12, "weekday": 1, "country": "b", "region": "c", "weather": "d", "segment": "e", "intent": "ff gg hh"},
        {"intent": "lamp", "device": "lamp"},
        {},
    ],
)
def test_known_contexts(ctx: dict) -> None:
    assert context_keys(ctx) == Recommender.context_keys(ctx)


@settings(max_examples=400, deadline=None)
@given(st.dictionaries(_fields, _values, max_size=9))
def test_any_context_gives_the_cores_keys(ctx: dict) -> None:
    assert context_keys(ctx) == Recommender.context_keys(ctx)


@settings(max_examples=300, deadline=None)
@given(_text)
def test_any_intent_gives_the_cores_words(text: str) -> None:
    core = [k.removeprefix("intent=") for k in Recommender.context_keys({"intent": text})]
    assert tokenize(text)[:3] == core


def test_hour_bands_and_segments_are_the_cores() -> None:
    # The core (rust/core/src/context.rs) and the protocol define the hour bands each in their
    # own language; every hour must fall in the same band on both sides.
    from recofast_sidecar.protocol.context import (
        hour_band,
        request_segments,
        segment_of,
        segment_variants,
    )

    for h in range(24):
        assert f"hour={hour_band(h)}" in Recommender.context_keys({"hour": h})
    seg = segment_of("GB", "mobile", 19)
    assert segment_variants(seg)[2:] == tuple(request_segments("GB", "mobile", 19)[1:-1])
    assert request_segments("GB", "mobile", 19)[0] == seg and request_segments(None, None, None) == ["all"]
