"""The meta-training loop: jitted meta-steps of any estimator, hooks around them.

The loop owns only the loop. What is meta-learned is the estimator's learner, how the
meta-gradient is estimated is the estimator, and validation, progress, metrics,
checkpoints and signals are hooks (:mod:`metaopt.train.hooks`). A run is a deterministic
function of its key: meta-step ``i`` uses ``fold_in(k_train, i)``, so a run continued
from a saved state ends bit-identical to the run that never stopped.

Given a ``mesh`` (:func:`~metaopt.task_mesh`), the estimator state's task axis is split
over its devices and θ, the meta-optimizer state and the task family's data are
replicated; the meta-gradient's reduction over tasks happens inside the one jitted
meta-step. The same code runs in one process or, after
:func:`jax.distributed.initialize`, in every process of a multi-host job.
"""

import time
import warnings
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import numpy as np
import optax
from jax.sharding import Mesh

from metaopt.core import checks
from metaopt.core import sharding as sharding_lib
from metaopt.core.types import Estimator, Theta, with_data
from metaopt.train import hooks as hooks_lib
from metaopt.train.meta_step import MetaState, make_meta_step


class MetaTrainState(NamedTuple):
    """Everything a meta-training run needs to continue exactly where it stopped.

    Attributes:
      key: the run's key; every meta-step's randomness is derived from it and ``step``.
      step: meta-updates attempted so far (skipped ones included).
      theta: the current meta-parameters.
      meta_opt_state: the meta-optimizer's state (``meta_state`` before 0.3, still
        readable with a warning).
      estimator_state: the estimator's state (opaque, a leading task axis).
      best_theta: the meta-parameters with the best validation loss so far.
      best_validation_loss: that loss; ``nan`` before the first validation.
      skipped: non-finite meta-updates skipped so far.
      consecutive_skipped: how many of the latest meta-updates in a row were skipped.
      seconds: time spent in meta-steps (compilation and validation excluded).
      wall_seconds: wall time of the run so far.
    """

    key: jax.Array
    step: int
    theta: Theta
    meta_opt_state: optax.OptState
    estimator_state: Any
    best_theta: Theta
    best_validation_loss: float
    skipped: int
    consecutive_skipped: int
    seconds: float
    wall_seconds: float

    @property
    def meta_state(self) -> optax.OptState:
        """Deprecated name of ``meta_opt_state``."""
        warnings.warn(
            "MetaTrainState.meta_state is now meta_opt_state (as in MetaState)",
            DeprecationWarning,
            stacklevel=2,
        )
        return self.meta_opt_state


class MetaTrainResult(NamedTuple):
    """What :func:`meta_train` returns.

    Attributes:
      theta: the meta-parameters with the best validation loss (the last ones if
        there was no validation).
      last_theta: the meta-parameters after the last meta-update.
      history: one dict per meta-step run by this call (see :func:`meta_train`).
      best_validation_loss: the validation loss of ``theta`` (nan without validation).
      seconds: wall time of the meta-updates, compilation and hooks excluded.
      compile_seconds: time spent compiling the meta-step.
      function_steps_per_second: inner steps over all trajectories per second.
      state: the state to continue from (pass it back as ``state=``).
      stopped: True if a hook ended the run before ``num_steps``.
    """

    theta: Theta
    last_theta: Theta
    history: list[dict[str, Any]]
    best_validation_loss: float
    seconds: float
    compile_seconds: float
    function_steps_per_second: float
    state: MetaTrainState
    stopped: bool


class MetaTrainingDiverged(RuntimeError):
    """Too many consecutive meta-updates were skipped for non-finite values."""


