"""`recofast tune` and `recofast eval --tuned / --options-file / --test-from` on small logs."""

import json

import pytest
from recofast.cli import main
from recofast.evaluation import tune as tuning
from recofast.evaluation.data import read_events
from recofast.evaluation.protocol import TEST_TYPES, build_models, prequential
from test_cli import write_log


@pytest.fixture
def log_path(tmp_path):
    p = tmp_path / "events.csv"
    write_log(p, n_users=80, n_baskets=300)
    return p


def test_draw_starts_from_the_defaults_and_never_repeats():
    space = {"a": (1, 2, 3, 4), "b": ("x", "y"), "c": (0.5, 1.0)}
    got = tuning.draw(space, {"a": 3, "b": "y", "c": 1.0}, 6, seed=4)
    assert got[0] == {"a": 3, "b": "y", "c": 1.0}
    assert len(got) == 6 and len({json.dumps(c, sort_keys=True) for c in got}) == 6
    assert all(c[n] in space[n] for c in got for n in space)
    assert len(tuning.draw(space, {"a": 1}, 100)) == 16  # the whole space when it is small


def test_halving_rounds_end_on_the_whole_prefix():
    for n, events in [(16, 100_000), (9, 5_000), (5, 30_000), (2, 10_000)]:
        rounds = tuning.halving_rounds(n, events)
        assert rounds[0][0] == n and rounds[-1][1] == events and rounds[-1][0] >= 2
        assert all(a[0] > b[0] and a[1] < b[1] for a, b in zip(rounds, rounds[1:]))


def test_tune_chooses_the_best_on_the_prefix_and_its_score_is_reproducible(log_path):
    log = read_events(log_path)
    n = len(log) // 2
    r = tuning.tune(log, "itemknn", prefix_events=n, budget=6, progress=False, say=lambda s: None)
    finals = [t for t in r.trials if n in t.scores]
    assert len(finals) >= 2 and r.score == max(t.scores[n] for t in finals)
    assert r.trials[0].options == {"window": 2} and n in r.trials[0].scores and r.score >= r.default_score
    assert r.options["window"] == r.best["window"] in tuning.SPACES["itemknn"]["window"]
    # The reported score is that of an independent run of the chosen options on the prefix.
    m = build_models(["itemknn"], {}, knn_window=r.best["window"])
    again = prequential(tuning.head(log, n), m, progress=False)[0]
    assert again.recall == pytest.approx(r.score)
    # random search runs everything on the whole prefix
    rr = tuning.tune(log, "ease", prefix_events=n, budget=3, search="random", space={"lam": (5.0, 50.0, 500.0), "history": (0,)},
                     base={"max_items": 50}, progress=False, say=lambda s: None)
    assert all(set(t.options) == {"lam", "history"} for t in rr.trials)  # a fixed option is not searched
    assert all(n in t.scores for t in rr.trials) and rr.default_score is not None
    assert rr.options["max_items"] == 50


def test_test_from_scores_only_the_events_after_it(log_path):
    log = read_events(log_path)
    n = len(log) // 3
    seen: dict[str, set[str]] = {}
    want = 0
    for j, (u, i, e) in enumerate(zip(log.users, log.items, log.events)):
        if e in TEST_TYPES and seen.get(u) and i not in seen[u] and j >= n:
            want += 1
        if e in TEST_TYPES:
            seen.setdefault(u, set()).add(i)
    s = prequential(log, build_models(["pop"], {}), test_from=n, progress=False)[0]
    full = prequential(log, build_models(["pop"], {}), progress=False)[0]
    assert s.tests == want < full.tests


