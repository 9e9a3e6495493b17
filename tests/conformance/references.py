"""Which tests check each estimator against an independent computation.

A test in ``tests/`` that compares an estimator with what it estimates (the exact
gradient of a hand-written unroll, finite differences, a closed form, Gaussian
quadrature of the smoothed objective) says so with ``@reference_for("name")``.
``test_registered_estimators.py`` imports the test packages and requires every
registered estimator to have one, so a new estimator cannot join the registry with only
the conformance checks, which compare it with itself.
"""

import importlib
import pkgutil
from collections.abc import Callable

REFERENCES: dict[str, list[str]] = {}

# The test packages whose modules may hold reference tests.
PACKAGES = ("tests.estimators", "tests.learners", "tests.diagnostics")


def reference_for(*estimators: str) -> Callable:
    """Marks a test as checking ``estimators`` against an independent computation."""

    def mark(test: Callable) -> Callable:
        for name in estimators:
            REFERENCES.setdefault(name, []).append(f"{test.__module__}::{test.__qualname__}")
        return test

    return mark


def collected() -> dict[str, list[str]]:
    """:data:`REFERENCES` after importing every test module of :data:`PACKAGES`."""
    for package in PACKAGES:
        path = importlib.import_module(package).__path__
        for module in pkgutil.iter_modules(path, package + "."):
            if module.name.rpartition(".")[2].startswith("test_"):
                importlib.import_module(module.name)
    return REFERENCES