def run_keys(key: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
    """A run's keys: initial θ, the estimator's initial state, meta-steps, validation.

    Example:
      >>> import jax
      >>> len(run_keys(jax.random.key(0)))
      4
    """
    k_theta, k_init, k_train, k_val = jax.random.split(key, 4)
    return k_theta, k_init, k_train, k_val


def init_meta_train_state(
    estimator: Estimator,
    key: jax.Array,
    *,
    meta_optimizer: optax.GradientTransformation | None = None,
    theta: Theta | None = None,
    mesh: Mesh | None = None,
) -> MetaTrainState:
    """The state :func:`meta_train` starts a run from; also a checkpoint's template.

    With a ``mesh``, the arrays are placed as :func:`meta_train` runs them: the
    estimator state split along its task axis (each process computes only its own
    slices), everything else replicated.

    Example:
      >>> import jax
      >>> from metaopt import learned_optimizer, lstm_optimizer, quadratic_family, tbptt
      >>> est = tbptt(learned_optimizer(lstm_optimizer()), quadratic_family(),
      ...     num_tasks=4, truncation=5, horizon=10)
      >>> s = init_meta_train_state(est, jax.random.key(0))
      >>> s.step, s.estimator_state.inner.params.shape
      (0, (4, 10))
    """
    key = checks.prng_key("key", key)
    if not isinstance(estimator, Estimator):
        raise TypeError(f"estimator must be an Estimator, got {type(estimator).__name__}")
    meta_optimizer = optax.adam(1e-3) if meta_optimizer is None else meta_optimizer
    k_theta, k_init, _, _ = run_keys(key)
    theta = estimator.learner.init(k_theta) if theta is None else theta

    def init_fn(data, th, k):
        return with_data(estimator, data).init(th, k)

    if mesh is None:
        meta_state = meta_optimizer.init(theta)
        estimator_state = jax.jit(init_fn)(estimator.data, theta, k_init)
    else:
        check_sharded_estimator(estimator, mesh)
        theta, data, k_init = sharding_lib.replicate((theta, estimator.data, k_init), mesh)
        meta_state = jax.jit(meta_optimizer.init, out_shardings=sharding_lib.replicated(mesh))(
            theta
        )
        shapes = jax.eval_shape(init_fn, data, theta, k_init)
        init = jax.jit(init_fn, out_shardings=sharding_lib.task_shardings(shapes, mesh))
        with jax.set_mesh(mesh):
            estimator_state = init(data, theta, k_init)
    return MetaTrainState(
        key=key,
        step=0,
        theta=theta,
        meta_opt_state=meta_state,
        estimator_state=estimator_state,
        best_theta=theta,
        best_validation_loss=float("nan"),
        skipped=0,
        consecutive_skipped=0,
        seconds=0.0,
        wall_seconds=0.0,
    )


def check_sharded_estimator(estimator: Estimator, mesh: Mesh) -> None:
    """Raises, naming ``num_tasks``, unless ``estimator``'s task batch splits over ``mesh``.

    Example:
      >>> from metaopt import learned_optimizer, lstm_optimizer, quadratic_family, tbptt
      >>> from metaopt.core.sharding import task_mesh
      >>> est = tbptt(learned_optimizer(lstm_optimizer()), quadratic_family(),
      ...     num_tasks=4, truncation=5, horizon=10)
      >>> check_sharded_estimator(est, task_mesh(1))
    """
    sharding_lib.check_mesh(mesh)
    num_tasks = estimator.config.get("num_tasks")
    if isinstance(num_tasks, int):
        sharding_lib.check_divisible("num_tasks", num_tasks, mesh)


def _place(state: MetaTrainState, mesh: Mesh) -> MetaTrainState:
    """``state``'s arrays where a sharded meta-step expects them (a restored checkpoint)."""
    theta, meta_state, best = sharding_lib.replicate(
        (state.theta, state.meta_opt_state, state.best_theta), mesh
    )
    for leaf in jax.tree.leaves(state.estimator_state):
        if jax.numpy.ndim(leaf):
            sharding_lib.check_divisible(
                "the estimator state's task axis", jax.numpy.shape(leaf)[0], mesh
            )
    return state._replace(
        theta=theta,
        meta_opt_state=meta_state,
        best_theta=best,
        estimator_state=sharding_lib.shard_tasks(state.estimator_state, mesh),
    )


def compile_meta_step(
    estimator: Estimator,
    meta_optimizer: optax.GradientTransformation,
    state: MetaTrainState,
    mesh: Mesh | None = None,
) -> Callable[..., tuple[MetaState, dict[str, jax.Array]]]:
    """The jitted, compiled ``step(data, theta, meta_opt_state, estimator_state, key)``.

    The meta-optimizer and estimator states are donated (updated in place); θ is not,
    since the best θ so far may share its buffers. The task family's arrays enter as
    ``data``, an argument, never as constants baked into the program. With a ``mesh``,
    the estimator state enters and leaves split along its task axis, the rest
    replicated.
    """

    def step(data, theta, meta_opt_state, estimator_state, key):
        meta_step = make_meta_step(with_data(estimator, data), meta_optimizer)
        return meta_step(MetaState(theta, meta_opt_state, estimator_state), key)

    args = (estimator.data, state.theta, state.meta_opt_state, state.estimator_state, state.key)
    if mesh is None:
        return jax.jit(step, donate_argnums=(2, 3)).lower(*args).compile()
    rep = sharding_lib.replicated(mesh)
    tasks = sharding_lib.task_shardings(state.estimator_state, mesh)
    jitted = jax.jit(
        step,
        donate_argnums=(2, 3),
        in_shardings=(rep, rep, rep, tasks, rep),
        out_shardings=(MetaState(rep, rep, tasks), rep),
    )
    args = (*args[:-1], sharding_lib.replicate(state.key, mesh))
    with jax.set_mesh(mesh):
        return jitted.lower(*args).compile()


def _check_resume(state: MetaTrainState, key: jax.Array, theta, num_steps: int) -> None:
    if theta is not None:
        raise ValueError("give theta or state, not both")
    if not np.array_equal(jax.random.key_data(key), jax.random.key_data(state.key)):
        raise ValueError("key must be the key of the run that produced state")
    if state.step > num_steps:
        raise ValueError(f"state is at meta-step {state.step}, past num_steps={num_steps}")


def _diverged(state: MetaTrainState, limit: int) -> MetaTrainingDiverged:
    first = state.step - state.consecutive_skipped + 1
    return MetaTrainingDiverged(
        f"{state.consecutive_skipped} consecutive meta-updates were skipped because the "
        f"meta-loss or meta-gradient was not finite (meta-steps {first}..{state.step}); "
        f"stopping (max_consecutive_skips={limit}). The meta-parameters are those of the "
        "last finite update."
    )


def _advance(state: MetaTrainState, arrays: MetaState, metrics: dict, seconds: float):
    """The run state after one meta-step, and that step's record."""
    skipped = int(metrics["skipped"])
    state = state._replace(
        step=state.step + 1,
        theta=arrays.theta,
        meta_opt_state=arrays.meta_opt_state,
        estimator_state=arrays.estimator_state,
        skipped=state.skipped + skipped,
        consecutive_skipped=(state.consecutive_skipped + 1) * skipped,
        seconds=state.seconds + seconds,
    )
    record = {"step": state.step}
    record |= {k: float(v) for k, v in metrics.items() if k not in ("skipped",)}
    record |= {"skipped": skipped, "skipped_total": state.skipped}
    return state, record


def _timed_step(step_fn, estimator: Estimator, state, k_train, start, wall_start: float, mesh):
    """Runs meta-step ``state.step`` and returns the new state and its record."""
    t0 = time.perf_counter()
    key = jax.random.fold_in(k_train, state.step)
    if mesh is not None:
        key = sharding_lib.replicate(key, mesh)
    arrays, metrics = step_fn(
        estimator.data, state.theta, state.meta_opt_state, state.estimator_state, key
    )
    metrics = jax.device_get(metrics)
    state, record = _advance(state, arrays, metrics, time.perf_counter() - t0)
    steps = state.step - start.step
    record["seconds"] = state.seconds
    record["function_steps_per_second"] = (
        steps * estimator.function_steps / (state.seconds - start.seconds)
    )
    state = state._replace(wall_seconds=start.wall_seconds + time.perf_counter() - wall_start)
    record["wall_seconds"] = state.wall_seconds
    return state, record


def _result(estimator: Estimator, start, state, history, compile_seconds, stopped):
    ran = state.seconds - start.seconds
    steps_run = state.step - start.step
    validated = not np.isnan(state.best_validation_loss)
    return MetaTrainResult(
        theta=state.best_theta if validated else state.theta,
        last_theta=state.theta,
        history=history,
        best_validation_loss=state.best_validation_loss,
        seconds=ran,
        compile_seconds=compile_seconds,
        function_steps_per_second=steps_run * estimator.function_steps / ran if ran > 0 else 0.0,
        state=state,
        stopped=stopped,
    )


def meta_train(
    estimator: Estimator,
    key: jax.Array,
    *,
    num_steps: int,
    meta_optimizer: optax.GradientTransformation | None = None,
    theta: Theta | None = None,
    state: MetaTrainState | None = None,
    validate: Callable[[Theta], float] | None = None,
    validate_every: int = 50,
    hooks: Sequence[hooks_lib.Hook] = (),
    progress: bool = True,
    max_consecutive_skips: int | None = None,
    mesh: Mesh | None = None,
) -> MetaTrainResult:
    """Meta-trains ``estimator.learner``'s θ with ``estimator``'s meta-gradients.

    Args:
      estimator: how meta-gradients are estimated (:func:`~metaopt.tbptt`,
        :func:`~metaopt.full_bptt`, :func:`~metaopt.es`, :func:`~metaopt.pes`, or your
        own :class:`~metaopt.Estimator`).
      key: the run's randomness (a PRNG key).
      num_steps: meta-updates in the whole run.
      meta_optimizer: optax transformation on θ; ``optax.adam(1e-3)`` if None.
      theta: initial meta-parameters; ``estimator.learner.init`` if None.
      state: a state to continue from (``result.state`` or a restored checkpoint);
        its key must be ``key``, the other arguments those of the run that made it.
      validate: ``validate(theta) -> loss``, e.g. from
        :func:`~metaopt.evaluation.evaluate.validation_loss`; the best θ is kept.
      validate_every: meta-steps between validations (and after the last).
      hooks: more :class:`~metaopt.train.hooks.Hook` s, run after validation and
        the progress bar.
      progress: show a progress bar with an ETA.
      max_consecutive_skips: raise :class:`MetaTrainingDiverged` once this many
        meta-updates in a row were skipped as non-finite; never if None.
      mesh: split the task batch over this mesh's devices (:func:`~metaopt.task_mesh`);
        ``num_tasks`` must be a multiple of its size. The result agrees with the
        one-device run to float tolerance. None runs on the default device.

    Returns:
      A :class:`MetaTrainResult`. Each ``history`` record has ``step``, the
      estimator's metrics (``meta_loss``, ``loss``, ...), ``grad_norm``, ``skipped``,
      ``skipped_total``, ``seconds``, ``wall_seconds`` and
      ``function_steps_per_second``; validated steps also have ``validation_loss`` and
      ``best_validation_loss``.

    Raises:
      MetaTrainingDiverged: ``max_consecutive_skips`` was reached.
      ValueError: ``num_tasks`` does not split evenly over ``mesh``.

    Example:
      >>> import jax
      >>> from metaopt import learned_optimizer, lstm_optimizer, quadratic_family, tbptt
      >>> est = tbptt(learned_optimizer(lstm_optimizer()), quadratic_family(),
      ...     num_tasks=8, truncation=5, horizon=10)
      >>> result = meta_train(est, jax.random.key(0), num_steps=4, progress=False)
      >>> len(result.history), result.state.step
      (4, 4)
    """
    wall_start = time.perf_counter()
    key = checks.prng_key("key", key)
    num_steps = checks.positive_int("num_steps", num_steps)
    if max_consecutive_skips is not None:
        max_consecutive_skips = checks.positive_int("max_consecutive_skips", max_consecutive_skips)
    meta_optimizer = optax.adam(1e-3) if meta_optimizer is None else meta_optimizer
    if mesh is not None:
        check_sharded_estimator(estimator, mesh)
        estimator = with_data(estimator, sharding_lib.replicate(estimator.data, mesh))
    if state is None:
        state = init_meta_train_state(
            estimator, key, meta_optimizer=meta_optimizer, theta=theta, mesh=mesh
        )
    else:
        _check_resume(state, key, theta, num_steps)
        state = state if mesh is None else _place(state, mesh)
    show = progress and sharding_lib.is_main_process()
    all_hooks = [hooks_lib.progress(num_steps, show)]
    if validate is not None:
        all_hooks.insert(0, hooks_lib.validation(validate, validate_every, num_steps))
    all_hooks += list(hooks)

    t_compile = time.perf_counter()
    step_fn = compile_meta_step(estimator, meta_optimizer, state, mesh)
    compile_seconds = time.perf_counter() - t_compile
    k_train = run_keys(key)[2]
    history: list[dict[str, Any]] = []
    start = state
    stopped = False
    try:
        for hook in all_hooks:
            state = hook.start(state) if hook.start else state
        while state.step < num_steps:
            state, record = _timed_step(step_fn, estimator, state, k_train, start, wall_start, mesh)
            for hook in all_hooks:
                state = hook.step(state, record) if hook.step else state
            history.append(record)
            if max_consecutive_skips and state.consecutive_skipped >= max_consecutive_skips:
                raise _diverged(state, max_consecutive_skips)
            if record.get("stop") and state.step < num_steps:
                stopped = True
                break
    finally:
        for hook in all_hooks:
            if hook.end:
                hook.end(state)
    return _result(estimator, start, state, history, compile_seconds, stopped)