def test_tune_cli_writes_options_that_eval_and_serve_read(log_path, tmp_path, capsys):
    out = tmp_path / "tuned.toml"
    assert main(["tune", "--events", str(log_path), "--model", "itemknn", "--budget", "4", "--prefix", "0.5",
                 "--out", str(out), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "itemknn: recall@20" in printed and "window=" in printed
    _, peers = tuning.read_options_file(str(out))
    window = peers["itemknn"]["window"]
    assert window in tuning.SPACES["itemknn"]["window"]
    res = tmp_path / "eval.json"
    assert main(["eval", "--events", str(log_path), "--model", "itemknn", "--options-file", str(out),
                 "--test-from", "0.5", "--json", str(res), "--no-progress"]) == 0
    got = json.loads(res.read_text())
    assert got["knn_window"] == window and got["test_from"] == len(read_events(log_path)) // 2
    # A flag on the command line overrides the file.
    assert main(["eval", "--events", str(log_path), "--model", "itemknn", "--options-file", str(out),
                 "--knn-window", "7", "--json", str(res), "--no-progress"]) == 0
    assert json.loads(res.read_text())["knn_window"] == 7
    # recofast's options go to [engine.model], which the engine's configuration reads.
    rec = tmp_path / "rec.toml"
    assert main(["tune", "--events", str(log_path), "--model", "recofast", "--budget", "2", "--prefix", "0.4",
                 "--space", "w_pop=0.0,0.2", "--space", "w_mf=0.02", "--out", str(rec), "--no-progress"]) == 0
    from recofast.engine.config import load_config

    cfg = load_config(rec, env={})
    assert cfg.model["dim"] == 64 and float(cfg.model["w_pop"]) in (0.0, 0.2)
    opts, _ = tuning.read_options_file(str(rec))
    assert float(opts["w_pop"]) == float(cfg.model["w_pop"])


def test_eval_tuned_tunes_on_the_prefix_then_scores_the_rest(log_path, tmp_path, capsys):
    res = tmp_path / "eval.json"
    saved = tmp_path / "chosen.toml"
    assert main(["eval", "--events", str(log_path), "--model", "itemknn,sknn,pop", "--tuned", "--budget", "2",
                 "--json", str(res), "--save-options", str(saved), "--no-progress"]) == 0
    got = json.loads(res.read_text())
    n = len(read_events(log_path))
    assert got["test_from"] == round(0.3 * n)
    assert [t["model"] for t in got["tuned"]] == ["itemknn", "sknn"]  # pop has nothing to tune
    _, peers = tuning.read_options_file(str(saved))
    assert peers["sknn"] == got["tuned"][1]["options"]
    assert "tuned on events 0 to" in capsys.readouterr().out


def test_tune_and_options_file_errors_are_clear(log_path, tmp_path, capsys):
    base = ["tune", "--events", str(log_path), "--no-progress", "--out", str(tmp_path / "t.toml")]
    for bad in (["--model", "pop"], ["--budget", "0"], ["--prefix", "0"], ["--eta", "1"],
                ["--model", "ease", "--space", "depth=1,2"], ["--space", "no_such_option=1"], ["--space", "w_mf"]):
        assert main(base + bad) == 2, bad
        assert "error" in capsys.readouterr().err
    badfile = tmp_path / "bad.toml"
    badfile.write_text("[peers.ease]\nlambda = 3\n")
    assert main(["eval", "--events", str(log_path), "--options-file", str(badfile), "--no-progress"]) == 2
    assert "unknown option(s) lambda" in capsys.readouterr().err
    badfile.write_text("[peers\n")
    assert main(["eval", "--events", str(log_path), "--options-file", str(badfile), "--no-progress"]) == 2
    assert "not valid TOML" in capsys.readouterr().err
    assert main(["eval", "--events", str(log_path), "--test-from", "1.5", "--no-progress"]) == 2


@pytest.mark.parametrize("name", ["recofast.evaluation.tune", "recofast.evaluation.baselines"])
def test_docstring_examples(name):
    import doctest
    import importlib

    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0


def test_eval_tuned_keeps_what_the_command_line_fixed(log_path, tmp_path):
    res = tmp_path / "eval.json"
    assert main(["eval", "--events", str(log_path), "--model", "ease", "--tuned", "--budget", "3", "--ease-items", "30",
                 "--json", str(res), "--no-progress"]) == 0
    (t,) = json.loads(res.read_text())["tuned"]
    assert t["options"]["max_items"] == 30
    assert all("max_items" not in trial["options"] for trial in t["trials"])
    assert len({json.dumps(trial["options"], sort_keys=True) for trial in t["trials"]}) == 3
