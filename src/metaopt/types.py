"""The two protocols metaopt is built on: task families and learned optimizers.

Both are NamedTuples of pure functions, so they compose by plain function calls and
every piece of state they touch is an explicit pytree argument.
"""

from collections.abc import Callable
from typing import Any, NamedTuple

import jax

PyTree = Any
Params = PyTree
Theta = PyTree
TaskConfig = PyTree


class TaskFamily(NamedTuple):
    """A family of optimization problems.

    Attributes:
      name: short identifier, e.g. ``"quadratic"``.
      sample: ``sample(key) -> cfg`` draws one task configuration (a pytree of arrays),
        so ``jax.vmap(sample)(keys)`` draws a batch of tasks.
      init: ``init(cfg, key) -> params`` draws the optimizee's initial parameters.
      loss: ``loss(cfg, params, key) -> scalar``; ``key`` draws a minibatch for
        data-driven tasks and is ignored by deterministic ones.
      data: arrays the functions read (a dataset on device), or None.
      bind: ``bind(data) -> TaskFamily`` rebuilds the family over other arrays of the
        same shapes. metaopt's compiled functions take ``data`` as an argument and
        call ``bind`` on the traced value, so a dataset is never baked into a
        program as a constant. None for families without data.
    """

    name: str
    sample: Callable[[jax.Array], TaskConfig]
    init: Callable[[TaskConfig, jax.Array], Params]
    loss: Callable[[TaskConfig, Params, jax.Array], jax.Array]
    data: PyTree = None
    bind: "Callable[[PyTree], TaskFamily] | None" = None


def with_data(family: TaskFamily, data: PyTree) -> TaskFamily:
    """Returns ``family`` reading ``data`` (for instance a traced argument of ``jit``).

    Example:
      >>> from metaopt.quadratic import quadratic_family
      >>> fam = quadratic_family()
      >>> with_data(fam, None) is fam
      True
    """
    return family if family.bind is None else family.bind(data)


class LearnedOptimizer(NamedTuple):
    """A learned optimizer: an update rule whose weights ``theta`` are meta-learned.

    Attributes:
      name: architecture identifier, e.g. ``"lstm"``.
      config: the architecture's hyperparameters (plain Python values), enough to
        rebuild it with its factory.
      init: ``init(key) -> theta`` draws initial meta-parameters.
      init_state: ``init_state(theta, params) -> state`` builds the per-parameter state.
      update: ``update(theta, grads, state, params) -> (updates, state)`` proposes the
        additive update of ``params`` from ``grads``.

    """

    name: str
    config: dict[str, Any]
    init: Callable[[jax.Array], Theta]
    init_state: Callable[[Theta, Params], PyTree]
    update: Callable[[Theta, PyTree, PyTree, Params | None], tuple[PyTree, PyTree]]
