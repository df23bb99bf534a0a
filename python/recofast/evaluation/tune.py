"""``recofast tune``: a small prequential search of a model's options on a prefix of a shop's
own log.

The search space (:data:`SPACES`, or ``--space NAME=V1,V2,...``) is a few values per option.
``budget`` configurations are drawn from it at random (seeded; the defaults are always the
first and are run in every round, so the search never picks something worse than the
defaults on the whole prefix; a space smaller than the budget is tried whole). Successive halving (``search="halving"``) runs
all of them test-then-learn on the first 1/ηᴿ⁻¹ of the prefix, keeps the best 1/η, runs
those on η times more, and so on until the last round runs on the whole prefix; the best
there wins. ``search="random"`` runs every configuration on the whole prefix. The score is
Recall@K (or NDCG@K) of the same protocol as ``recofast eval``.

The chosen options are saved as TOML (:func:`tuned_toml`): recofast's under
``[engine.model]``, which ``recofast serve --config`` reads, and the peers' under
``[peers.NAME]``; ``recofast eval --options-file`` reads both. The honest test of tuned
models is on the events after the prefix (``recofast eval --test-from``): the prefix's own
tests chose the options, so a score on them leaks.
"""

from __future__ import annotations

import itertools
import json
import math
import random
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from tqdm import tqdm

from recofast.evaluation.data import CatalogEntry, EventLog

#: What ``recofast tune`` searches per model, unless ``--space`` says otherwise: a few values
#: per option around the defaults, chosen from the papers and the options' meaning, not from
#: any one shop's log. recofast's options that the Recommender does not know are left out.
SPACES: dict[str, dict[str, tuple[Any, ...]]] = {
    "recofast": {
        "w_cooc": (0.5, 1.0, 2.0),
        "w_mf": (0.0, 0.01, 0.02, 0.05, 0.1),
        "w_text": (0.0, 0.1, 0.3, 1.0),
        "w_pop": (0.0, 0.02, 0.05, 0.2),
        "w_ctx": (0.0, 0.2, 0.4, 1.0),
        "w_intent": (0.0, 1.0, 4.0, 8.0),
        "recency_decay": (0.3, 0.6, 0.8),
        "pair_window": (1, 2, 3, 5),
        "cooc_half_life": (20_000, 100_000, 0),
        "new_session_weight": (0.1, 0.2, 0.5),
        "lr": (0.02, 0.05, 0.1),
        # The learned second stage: whether this shop's next events are better ranked by it.
        "ranker": (False, True),
    },
    "itemknn": {"window": (1, 2, 3, 5, 10, 20)},
    "ease": {"lam": (50.0, 100.0, 200.0, 500.0, 1000.0, 2000.0, 5000.0), "max_items": (1000, 2000, 3000),
             "history": (0, 1, 3, 10, 30)},
    "sknn": {"k": (50, 100, 200, 500), "sample": (250, 500, 1000, 2000), "window": (0, 2, 5, 10),
             "gap": (900.0, 1800.0, 3600.0)},
}
SPACES["recofast-noctx"] = {k: v for k, v in SPACES["recofast"].items() if k not in ("w_ctx", "w_intent")}
#: The defaults of the peers' options (those of the classes in baselines.py).
PEER_DEFAULTS: dict[str, dict[str, Any]] = {
    "itemknn": {"window": 2},
    "ease": {"max_items": 2_000, "lam": 500.0, "history": 0},
    "sknn": {"gap": 1800.0, "window": 0, "sample": 1000, "k": 100},
}
TUNABLE = tuple(SPACES)


def head(log: EventLog, n: int) -> EventLog:
    """The first `n` events of `log`."""
    return EventLog(log.users[:n], log.items[:n], log.ts[:n], None if log.events is None else log.events[:n],
                    {k: v[:n] for k, v in log.extra.items()})


def parse_value(text: str) -> Any:
    """An option value from text: an int, a float, true/false, or the text.

    >>> parse_value("3"), parse_value("0.5"), parse_value("true"), parse_value("auto")
    (3, 0.5, True, 'auto')
    """
    t = text.strip()
    if t.lower() in ("true", "false"):
        return t.lower() == "true"
    for conv in (int, float):
        try:
            return conv(t)
        except ValueError:
            pass
    return t


