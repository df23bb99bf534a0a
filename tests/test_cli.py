"""`recofast eval` and `recofast train` on small generated logs."""

import gzip
import json

import numpy as np
import pytest
import recofast
from recofast.cli import main


def write_log(path, n_users=150, n_baskets=900, seed=0, gz=False):
    """Baskets drawn from 12 themes of 10 items each; a user sticks to two themes."""
    rng = np.random.default_rng(seed)
    taste = rng.integers(0, 12, (n_users, 2))
    lines = ["user_id,item_id,timestamp,event"]
    t = 1_291_000_000
    for b in range(n_baskets):
        u = int(rng.integers(0, n_users))
        theme = int(taste[u, int(rng.integers(0, 2))])
        t += 600
        for item in rng.choice(10, size=int(rng.integers(2, 5)), replace=False):
            lines.append(f"u{u},t{theme}-i{item},{t},{'purchase' if b % 3 else 'view'}")
    text = "\n".join(lines) + "\n"
    if gz:
        path.write_bytes(gzip.compress(text.encode()))
    else:
        path.write_text(text)
    return len(lines) - 1


def test_eval_runs_every_model_and_writes_json(tmp_path, capsys):
    log = tmp_path / "events.csv.gz"
    n = write_log(log, gz=True)
    out = tmp_path / "out" / "eval.json"
    code = main(["eval", "--events", str(log), "--k", "10", "--json", str(out), "--no-progress"])
    assert code == 0
    table = capsys.readouterr().out
    assert "Recall@10" in table and "recofast / best baseline" in table
    result = json.loads(out.read_text())
    assert result["events"] == n and result["k"] == 10
    scores = {s["model"]: s for s in result["scores"]}
    assert set(scores) == {"recofast", "itemknn", "recentpop", "pop", "river", "als-daily"}
    tests = {s["tests"] for s in scores.values()}
    assert len(tests) == 1 and tests.pop() > 500  # every model is tested on the same events
    for s in scores.values():
        assert 0.0 <= s["ndcg"] <= s["recall"] <= 1.0
    # Themed baskets: co-occurrence must beat popularity by far.
    assert scores["recofast"]["recall"] > 2 * scores["pop"]["recall"]


def test_eval_and_train_report_bad_input_clearly(tmp_path, capsys):
    bad = tmp_path / "bad.csv"
    bad.write_text("user,item\nu1,i1\n")
    assert main(["eval", "--events", str(bad), "--no-progress"]) == 2
    assert "missing column(s) user_id, item_id, timestamp" in capsys.readouterr().err
    good = tmp_path / "good.csv"
    write_log(good, n_baskets=20)
    assert main(["eval", "--events", str(good), "--k", "0"]) == 2
    assert "--k must be a positive integer" in capsys.readouterr().err
    assert main(["eval", "--events", str(good), "--model", "recofast,magic", "--no-progress"]) == 2
    assert "unknown model 'magic'" in capsys.readouterr().err
    assert main(["eval", "--events", str(tmp_path / "nope.csv")]) == 2
    assert "no such event log" in capsys.readouterr().err
    broken = tmp_path / "broken.csv"
    broken.write_text("user_id,item_id,timestamp\nu1,i1,yesterday\n")
    assert main(["train", "--events", str(broken), "--out", str(tmp_path / "m")]) == 2
    assert "line 2" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["eval"])  # --events is required: argparse exits with usage
    # Context, catalogue and the new options.
    assert main(["eval", "--events", str(good), "--context", "mood", "--no-progress"]) == 2
    assert "unknown context field(s) mood" in capsys.readouterr().err
    assert main(["eval", "--events", str(good), "--context", "device", "--no-progress"]) == 2
    assert "none of the context fields device" in capsys.readouterr().err
    assert main(["eval", "--events", str(good), "--items", str(tmp_path / "nope.jsonl"), "--no-progress"]) == 2
    assert "no such item catalogue" in capsys.readouterr().err
    assert main(["eval", "--events", str(good), "--explore", "-1", "--no-progress"]) == 2
    assert "--explore must be ≥ 0" in capsys.readouterr().err
    badcat = tmp_path / "cat.jsonl"
    badcat.write_text('{"v":1,"item":"a","title":"ok"}\n{"v":1,"price":"x"}\n')
    assert main(["eval", "--events", str(good), "--items", str(badcat), "--no-progress"]) == 2
    assert "line 2" in capsys.readouterr().err


def test_train_backfills_a_loadable_model(tmp_path, capsys):
    log = tmp_path / "events.csv"
    n = write_log(log)
    model = tmp_path / "model.rcf"
    assert main(["train", "--events", str(log), "--out", str(model), "--option", "dim=16", "--batch", "500"]) == 0
    assert f"learned {n:,} events" in capsys.readouterr().out
    rec = recofast.Recommender.load(model)
    assert rec.events_learned == n
    assert rec.options()["dim"] == "16"
    assert len(rec.recommend("u1", k=5)) == 5
    assert main(["train", "--events", str(log), "--out", str(model), "--option", "dimm=3"]) == 2
    assert "unknown option" in capsys.readouterr().err
