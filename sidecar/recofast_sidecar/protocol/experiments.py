"""Experiments: variants of serving and scoring options on one shared model, and which
variant a user is in. One definition, read by the engine (which writes each user's list with
the user's variant's scoring) and by the sidecar (which serves it with the variant's serving
options and logs the variant with every impression).

An experiment is declared in ``recofast.toml`` as an array of tables::

    [[experiments]]
    name = "context"          # letters, digits, ``_ . -``; up to 64
    traffic = 1.0             # the share of all users in this experiment (default 1)
    metric = "ctr"            # what decides it: ctr, cart_rate, conversion or rpm
    control = "popular"       # the variant the others are compared with (default below)
    [[experiments.variants]]
    name = "recofast"         # share 1 (the default): shares are relative
    [[experiments.variants]]
    name = "no-context"
    serving = { context_weight = 0.0 }
    scoring = { w_ctx = 0.0 }
    [[experiments.variants]]
    name = "popular"
    popular = true            # the non-personalised control: the popular list

Serving options: ``diversity``, ``explore``, ``context_weight``, ``top_n`` (the most items
served) and ``exclude_categories``; they override what the request asks for. Scoring
options are weights of the model's signals (:data:`SCORING_WEIGHTS`). The control is the
variant named by ``control``, else the first ``popular`` variant, else the first one.

Assignment is a salted hash of the user, so it needs no state and every process agrees:
a first hash (salt :data:`LAYER_SALT`) places the user in ``[0, 1)``, where the experiments
take consecutive ranges of their ``traffic`` in the order declared (so a user is in at most
one experiment); a second hash, salted with the experiment's ``salt`` (its name by default),
picks the variant by the shares. Changing an experiment's traffic moves the users of the
experiments after it; changing its salt reshuffles its own users.

>>> exp = Experiment(name="t", variants=(Variant(name="a"), Variant(name="b", popular=True)))
>>> exp.control_variant().name
'b'
>>> got = [assign((exp,), f"user{i}") for i in range(1000)]
>>> sorted({v.name for _, v in got}), 400 < sum(v.name == "a" for _, v in got) < 600
(['a', 'b'], True)
>>> assign((exp,), "user1") == assign((exp,), "user1")
True
"""

from __future__ import annotations

import hashlib
import os
import sys
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec


if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

LAYER_SALT = "recofast-experiments"
"""The salt of the hash that places a user among the experiments."""
SCORING_WEIGHTS = ("w_mf", "w_cooc", "w_pop", "w_text", "w_ctx", "w_intent")
"""The model's signal weights a variant may override (see ``recofast.Recommender``)."""
METRICS = ("ctr", "cart_rate", "conversion", "rpm")
"""Decision metrics: clicks, add-to-carts or purchases per item shown, revenue per thousand shown."""
MAX_EXPERIMENTS = 16
MAX_VARIANTS = 16

_NAME = r"^[A-Za-z0-9_.\-]{1,64}$"
Name = Annotated[str, msgspec.Meta(pattern=_NAME)]
_Fraction = Annotated[float, msgspec.Meta(ge=0.0, le=1.0)]


