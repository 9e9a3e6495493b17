"""θ is the inner params' initialization, trained by a fixed rule (MAML, Reptile).

Finn et al. 2017 ("Model-agnostic meta-learning for fast adaptation of deep networks")
and Nichol et al. 2018 ("On first-order meta-learning algorithms") meta-learn where
inner training starts; the update rule is a fixed optax transformation, plain SGD by
default. Which meta-gradient trains θ is the estimator's choice
(:func:`~metaopt.maml`, :func:`~metaopt.fomaml`, :func:`~metaopt.reptile`).
"""

import dataclasses
from collections.abc import Callable

import jax
import optax

from metaopt.core import checks
from metaopt.core.registry import Entry, option
from metaopt.core.types import MetaLearner, Params, TaskConfig, TaskFamily, Theta

Init = Callable[[jax.Array], Params]


def initializer(init: "Init | TaskFamily") -> Init:
    """``init(key) -> params``, from a function or from a task family's own ``init``.

    Example:
      >>> import jax
      >>> from metaopt import quadratic_family
      >>> initializer(quadratic_family())(jax.random.key(0)).shape
      (10,)
    """
    if isinstance(init, TaskFamily):
        family = init

        def from_family(key: jax.Array) -> Params:
            k_cfg, k_init = jax.random.split(key)
            return family.init(family.sample(k_cfg), k_init)

        return from_family
    if not callable(init):
        raise TypeError(
            f"init must be a function key -> params or a TaskFamily, got {type(init).__name__}"
        )
    return init


def learned_initialization(
    init: "Init | TaskFamily", tx: optax.GradientTransformation | None = None
) -> MetaLearner:
    """The meta-learner whose θ is where every task's inner training starts.

    Args:
      init: draws θ's initial value, ``init(key) -> params`` (a flax model's
        ``lambda k: model.init(k, x)["params"]``), or a task family, whose ``init``
        then draws it.
      tx: the fixed inner update rule; ``optax.sgd(0.01)`` if None (MAML's sinusoid
        setting).

    Returns:
      A :class:`~metaopt.MetaLearner` with ``init_params(theta, ...) = theta`` and
      ``tx(theta) = tx``.

    Example:
      >>> import jax
      >>> from metaopt import sinusoid_family
      >>> fam = sinusoid_family()
      >>> learner = learned_initialization(fam)
      >>> theta = learner.init(jax.random.key(0))
      >>> cfg = fam.sample(jax.random.key(1))
      >>> learner.init_params(theta, fam, cfg, jax.random.key(2)) is theta
      True
    """
    draw = initializer(init)
    tx = optax.sgd(0.01) if tx is None else tx
    if not isinstance(tx, optax.GradientTransformation):
        raise TypeError(f"tx must be an optax.GradientTransformation, got {type(tx).__name__}")

    def init_params(theta: Theta, family: TaskFamily, cfg: TaskConfig, key: jax.Array) -> Params:
        del family, cfg, key
        return theta

    return MetaLearner(
        name="learned_initialization",
        config={"initialization": "learned"},
        init=draw,
        init_params=init_params,
        tx=lambda theta: tx,
    )


@dataclasses.dataclass(frozen=True)
class InnerSGDOptions:
    """A learned initialization's inner rule on the command line: SGD at ``inner_lr``."""

    inner_lr: float = option(
        0.01, "inner SGD rate (metasgd: its initial value)", check=checks.positive_float
    )


def _build(lopt, family: TaskFamily, options: InnerSGDOptions) -> MetaLearner:
    del lopt
    return learned_initialization(family, optax.sgd(options.inner_lr))


ENTRY = Entry(
    "learned_init",
    _build,
    InnerSGDOptions,
    "θ is the initialization; inner SGD at inner_lr (MAML, Reptile)",
    frozenset({"initialization"}),
)
