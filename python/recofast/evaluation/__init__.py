"""Offline evaluation: the prequential protocol (:mod:`~recofast.evaluation.protocol`), the
peers (:mod:`~recofast.evaluation.baselines`), event logs and catalogues
(:mod:`~recofast.evaluation.data`), the simulated shop (:mod:`~recofast.evaluation.simulate`)
and model options from text (:mod:`~recofast.evaluation.train`)."""

from recofast.evaluation.protocol import Score, build_models, prequential

__all__ = ["Score", "build_models", "prequential"]
