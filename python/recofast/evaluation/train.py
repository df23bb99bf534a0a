"""Recommender options given as text (``--option name=value``) and the model they make, for
``recofast train`` and ``recofast eval``."""

from __future__ import annotations

from recofast.recommender import Recommender


def parse_options(pairs: list[str] | None) -> dict[str, str]:
    """`name=value` pairs from the command line.

    >>> parse_options(["dim=32", "w_mf=0.2"])
    {'dim': '32', 'w_mf': '0.2'}
    """
    out: dict[str, str] = {}
    for p in pairs or []:
        name, sep, value = p.partition("=")
        if not sep or not name:
            raise ValueError(f"--option takes NAME=VALUE, got {p!r}")
        out[name.strip()] = value.strip()
    return out


def make_recommender(options: dict[str, str]) -> Recommender:
    opts = dict(options)
    dim = int(opts.pop("dim", 64))
    return Recommender(dim=dim, **opts)




