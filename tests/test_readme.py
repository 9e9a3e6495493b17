"""The README's Python examples run as written."""

import re
from pathlib import Path

import jax.numpy as jnp
import numpy as np

README = Path(__file__).resolve().parent.parent / "README.md"


def test_readme_python_blocks_run_in_order():
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert len(blocks) >= 3
    namespace: dict = {}
    for block in blocks:
        exec(compile(block, str(README), "exec"), namespace)
    # The optax loop example fits its linear regression: the loss fell by far.
    assert float(namespace["value"]) < 0.1 * float(jnp.mean(namespace["y"] ** 2))
    assert np.all(np.isfinite(namespace["curves"]))
