"""Running any optax transformation on held-out tasks, and tuning learning rates."""

from collections.abc import Callable, Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh

from metaopt.core import checks
from metaopt.core.sharding import check_divisible, check_mesh, constrain_tasks, jit_replicated
from metaopt.core.types import EpisodicLearner, MetaLearner, PyTree, TaskFamily, Theta, with_data
from metaopt.core.unroll import InnerState, unroll
from metaopt.evaluation.episodes import episode_validation_loss


class TaskSample(NamedTuple):
    """A batch of sampled tasks ready to train; every leaf has a leading task axis.

    Attributes:
      cfgs: task configurations.
      params: initial parameters.
      keys: one key per task for its minibatches.
    """

    cfgs: PyTree
    params: PyTree
    keys: jax.Array


def sample_tasks(
    family: TaskFamily,
    key: jax.Array,
    num_tasks: int,
    init: Callable[[PyTree, jax.Array], PyTree] | None = None,
) -> TaskSample:
    """Samples ``num_tasks`` tasks with their initial params and minibatch keys.

    ``init(cfg, key) -> params`` draws the initial params; ``family.init`` if None.

    Example:
      >>> import jax
      >>> from metaopt.tasks.quadratic import quadratic_family
      >>> sample_tasks(quadratic_family(), jax.random.key(0), 3).params.shape
      (3, 10)
    """
    k_cfg, k_init, k_run = jax.random.split(key, 3)
    split = lambda k: constrain_tasks(jax.random.split(k, num_tasks))  # noqa: E731
    cfgs = constrain_tasks(jax.vmap(family.sample)(split(k_cfg)))
    init = family.init if init is None else init
    params = constrain_tasks(jax.vmap(init)(cfgs, split(k_init)))
    return TaskSample(cfgs, params, split(k_run))


def run_tasks(
    family: TaskFamily,
    tx: optax.GradientTransformation,
    tasks: TaskSample,
    num_steps: int,
) -> jax.Array:
    """Trains every task of ``tasks`` with ``tx``; returns ``(num_tasks, num_steps + 1)`` losses.

    Entry ``[i, t]`` is task ``i``'s loss after ``t`` updates (traceable).
    """

    def one_task(cfg, params, key):
        state = InnerState(params, tx.init(params), jnp.zeros((), jnp.int32))
        k_steps, k_last = jax.random.split(key)
        state, losses = unroll(family, tx, cfg, state, k_steps, num_steps)
        return jnp.concatenate([losses, family.loss(cfg, state.params, k_last)[None]])

    return jax.vmap(one_task)(tasks.cfgs, tasks.params, tasks.keys)


def loss_curves(
    family: TaskFamily,
    tx: optax.GradientTransformation,
    key: jax.Array,
    num_tasks: int,
    num_steps: int,
) -> jax.Array:
    """Trains ``num_tasks`` fresh tasks with ``tx`` and records their losses.

    This is the traceable core of :func:`evaluate`; call it inside your own ``jit``
    when ``tx`` depends on traced values (a learning rate, meta-parameters).

    Returns:
      Array ``(num_tasks, num_steps + 1)``: entry ``[i, t]`` is task ``i``'s loss after
      ``t`` updates.

    Example:
      >>> import jax, optax, metaopt as mo
      >>> curves = loss_curves(mo.quadratic_family(dim=3), optax.sgd(0.01),
      ...                      jax.random.key(0), num_tasks=4, num_steps=10)
      >>> curves.shape, bool((curves[:, -1] < curves[:, 0]).all())
      ((4, 11), True)
    """
    return run_tasks(family, tx, sample_tasks(family, key, num_tasks), num_steps)


def learner_curves(
    learner: MetaLearner,
    family: TaskFamily,
    theta: Theta,
    key: jax.Array,
    num_tasks: int,
    num_steps: int,
) -> jax.Array:
    """:func:`loss_curves` of what θ implies: ``learner.init_params`` and ``learner.tx``.

    Traceable. For a learned optimizer it equals ``loss_curves(family, as_optax(lopt,
    theta), key, num_tasks, num_steps)``.

    Example:
      >>> import jax
      >>> from metaopt import learned_optimizer, lstm_optimizer, quadratic_family
      >>> learner = learned_optimizer(lstm_optimizer())
      >>> theta = learner.init(jax.random.key(0))
      >>> learner_curves(learner, quadratic_family(), theta, jax.random.key(1), 3, 5).shape
      (3, 6)
    """
    tasks = sample_tasks(
        family, key, num_tasks, init=lambda c, k: learner.init_params(theta, family, c, k)
    )
    return run_tasks(family, learner.tx(theta), tasks, num_steps)


