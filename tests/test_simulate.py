"""The shop simulator: seeded, schema-valid, with context, newcomers and drift."""

import io
import json
from collections import Counter

import pytest
from recofast.cli import main
from recofast.evaluation.simulate import simulate
from recofast_sidecar.protocol import events as ev


def lines(**kw):
    buf = io.StringIO()
    stats = simulate(buf, **kw)
    return buf.getvalue(), stats


def test_same_seed_same_bytes_other_seed_other_stream():
    a, _ = lines(users=80, items=60, events=3_000, seed=7)
    b, _ = lines(users=80, items=60, events=3_000, seed=7)
    c, _ = lines(users=80, items=60, events=3_000, seed=8)
    assert a == b
    assert a != c


def test_events_are_valid_v1_with_context():
    text, stats = lines(users=100, items=80, events=2_000, seed=1)
    raw = [json.loads(x) for x in text.splitlines()]
    assert len(raw) == stats["events"] == 2_000
    ok, bad = ev.decode_events(("[" + ",".join(text.splitlines()) + "]").encode(), (1,))
    assert not bad and len(ok) == 2_000
    kinds = Counter(e["type"] for e in raw)
    assert kinds["view"] > kinds["add_to_cart"] > 0 and kinds["purchase"] == stats["purchases"] > 0
    assert kinds["search"] == stats["searches"] > 0 and all("query" in e for e in raw if e["type"] == "search")
    for e in raw:
        assert set(e["context"]) == {"device", "country", "weather"}
    assert len({e["id"] for e in raw}) == len(raw)


def test_new_items_and_users_arrive_mid_stream_and_drift_moves_tastes():
    text, stats = lines(users=200, items=100, events=20_000, seed=2, drift_at=(10_000,), drift_share=1.0)
    raw = [json.loads(x) for x in text.splitlines()]
    first_seen = {}
    for n, e in enumerate(raw):
        if "item" in e:
            first_seen.setdefault(int(e["item"][1:]), n)
    new_items = [j for j in range(100 - stats["new_items"], 100) if j in first_seen]
    assert new_items and min(first_seen[j] for j in new_items) > 0
    assert max(first_seen[j] for j in new_items) > 2_000  # some arrive well into the stream
    # Every shopper switched taste at 10,000: the category mix per user changes.
    def mix(part):
        c = Counter((e["user"], e["query"]) for e in part if e["type"] == "search")
        return c
    before, after = mix(raw[:10_000]), mix(raw[10_000:])
    shared = set(before) & set(after)
    assert len(shared) < 0.8 * min(len(before), len(after))


def test_bad_arguments(tmp_path, capsys):
    with pytest.raises(ValueError, match="categories"):
        simulate(io.StringIO(), categories=99)
    assert main(["simulate", "--users", "0", "--out", str(tmp_path / "x.jsonl")]) == 2
    assert "users and items must be positive" in capsys.readouterr().err
    assert main(["simulate", "--users", "10", "--items", "10", "--events", "50", "--out", str(tmp_path / "s.jsonl"),
                 "--catalog", str(tmp_path / "c.jsonl")]) == 0
    assert len((tmp_path / "s.jsonl").read_text().splitlines()) == 50
    assert len((tmp_path / "c.jsonl").read_text().splitlines()) == 10