def parse_space(pairs: Sequence[str] | None) -> dict[str, tuple[Any, ...]]:
    """``NAME=V1,V2,...`` pairs.

    >>> parse_space(["lam=100,500", "history=0"])
    {'lam': (100, 500), 'history': (0,)}
    """
    out: dict[str, tuple[Any, ...]] = {}
    for p in pairs or ():
        name, sep, values = p.partition("=")
        vals = tuple(parse_value(v) for v in values.split(",") if v.strip())
        if not sep or not name.strip() or not vals:
            raise ValueError(f"--space takes NAME=V1,V2,..., got {p!r}")
        out[name.strip()] = vals
    return out


def model_space(model: str, extra: Mapping[str, tuple[Any, ...]] | None = None) -> dict[str, tuple[Any, ...]]:
    """The space searched for `model`: :data:`SPACES` with `extra` replacing or adding options.
    For recofast, options the Recommender does not know are an error in `extra` and left out
    of the built-in space."""
    if model not in SPACES:
        raise ValueError(f"cannot tune {model!r}; choose from {', '.join(TUNABLE)}")
    space = dict(SPACES[model])
    extra = dict(extra or {})
    if model.startswith("recofast"):
        from recofast.recommender import Recommender

        known = set(Recommender.default_options())
        bad = sorted(set(extra) - known)
        if bad:
            raise ValueError(f"unknown recofast option(s) {', '.join(bad)} in --space; see Recommender.default_options()")
        space = {k: v for k, v in space.items() if k in known}
    else:
        bad = sorted(set(extra) - set(PEER_DEFAULTS[model]))
        if bad:
            raise ValueError(f"unknown {model} option(s) {', '.join(bad)} in --space; it has {', '.join(PEER_DEFAULTS[model])}")
    space.update(extra)
    return space