def validation_loss(
    learner: MetaLearner | EpisodicLearner,
    family: TaskFamily,
    key: jax.Array,
    *,
    num_tasks: int,
    num_steps: int,
    mesh: Mesh | None = None,
) -> Callable[[Theta], float]:
    """``validate(theta)``: mean final loss on ``num_tasks`` fixed tasks drawn with ``key``.

    Compiled once; the family's arrays enter as an argument. Pass it to
    :func:`~metaopt.meta_train` as ``validate=``. With a ``mesh`` (see
    :func:`~metaopt.task_mesh`) the tasks are split over its devices; ``num_tasks``
    must then divide evenly. For an episodic learner, which takes no inner steps, it is
    the mean episode loss of held-out episodes
    (:func:`~metaopt.evaluation.episodes.episode_validation_loss`).

    Example:
      >>> import jax
      >>> from metaopt import learned_optimizer, lstm_optimizer, quadratic_family
      >>> learner = learned_optimizer(lstm_optimizer())
      >>> validate = validation_loss(learner, quadratic_family(), jax.random.key(1),
      ...     num_tasks=4, num_steps=10)
      >>> validate(learner.init(jax.random.key(0))) > 0
      True
    """
    if isinstance(learner, EpisodicLearner):
        return episode_validation_loss(learner, family, key, num_tasks=num_tasks, mesh=mesh)
    num_tasks = checks.positive_int("num_tasks", num_tasks)
    num_steps = checks.positive_int("num_steps", num_steps)
    _check_tasks(num_tasks, mesh)
    run = jit_replicated(
        lambda data, th, k: jnp.mean(
            learner_curves(learner, with_data(family, data), th, k, num_tasks, num_steps)[:, -1]
        ),
        mesh,
    )
    return lambda theta: float(run(family.data, theta, key))


def _check_tasks(num_tasks: int, mesh: Mesh | None) -> None:
    if mesh is not None:
        check_divisible("num_tasks", num_tasks, check_mesh(mesh))


def evaluate(
    tx: optax.GradientTransformation,
    family: TaskFamily,
    key: jax.Array,
    num_tasks: int = 256,
    num_steps: int = 100,
    mesh: Mesh | None = None,
) -> np.ndarray:
    """Per-step loss curves of ``tx`` on ``num_tasks`` tasks sampled with ``key``.

    Args:
      tx: any optax transformation (a learned one from :func:`~metaopt.as_optax`).
      family: where tasks come from.
      key: draws the tasks, initial params and minibatches.
      num_tasks: how many tasks (a multiple of the device count with a ``mesh``).
      num_steps: updates per task.
      mesh: split the tasks over this mesh's devices (:func:`~metaopt.task_mesh`).

    Returns:
      NumPy array ``(num_tasks, num_steps + 1)`` of losses, step 0 first.

    Example:
      >>> import jax, optax
      >>> from metaopt.tasks.quadratic import quadratic_family
      >>> curves = evaluate(optax.adam(0.1), quadratic_family(), jax.random.key(0), 8, 20)
      >>> curves.shape
      (8, 21)

    """
    num_tasks = checks.positive_int("num_tasks", num_tasks)
    num_steps = checks.positive_int("num_steps", num_steps)
    _check_tasks(num_tasks, mesh)
    run = jit_replicated(
        lambda data, k: loss_curves(with_data(family, data), tx, k, num_tasks, num_steps), mesh
    )
    return np.asarray(run(family.data, key))


class TuneResult(NamedTuple):
    """Outcome of :func:`tune_learning_rate`.

    Attributes:
      learning_rate: the rate with the lowest mean final loss.
      learning_rates: the grid searched.
      final_loss_mean: mean final loss for each rate (``inf`` where it diverged).

    """

    learning_rate: float
    learning_rates: np.ndarray
    final_loss_mean: np.ndarray