class Serving(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """Serving options a variant sets (None: what the request or the sidecar says)."""

    diversity: _Fraction | None = None
    explore: _Fraction | None = None
    context_weight: Annotated[float, msgspec.Meta(ge=0.0, le=10.0)] | None = None
    top_n: Annotated[int, msgspec.Meta(ge=1, le=1000)] | None = None
    exclude_categories: tuple[Annotated[str, msgspec.Meta(max_length=256)], ...] = ()


class Variant(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """One arm of an experiment."""

    name: Name
    share: Annotated[float, msgspec.Meta(gt=0.0, le=1e6)] = 1.0
    popular: bool = False
    """The non-personalised control: serves the popular list of the request's segment."""
    serving: Serving = Serving()
    scoring: dict[str, Annotated[float, msgspec.Meta(ge=0.0, le=100.0)]] = {}

    def __post_init__(self) -> None:
        bad = sorted(set(self.scoring) - set(SCORING_WEIGHTS))
        if bad:
            raise ValueError(f"variant {self.name!r}: unknown scoring weight {bad[0]!r}; expected one of {', '.join(SCORING_WEIGHTS)}")
        if self.scoring.get("w_ctx", 0.0) > 10.0:
            raise ValueError(f"variant {self.name!r}: w_ctx must be at most 10")


class Experiment(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """An experiment: named variants with traffic shares, one of them the control."""

    name: Name
    variants: Annotated[tuple[Variant, ...], msgspec.Meta(min_length=2, max_length=MAX_VARIANTS)]
    salt: Annotated[str, msgspec.Meta(max_length=256)] | None = None
    traffic: Annotated[float, msgspec.Meta(gt=0.0, le=1.0)] = 1.0
    metric: Literal["ctr", "cart_rate", "conversion", "rpm"] = "ctr"
    control: Name | None = None
    alpha: Annotated[float, msgspec.Meta(gt=0.0, lt=0.5)] = 0.05
    """The error rate of the always-valid decision (0.05: 95 % intervals)."""

    def __post_init__(self) -> None:
        names = [v.name for v in self.variants]
        if len(set(names)) != len(names):
            raise ValueError(f"experiment {self.name!r}: two variants have the same name")
        if self.control is not None and self.control not in names:
            raise ValueError(f"experiment {self.name!r}: control {self.control!r} is not one of its variants")

    def control_variant(self) -> Variant:
        if self.control is not None:
            return next(v for v in self.variants if v.name == self.control)
        return next((v for v in self.variants if v.popular), self.variants[0])

    def variant_of(self, user: str) -> Variant:
        """The user's variant (whether or not the user is in this experiment's traffic)."""
        u = _unit(self.salt if self.salt is not None else self.name, user)
        total = sum(v.share for v in self.variants)
        acc = 0.0
        for v in self.variants:
            acc += v.share / total
            if u < acc:
                return v
        return self.variants[-1]


def _unit(salt: str, user: str) -> float:
    """A uniform number in [0, 1) from the salted hash of a user id."""
    h = hashlib.blake2b(salt.encode("utf-8", "surrogatepass") + b"\0" + user.encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(h, "big") / 18446744073709551616.0


def assign(experiments: tuple[Experiment, ...], user: str) -> tuple[Experiment, Variant] | None:
    """The experiment and variant of a user, or None when the user is in none."""
    if not experiments:
        return None
    u = _unit(LAYER_SALT, user)
    lo = 0.0
    for exp in experiments:
        lo += exp.traffic
        if u < lo:
            return exp, exp.variant_of(user)
    return None


def check(experiments: tuple[Experiment, ...]) -> tuple[Experiment, ...]:
    """The experiments, once checked together: names unique, traffic at most 1 in all."""
    from recofast_sidecar.protocol.settings import ConfigError  # settings imports this module

    if len(experiments) > MAX_EXPERIMENTS:
        raise ConfigError(f"at most {MAX_EXPERIMENTS} experiments, got {len(experiments)}")
    names = [e.name for e in experiments]
    if len(set(names)) != len(names):
        raise ConfigError("two experiments have the same name")
    total = sum(e.traffic for e in experiments)
    if total > 1.0 + 1e-9:
        raise ConfigError(f"the experiments' traffic adds up to {total:g}, more than 1")
    return experiments


def parse(value: Any) -> tuple[Experiment, ...]:
    """Experiments from their TOML form (a list of tables); raises :class:`ConfigError`
    naming what is wrong."""
    from recofast_sidecar.protocol.settings import ConfigError

    try:
        got = msgspec.convert(value, tuple[Experiment, ...])
    except (msgspec.ValidationError, ValueError) as e:
        raise ConfigError(f"[[experiments]]: {e}") from None
    return check(got)


def load(path: str | os.PathLike[str]) -> tuple[Experiment, ...]:
    """The ``[[experiments]]`` of a TOML file (none when it declares none)."""
    from recofast_sidecar.protocol.settings import ConfigError

    try:
        data = tomllib.loads(Path(path).read_text())
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: not valid TOML ({e})") from None
    except OSError as e:
        raise ConfigError(f"{path}: {e.strerror or e}") from None
    return parse(data.get("experiments", []))


def weights_key(v: Variant | None) -> tuple[tuple[str, float], ...]:
    """A hashable form of a variant's scoring overrides (empty: the model's own weights)."""
    return tuple(sorted(v.scoring.items())) if v is not None else ()


__all__ = [
    "LAYER_SALT",
    "MAX_EXPERIMENTS",
    "MAX_VARIANTS",
    "METRICS",
    "SCORING_WEIGHTS",
    "Experiment",
    "Serving",
    "Variant",
    "assign",
    "check",
    "load",
    "parse",
    "weights_key",
]
