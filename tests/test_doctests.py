"""The docstring examples of the public modules run as doctests."""

import doctest
import importlib

import pytest

MODULES = ["recofast", "recofast.recommender", "recofast.evaluation.data", "recofast.evaluation.train", "recofast.evaluation.protocol", "recofast.drift", "recofast.errors", "recofast.adaptation", "recofast.kernels", "recofast.engine.stack", "recofast.evaluation.simulate"]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0, f"{result.failed} doctest(s) failed in {name}"
    if name in ("recofast", "recofast.recommender"):
        assert result.attempted > 0, f"{name} has no examples"