def defaults_of(model: str, base: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The options a model runs with before tuning: its defaults, then `base`."""
    if model.startswith("recofast"):
        from recofast.recommender import Recommender

        d: dict[str, Any] = {k: parse_value(v) for k, v in Recommender.default_options().items()}
    else:
        d = dict(PEER_DEFAULTS[model])
    d.update(base or {})
    return d


def draw(space: Mapping[str, tuple[Any, ...]], defaults: Mapping[str, Any], budget: int, seed: int = 0) -> list[dict[str, Any]]:
    """`budget` distinct configurations (the searched options only): the defaults first,
    then random draws; the whole space when it is no larger than the budget.

    >>> draw({"a": (1, 2, 3)}, {"a": 2}, 10)
    [{'a': 2}, {'a': 1}, {'a': 3}]
    >>> len(draw({"a": (1, 2, 3), "b": (4, 5, 6)}, {"a": 1, "b": 4}, 4, seed=1))
    4
    """
    if budget <= 0:
        raise ValueError(f"the budget must be a positive integer, got {budget}")
    names = list(space)
    first = {n: defaults.get(n, space[n][0]) for n in names}
    out = [first]
    seen = {json.dumps(first, sort_keys=True)}
    size = math.prod(len(v) for v in space.values())
    if size <= budget:
        for combo in itertools.product(*(space[n] for n in names)):
            c = dict(zip(names, combo))
            key = json.dumps(c, sort_keys=True)
            if key not in seen:
                seen.add(key)
                out.append(c)
        return out
    rng = random.Random(seed)
    tries = 0
    while len(out) < budget and tries < 100 * budget:
        tries += 1
        c = {n: rng.choice(space[n]) for n in names}
        key = json.dumps(c, sort_keys=True)
        if key not in seen:
            seen.add(key)
            out.append(c)
    return out


@dataclass
class Trial:
    options: dict[str, Any]
    #: events it ran on -> score there
    scores: dict[int, float] = field(default_factory=dict)


@dataclass
class TuneResult:
    model: str
    best: dict[str, Any]  # the searched options, chosen
    options: dict[str, Any]  # everything the model runs with (base options and the chosen ones)
    score: float  # of the chosen on the whole prefix
    default_score: float | None  # of the defaults on the whole prefix
    prefix_events: int
    trials: list[Trial]
    metric: str
    k: int
    seconds: float = 0.0


def halving_rounds(n_configs: int, n_events: int, eta: int = 2, min_events: int = 1000) -> list[tuple[int, int]]:
    """(configurations kept, events run on) per round of successive halving.

    >>> halving_rounds(16, 80_000)
    [(16, 10000), (8, 20000), (4, 40000), (2, 80000)]
    >>> halving_rounds(1, 5000)
    [(1, 5000)]
    """
    if n_configs <= 1:
        return [(1, n_events)]
    r = math.ceil(math.log(n_configs, eta) - 1e-9)
    out, keep = [], n_configs
    for i in range(r):
        ev = n_events if i == r - 1 else max(min(min_events, n_events), round(n_events * eta ** (i - r + 1)))
        out.append((keep, ev))
        keep = max(1, math.ceil(keep / eta))
    return out


def tune(log: EventLog, model: str, *, prefix_events: int, budget: int = 16, search: str = "halving",
         eta: int = 2, k: int = 20, metric: str = "recall", seed: int = 0,
         space: Mapping[str, tuple[Any, ...]] | None = None, base: Mapping[str, Any] | None = None,
         catalog: list[CatalogEntry] | None = None, contexts: list[dict[str, Any]] | None = None,
         explore: int = 0, default_event: str = "purchase", progress: bool = True,
         say: Callable[[str], None] | None = None) -> TuneResult:
    """Searches `model`'s options on ``log[:prefix_events]`` (see the module's text).
    ``base`` holds fixed options (recofast's ``--option``s, say): they are not searched
    unless ``space`` names them."""
    import time

    from recofast.evaluation.protocol import build_models, prequential

    if search not in ("halving", "random"):
        raise ValueError(f"search must be halving or random, got {search!r}")
    if metric not in ("recall", "ndcg"):
        raise ValueError(f"metric must be recall or ndcg, got {metric!r}")
    if eta < 2:
        raise ValueError(f"eta must be at least 2, got {eta}")
    if not 0 < prefix_events <= len(log):
        raise ValueError(f"the prefix must hold 1 to {len(log):,} events, got {prefix_events:,}")
    t_start = time.perf_counter()
    # Options fixed by `base` are not searched, unless `space` names them.
    sp = {n: v for n, v in model_space(model, space).items() if n not in (base or {}) or n in (space or {})}
    base_opts = defaults_of(model, base)
    configs = draw(sp, base_opts, budget, seed)
    trials = [Trial(c) for c in configs]
    rounds = halving_rounds(len(trials), prefix_events, eta) if search == "halving" else [(len(trials), prefix_events)]
    say = say or (lambda s: tqdm.write(s, file=sys.stderr))
    say(f"tune {model}: {len(trials)} configurations of {', '.join(sp)}; "
        + " → ".join(f"{n} on {e:,} events" for n, e in rounds))
    alive = trials
    for keep, n_ev in rounds:
        alive = alive[:keep]  # sorted best first by the round before
        if trials[0] not in alive:  # the defaults always reach the last round
            alive.append(trials[0])
        sub = head(log, n_ev)
        ctx = None if contexts is None else contexts[:n_ev]
        bar = tqdm(alive, desc=f"tune {model} ({n_ev:,} events)", unit="cfg", disable=not progress, file=sys.stderr)
        for t in bar:
            opts = {**base_opts, **t.options}
            m = build_model(model, opts, catalog, explore, build_models)
            s = prequential(sub, [m], k=k, default_event=default_event, progress=False, contexts=ctx, catalog=catalog)[0]
            t.scores[n_ev] = s.recall if metric == "recall" else s.ndcg
            say(f"  {model} {_fmt(t.options)}: {metric}@{k} {t.scores[n_ev]:.4f} on {n_ev:,} events")
        alive = sorted(alive, key=lambda t: -t.scores[n_ev])
    best = alive[0]
    full = prefix_events
    d = trials[0].scores.get(full)
    return TuneResult(model, dict(best.options), {**base_opts, **best.options}, best.scores[full], d, full,
                      trials, metric, k, time.perf_counter() - t_start)


def build_model(model: str, opts: Mapping[str, Any], catalog: list[CatalogEntry] | None, explore: int,
                build_models: Callable[..., list[Any]]) -> Any:
    """One model of `recofast eval` with `opts` (recofast's options, or a peer's keywords)."""
    if model.startswith("recofast"):
        from recofast.recommender import Recommender

        defaults = Recommender.default_options()
        changed = {n: str(v).lower() if isinstance(v, bool) else str(v) for n, v in opts.items()
                   if n == "dim" or str(v).lower() != str(defaults.get(n, "")).lower()}
        return build_models([model], changed, catalog, explore=explore)[0]
    if model == "itemknn":
        return build_models([model], {}, catalog, knn_window=int(opts["window"]))[0]
    return build_models([model], {}, catalog, peers={model: dict(opts)})[0]


def _fmt(opts: Mapping[str, Any]) -> str:
    return " ".join(f"{k}={v}" for k, v in opts.items())


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    return json.dumps(str(v))


def tuned_toml(results: Sequence[TuneResult], comment: str = "") -> str:
    """The TOML of the chosen options: recofast's (one recofast model at most) under
    ``[engine.model]`` (with ``dim``, which the engine requires), each peer's under
    ``[peers.NAME]``, and a record of the search under ``[tune.NAME]``.

    >>> r = TuneResult("ease", {"lam": 100.0}, {"lam": 100.0, "max_items": 2000, "history": 0}, 0.3, 0.25, 1000, [], "recall", 20)
    >>> print(tuned_toml([r]))
    [peers.ease]
    lam = 100.0
    max_items = 2000
    history = 0
    <BLANKLINE>
    [tune.ease]
    prefix_events = 1000
    metric = "recall"
    k = 20
    score = 0.3
    default_score = 0.25
    searched = ["lam"]
    <BLANKLINE>
    """
    lines = [f"# {x}" for x in comment.splitlines()] if comment else []
    rec = [r for r in results if r.model.startswith("recofast")]
    if len(rec) > 1:
        raise ValueError("one recofast model per options file (its options go to [engine.model])")
    for r in results:
        if r.model.startswith("recofast"):
            from recofast.recommender import Recommender

            defaults = Recommender.default_options()
            opts = {"dim": r.options.get("dim", 64)}
            opts.update({n: v for n, v in r.options.items()
                         if n in r.best or str(v).lower() != str(defaults.get(n, "")).lower()})
            lines += ["[engine.model]", *(f"{n} = {_toml_value(v)}" for n, v in opts.items()), ""]
        else:
            lines += [f"[peers.{r.model}]", *(f"{n} = {_toml_value(v)}" for n, v in r.options.items()), ""]
    for r in results:
        lines += [f"[tune.{r.model}]", f"prefix_events = {r.prefix_events}", f"metric = {_toml_value(r.metric)}",
                  f"k = {r.k}", f"score = {r.score!r}"]
        if r.default_score is not None:
            lines.append(f"default_score = {r.default_score!r}")
        lines += [f"searched = {json.dumps(list(r.best))}", ""]
    return "\n".join(lines)


def read_options_file(path: str) -> tuple[dict[str, str], dict[str, dict[str, Any]]]:
    """recofast's options (``[engine.model]``, as text like ``--option``) and the peers'
    (``[peers.NAME]``) of a TOML file. Raises ValueError saying what is wrong."""
    import os

    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover
        import tomli as tomllib

    if not os.path.isfile(path):
        raise FileNotFoundError(f"no such options file: {path}")
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except tomllib.TOMLDecodeError as e:
        raise ValueError(f"{path}: not valid TOML ({e})") from None
    model = data.get("engine", {}).get("model", {})
    peers = data.get("peers", {})
    if not isinstance(model, dict) or not isinstance(peers, dict):
        raise ValueError(f"{path}: [engine.model] and [peers.NAME] must be tables")
    for name, opts in peers.items():
        if name not in PEER_DEFAULTS or not isinstance(opts, dict):
            raise ValueError(f"{path}: unknown peer table [peers.{name}]; peers: {', '.join(PEER_DEFAULTS)}")
        bad = sorted(set(opts) - set(PEER_DEFAULTS[name]))
        if bad:
            raise ValueError(f"{path}: [peers.{name}] has unknown option(s) {', '.join(bad)}; it has {', '.join(PEER_DEFAULTS[name])}")
    text = {n: str(v).lower() if isinstance(v, bool) else str(v) for n, v in model.items()}
    return text, {n: dict(v) for n, v in peers.items()}


__all__ = ["PEER_DEFAULTS", "SPACES", "TUNABLE", "TuneResult", "draw", "halving_rounds", "head", "model_space",
           "parse_space", "parse_value", "read_options_file", "tune", "tuned_toml"]
