"""Few-shot sinusoid regression (Finn et al. 2017, "Model-agnostic meta-learning", §5.1).

Each task is a sine wave ``y = A sin(x - φ)`` with amplitude ``A ~ U[0.1, 5]`` and phase
``φ ~ U[0, π]``. A task holds a *support* set of ``shots`` points, the data inner
training sees (``loss``), and a *query* set drawn from the same wave, the data a
meta-objective measures (``eval_loss``); inputs are ``x ~ U[-5, 5]``. The model is the
paper's ReLU MLP 1-40-40-1 trained with mean squared error.
"""

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp

from metaopt.core import checks
from metaopt.core.registry import Entry
from metaopt.core.types import TaskFamily
from metaopt.tasks.regression import init_mlp, mlp_forward


class SinusoidTask(NamedTuple):
    """One sine wave and its support and query points.

    Attributes:
      amplitude: ``A``.
      phase: ``φ``.
      x_support: ``(shots, 1)`` inputs the inner loop trains on.
      y_support: ``(shots, 1)`` targets.
      x_query: ``(query_shots, 1)`` inputs the meta-objective measures.
      y_query: ``(query_shots, 1)`` targets.
    """

    amplitude: jax.Array
    phase: jax.Array
    x_support: jax.Array
    y_support: jax.Array
    x_query: jax.Array
    y_query: jax.Array


def sine(task: SinusoidTask, x: jax.Array) -> jax.Array:
    """The task's true function ``A sin(x - φ)``.

    Example:
      >>> import jax.numpy as jnp
      >>> t = SinusoidTask(jnp.array(2.0), jnp.array(0.0), None, None, None, None)
      >>> float(sine(t, jnp.array(jnp.pi / 2)))
      2.0
    """
    return task.amplitude * jnp.sin(x - task.phase)


def _mse(params: list[dict], x: jax.Array, y: jax.Array) -> jax.Array:
    return jnp.mean((mlp_forward(params, x) - y) ** 2)


def sinusoid_family(
    *,
    shots: int = 10,
    query_shots: int = 10,
    hidden_sizes: tuple[int, ...] = (40, 40),
    amplitude: tuple[float, float] = (0.1, 5.0),
    phase: tuple[float, float] = (0.0, math.pi),
    x_range: tuple[float, float] = (-5.0, 5.0),
) -> TaskFamily:
    """Sine waves with ``shots`` support points and ``query_shots`` query points each.

    Args:
      shots: support points per task (the paper's K: 5 or 10).
      query_shots: query points per task; more of them measure adaptation more
        precisely, at the same cost to the inner loop.
      hidden_sizes: hidden widths of the ReLU MLP.
      amplitude: the range ``A`` is drawn from, uniformly.
      phase: the range ``φ`` is drawn from, uniformly.
      x_range: the range inputs are drawn from, uniformly.

    Returns:
      A :class:`~metaopt.TaskFamily` whose configurations are :class:`SinusoidTask`;
      ``loss`` is the support MSE and ``eval_loss`` the query MSE (neither uses its key).

    Example:
      >>> import jax
      >>> fam = sinusoid_family(shots=5)
      >>> task = fam.sample(jax.random.key(0))
      >>> params = fam.init(task, jax.random.key(1))
      >>> task.x_support.shape, fam.eval_loss(task, params, None).shape
      ((5, 1), ())
    """
    shots = checks.positive_int("shots", shots)
    query_shots = checks.positive_int("query_shots", query_shots)
    hidden_sizes = tuple(checks.positive_int("hidden_sizes", h) for h in hidden_sizes)
    for arg, (low, high) in (("amplitude", amplitude), ("phase", phase), ("x_range", x_range)):
        if not low <= high:
            raise ValueError(
                f"{arg} must be a range (low, high) with low <= high, got {(low, high)}"
            )
    sizes = (1, *hidden_sizes, 1)

    def sample(key: jax.Array) -> SinusoidTask:
        k_a, k_p, k_s, k_q = jax.random.split(key, 4)
        a = jax.random.uniform(k_a, (), minval=amplitude[0], maxval=amplitude[1])
        p = jax.random.uniform(k_p, (), minval=phase[0], maxval=phase[1])
        xs = jax.random.uniform(k_s, (shots, 1), minval=x_range[0], maxval=x_range[1])
        xq = jax.random.uniform(k_q, (query_shots, 1), minval=x_range[0], maxval=x_range[1])
        task = SinusoidTask(a, p, xs, None, xq, None)
        return task._replace(y_support=sine(task, xs), y_query=sine(task, xq))

    def init(task: SinusoidTask, key: jax.Array) -> list[dict]:
        del task
        return init_mlp(key, sizes)

    def loss(task: SinusoidTask, params: list[dict], key: jax.Array) -> jax.Array:
        del key
        return _mse(params, task.x_support, task.y_support)

    def eval_loss(task: SinusoidTask, params: list[dict], key: jax.Array) -> jax.Array:
        del key
        return _mse(params, task.x_query, task.y_query)

    name = f"sinusoid_{shots}shot"
    return TaskFamily(name=name, sample=sample, init=init, loss=loss, eval_loss=eval_loss)


def _build(split: str) -> TaskFamily:
    del split  # every sine is fresh
    return sinusoid_family()


ENTRY = Entry(
    "sinusoid",
    _build,
    None,
    "10-shot sine regression (Finn et al. 2017); query set in eval_loss",
    frozenset({"query"}),
)
