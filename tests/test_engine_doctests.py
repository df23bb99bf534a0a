"""The docstring examples of the engine's modules and the sidecar codec run as doctests."""

import doctest
import importlib

import pytest

MODULES = [
    "recofast_sidecar.protocol.events",
    "recofast.engine.enrich",
    "recofast.engine.config",
    "recofast.engine.metrics",
    "recofast.engine.htmlreport",
    "recofast.engine.checkpoints",
    "recofast.engine.publish",
    "recofast.engine.dashboard",
    "recofast_sidecar.protocol.codec",
    "recofast_sidecar.protocol.context",
]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0, f"{result.failed} doctest(s) failed in {name}"
    assert result.attempted > 0, f"{name} has no examples"
