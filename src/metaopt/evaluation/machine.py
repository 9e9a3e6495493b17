"""A description of the machine a run or benchmark happened on."""

import os
import platform
from typing import Any

import jax


def machine() -> dict[str, Any]:
    """Where a run happened, for the record."""
    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "jax": jax.__version__,
        "backend": jax.default_backend(),
        "devices": [str(d) for d in jax.devices()],
        "python": platform.python_version(),
    }
