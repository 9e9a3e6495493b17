"""The runnable examples in metaopt's docstrings run and print what they claim."""

import doctest
import importlib
import pkgutil
import warnings

import pytest

import metaopt

# Every module of every layer (metaopt.core.unroll, metaopt.estimators.pes, ...).
MODULES = sorted(
    m.name
    for m in pkgutil.walk_packages(metaopt.__path__, "metaopt.")
    if not m.name.endswith("__main__")
)


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    with warnings.catch_warnings():
        # Old import paths kept for one release warn on import; their examples still run.
        warnings.simplefilter("ignore", DeprecationWarning)
        module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0, f"{result.failed} docstring example(s) failed in {name}"
