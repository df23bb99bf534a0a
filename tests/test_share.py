"""Item knowledge shared between partitioned engines, measured on the shop log: engines
that each learn only their own users' events, exchanging item deltas, list as well as one
engine that learns everything (the same tests, test-then-learn)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from recofast.evaluation.data import read_catalog, read_events
from recofast.evaluation.protocol import build_models, prequential

DATA = Path(os.environ.get("RECOFAST_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data")) / "online_retail"


@pytest.mark.skipif(not (DATA / "interactions.csv.gz").exists(), reason=f"the shop log is not at {DATA}")
def test_two_engines_on_four_partitions_sharing_item_deltas_recall_as_one_engine() -> None:
    cat = read_catalog(DATA / "items.csv")
    log = read_events(DATA / "interactions.csv.gz", limit=60_000)
    models = build_models(["recofast"], {"dim": "32"}, cat)
    for share in (2000, 0):
        models += build_models(["recofast-partitioned"], {"dim": "32"}, cat,
                               peers={"recofast-partitioned": {"engines": 2, "partitions": 4, "share_every": share}})
    one, shared, alone = prequential(log, models, k=20, progress=False, catalog=cat)
    print(f"Recall@20: one engine {one.recall:.4f}, two sharing {shared.recall:.4f} ({shared.recall / one.recall:.3f}x), "
          f"two alone {alone.recall:.4f} ({alone.recall / one.recall:.3f}x); deltas {models[1].delta_bytes} bytes")
    assert one.tests == shared.tests == alone.tests > 10_000
    assert shared.recall >= 0.97 * one.recall
    assert shared.recall > alone.recall  # the deltas are what closes the gap
    # Each engine knows only its own users.
    users = [set(r.user_factors()[0]) for r in models[1].recs]
    assert users[0] and users[1] and not users[0] & users[1]
