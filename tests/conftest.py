import contextlib
import os

# These tests are bound by XLA compilation, not by running what is compiled: compiling
# without LLVM's optimization passes halves their time. Set before JAX starts, and
# inherited by the metaopt processes the tests launch, so every run compares like with
# like. Benchmarks and users compile with the default optimization.
os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_backend_optimization_level=0"
).strip()

import jax
import pytest


@pytest.fixture
def count_compiles():
    """Context manager factory: ``with count_compiles() as n: ...; n[0]`` is #compiles."""

    @contextlib.contextmanager
    def counter():
        count = [0]

        def listener(name, duration, **kwargs):
            del duration, kwargs
            if name == "/jax/core/compile/backend_compile_duration":
                count[0] += 1

        jax.monitoring.register_event_duration_secs_listener(listener)
        try:
            yield count
        finally:
            jax.monitoring.unregister_event_duration_listener(listener)

    return counter
