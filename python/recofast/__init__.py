"""recofast: real-time product recommendations with a Rust core.

>>> import recofast
>>> rec = recofast.Recommender(dim=16, seed=1)
>>> rec.learn_many(["ann", "ann", "bob"], ["mug", "tea", "mug"], events="purchase")
3
>>> [item for item, _ in rec.recommend("bob", k=1)]
['tea']
"""

from recofast import drift, errors, kernels
from recofast._core import EVENT_TYPES, __version__
from recofast._core import build_info as _build_info
from recofast.recommender import Recommender


def build_info() -> dict:
    """Version, build profile (``release`` or ``debug``) and the SIMD level in use.

    >>> info = build_info()
    >>> sorted(info)[:3]
    ['profile', 'simd', 'simd_available']
    >>> info["simd"] in info["simd_available"]
    True
    """
    return dict(_build_info())


__all__ = ["EVENT_TYPES", "Recommender", "__version__", "build_info", "drift", "errors", "kernels"]