def log_grid(low: float, high: float, num: int) -> np.ndarray:
    """``num`` learning rates evenly spaced in log between ``low`` and ``high``.

    Example:
      >>> log_grid(1e-3, 1e-1, 3).tolist()
      [0.001, 0.01, 0.1]

    """
    low = checks.positive_float("low", low)
    high = checks.positive_float("high", high)
    num = checks.positive_int("num", num)
    if high < low:
        raise ValueError(f"high must be >= low, got low={low}, high={high}")
    return np.geomspace(low, high, num)


def tune_learning_rate(
    make_tx: Callable[[jax.Array], optax.GradientTransformation],
    family: TaskFamily,
    key: jax.Array,
    learning_rates: Sequence[float],
    num_tasks: int = 128,
    num_steps: int = 100,
    mesh: Mesh | None = None,
) -> TuneResult:
    """Picks the learning rate with the lowest mean final loss on sampled tasks.

    All rates run in one compiled, vmapped computation on the same tasks, so
    ``make_tx`` must accept a traced scalar (every optax alias does).

    Args:
      make_tx: ``learning_rate -> transformation``, e.g. ``optax.adam``.
      family: where tasks come from; use a ``key`` apart from evaluation's.
      key: draws the tuning tasks.
      learning_rates: the grid.
      num_tasks: tasks per rate.
      num_steps: updates per task; the loss after the last one is compared.
      mesh: split the tasks over this mesh's devices (:func:`~metaopt.task_mesh`).

    Example:
      >>> import jax, optax
      >>> from metaopt.tasks.quadratic import quadratic_family
      >>> result = tune_learning_rate(
      ...     optax.sgd, quadratic_family(), jax.random.key(0), [1e-3, 1e-2], 16, 20)
      >>> result.learning_rate in (1e-3, 1e-2)
      True

    """
    rates = np.asarray(learning_rates, dtype=np.float64)
    if rates.ndim != 1 or rates.size == 0:
        raise ValueError(f"learning_rates must be a non-empty 1-D sequence, got {learning_rates!r}")
    if not np.all(np.isfinite(rates) & (rates > 0)):
        raise ValueError(f"learning_rates must be finite and positive, got {rates.tolist()}")
    num_tasks = checks.positive_int("num_tasks", num_tasks)
    num_steps = checks.positive_int("num_steps", num_steps)
    _check_tasks(num_tasks, mesh)

    rates_f32 = jnp.asarray(rates, jnp.float32)

    def run(data, k, r):
        fam = with_data(family, data)
        return final_loss_by_rate(make_tx, fam, sample_tasks(fam, k, num_tasks), r, num_steps)

    finals = np.asarray(jit_replicated(run, mesh)(family.data, key, rates_f32))
    finals = np.where(np.isfinite(finals), finals, np.inf)
    best = int(np.argmin(finals))
    return TuneResult(float(rates[best]), rates, finals)


def final_loss_by_rate(
    make_tx: Callable[[jax.Array], optax.GradientTransformation],
    family: TaskFamily,
    tasks: TaskSample,
    learning_rates: jax.Array,
    num_steps: int,
) -> jax.Array:
    """Mean final loss on ``tasks`` for each learning rate, ``inf`` where not finite.

    Traceable; every rate runs on the same tasks.
    """

    def final_mean(lr):
        return jnp.mean(run_tasks(family, make_tx(lr), tasks, num_steps)[:, -1])

    finals = jax.vmap(final_mean)(learning_rates)
    return jnp.where(jnp.isfinite(finals), finals, jnp.inf)


def baseline_optimizers() -> dict[str, Callable[[jax.Array], optax.GradientTransformation]]:
    """The paper's hand-designed baselines, each as ``learning_rate -> transformation``.

    SGD, NAG (Nesterov momentum 0.9), RMSprop and Adam, with optax's defaults otherwise.

    Example:
      >>> sorted(baseline_optimizers())
      ['adam', 'nag', 'rmsprop', 'sgd']

    """
    return {
        "sgd": optax.sgd,
        "nag": lambda lr: optax.sgd(lr, momentum=0.9, nesterov=True),
        "rmsprop": optax.rmsprop,
        "adam": optax.adam,
    }
