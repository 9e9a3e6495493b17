"""The runnable examples in metaopt's docstrings run and print what they claim."""

import doctest
import importlib
import inspect
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


NAMESPACES = [
    "metaopt",
    "metaopt.tasks",
    "metaopt.optimizers",
    "metaopt.learners",
    "metaopt.estimators",
    "metaopt.evaluation",
    "metaopt.io",
    "metaopt.train",
]


def _exported_functions():
    for namespace in NAMESPACES:
        module = importlib.import_module(namespace)
        for name in module.__all__:
            obj = getattr(module, name)
            if inspect.isfunction(obj):
                yield f"{namespace}.{name}", obj


@pytest.mark.parametrize(
    "name, function", [pytest.param(n, f, id=n) for n, f in _exported_functions()]
)
def test_every_exported_function_has_a_runnable_example(name, function):
    # A module without examples would pass the doctest run above vacuously; the public
    # API's functions must each show one.
    examples = doctest.DocTestParser().get_examples(inspect.getdoc(function) or "")
    assert examples, f"{name} has no runnable example in its docstring"
