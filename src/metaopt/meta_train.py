"""Meta-training a learned optimizer with truncated BPTT over a family of tasks.

Each epoch samples a fresh meta-batch of tasks and trains them for ``horizon`` inner
steps, split into truncations; every truncation yields one meta-gradient and one
meta-update (Andrychowicz et al. 2016, §3). The meta-parameters kept are the best on a
fixed set of validation tasks, sampled with a key of their own.
"""

import time
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from tqdm.auto import tqdm

from metaopt import checks
from metaopt.evaluate import loss_curves
from metaopt.optax_adapter import as_optax
from metaopt.truncated_bptt import TaskBatch, init_task_batch, tbptt_gradient
from metaopt.types import LearnedOptimizer, TaskFamily, Theta, with_data


class MetaTrainState(NamedTuple):
    """Everything a meta-training run needs to continue exactly where it stopped.

    Attributes:
      key: the run's key; every meta-step's randomness is derived from it and ``step``.
      step: meta-updates attempted so far (skipped ones included).
      theta: the current meta-parameters.
      meta_state: the meta-optimizer's state.
      batch: the tasks of the current epoch, mid-training.
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
    meta_state: optax.OptState
    batch: TaskBatch
    best_theta: Theta
    best_validation_loss: float
    skipped: int
    consecutive_skipped: int
    seconds: float
    wall_seconds: float


class MetaTrainResult(NamedTuple):
    """What :func:`meta_train` returns.

    Attributes:
      theta: the meta-parameters with the best validation loss.
      last_theta: the meta-parameters after the last meta-update.
      history: one dict per meta-step run by this call (see :func:`meta_train`).
      best_validation_loss: mean final loss of ``theta`` on the validation tasks.
      seconds: wall time of the meta-updates, compilation and validation excluded.
      compile_seconds: time spent compiling the meta-step.
      function_steps_per_second: inner steps × tasks per second of ``seconds``.
      state: the state to continue from (pass it back as ``state=``).
      stopped: True if ``should_stop`` ended the run before ``num_epochs``.

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


def truncation_lengths(horizon: int, truncation: int) -> list[int]:
    """Splits ``horizon`` inner steps into truncations; a remainder gets a short last one.

    Example:
      >>> truncation_lengths(100, 20)
      [20, 20, 20, 20, 20]
      >>> truncation_lengths(50, 20)
      [20, 20, 10]

    """
    horizon = checks.positive_int("horizon", horizon)
    truncation = checks.positive_int("truncation", truncation)
    if truncation > horizon:
        raise ValueError(f"truncation ({truncation}) must not exceed horizon ({horizon})")
    lengths = [truncation] * (horizon // truncation)
    if horizon % truncation:
        lengths.append(horizon % truncation)
    return lengths


def make_meta_step(
    lopt: LearnedOptimizer,
    family: TaskFamily,
    meta_optimizer: optax.GradientTransformation,
    num_steps: int,
    *,
    weights: jax.Array | None = None,
    second_order: bool = False,
):
    """Builds ``meta_step(theta, meta_state, batch, key) -> (theta, meta_state, batch, metrics)``.

    One truncated-BPTT meta-gradient followed by one meta-optimizer update. An update
    whose meta-loss or meta-gradient is not finite is skipped (``metrics["skipped"]``
    is 1), leaving ``theta`` and the meta-optimizer state as they were. The function is
    pure and not yet jitted.
    """

    def meta_step(theta, meta_state, batch: TaskBatch, key):
        grad, batch, metrics = tbptt_gradient(
            theta,
            lopt,
            family,
            batch,
            key,
            num_steps,
            weights=weights,
            second_order=second_order,
        )
        grad_norm = optax.tree.norm(grad)
        finite = jnp.isfinite(metrics["meta_loss"]) & jnp.isfinite(grad_norm)
        safe_grad = jax.tree.map(lambda g: jnp.where(finite, g, 0.0), grad)
        updates, new_meta_state = meta_optimizer.update(safe_grad, meta_state, theta)
        new_theta = optax.apply_updates(theta, updates)
        keep = lambda new, old: jnp.where(finite, new, old)  # noqa: E731
        theta = jax.tree.map(keep, new_theta, theta)
        meta_state = jax.tree.map(keep, new_meta_state, meta_state)
        metrics = dict(metrics, grad_norm=grad_norm, skipped=(~finite).astype(jnp.int32))
        return theta, meta_state, batch, metrics

    return meta_step


def _run_keys(key: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """A run's keys: initial theta, training, validation."""
    k_theta, k_train, k_val = jax.random.split(key, 3)
    return k_theta, k_train, k_val


def _epoch_keys(k_train: jax.Array, epoch: int) -> tuple[jax.Array, jax.Array]:
    """An epoch's keys: its tasks, and its meta-steps' minibatches."""
    k_tasks, k_steps = jax.random.split(jax.random.fold_in(k_train, epoch))
    return k_tasks, k_steps


def init_meta_train_state(
    lopt: LearnedOptimizer,
    family: TaskFamily,
    key: jax.Array,
    *,
    num_tasks: int,
    meta_optimizer: optax.GradientTransformation | None = None,
    theta: Theta | None = None,
) -> MetaTrainState:
    """The state :func:`meta_train` starts a run from (before the first validation).

    Pass it as ``meta_train(..., state=...)`` with the same ``key``, ``num_tasks`` and
    ``meta_optimizer``. It is also the template that a checkpoint is read into.

    Example:
      >>> import jax
      >>> from metaopt.lstm import lstm_optimizer
      >>> from metaopt.quadratic import quadratic_family
      >>> s = init_meta_train_state(lstm_optimizer(), quadratic_family(), jax.random.key(0),
      ...     num_tasks=4)
      >>> s.step, s.batch.inner.params.shape
      (0, (4, 10))

    """
    num_tasks = checks.positive_int("num_tasks", num_tasks)
    meta_optimizer = optax.adam(1e-3) if meta_optimizer is None else meta_optimizer
    k_theta, k_train, _ = _run_keys(key)
    theta = lopt.init(k_theta) if theta is None else theta
    init_batch = jax.jit(
        lambda data, th, k: init_task_batch(with_data(family, data), lopt, th, k, num_tasks)
    )
    return MetaTrainState(
        key=key,
        step=0,
        theta=theta,
        meta_state=meta_optimizer.init(theta),
        batch=init_batch(family.data, theta, _epoch_keys(k_train, 0)[0]),
        best_theta=theta,
        best_validation_loss=float("nan"),
        skipped=0,
        consecutive_skipped=0,
        seconds=0.0,
        wall_seconds=0.0,
    )


def meta_train(
    lopt: LearnedOptimizer,
    family: TaskFamily,
    key: jax.Array,
    *,
    num_epochs: int = 200,
    num_tasks: int = 128,
    truncation: int = 20,
    horizon: int = 100,
    meta_optimizer: optax.GradientTransformation | None = None,
    second_order: bool = False,
    weights: jax.Array | None = None,
    validate_every: int = 10,
    num_validation_tasks: int = 128,
    validation_family: TaskFamily | None = None,
    theta: Theta | None = None,
    state: MetaTrainState | None = None,
    max_consecutive_skips: int | None = None,
    progress: bool = True,
    on_step: Callable[[MetaTrainState, dict[str, Any]], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> MetaTrainResult:
    """Meta-trains ``lopt`` on ``family`` with truncated BPTT.

    A run is a deterministic function of ``key`` and the arguments: the same call gives
    bit-identical meta-parameters, and a run continued from a saved ``state`` ends
    exactly where the uninterrupted run ends.

    Args:
      lopt: the learned optimizer.
      family: the task family to meta-train on.
      key: the run's randomness; split into initial ``theta``, training and
        validation keys.
      num_epochs: meta-batches of fresh tasks, each trained for ``horizon`` steps.
      num_tasks: tasks per meta-batch (vmapped).
      truncation: inner steps per meta-gradient.
      horizon: inner steps per task; a remainder after the last full truncation
        becomes a shorter truncation.
      meta_optimizer: optax transformation on ``theta``; ``optax.adam(1e-3)`` if None.
      second_order: keep second derivatives of the inner loss (the paper drops them).
      weights: ``w_t`` for ``t = 1..horizon``; ones if None.
      validate_every: validate every this many epochs (and after the last).
      num_validation_tasks: validation tasks, fixed for the whole run.
      validation_family: where validation tasks come from (for instance the
        validation split of a dataset); ``family`` if None.
      theta: initial meta-parameters; drawn with ``lopt.init`` if None.
      state: a state to continue from (``result.state`` or a restored checkpoint);
        its key must be ``key``. The other arguments must be those of the run that
        produced it.
      max_consecutive_skips: raise :class:`MetaTrainingDiverged` once this many
        meta-updates in a row were skipped as non-finite; never if None.
      progress: show a progress bar with an ETA.
      on_step: called after every meta-step with the state and that step's record.
        The state's arrays are valid only until the next meta-step (its buffers are
        donated), so copy what you keep, for instance with ``jax.device_get``.
      should_stop: polled after every meta-step; returning True ends the run early
        with ``result.stopped`` set, for instance on a signal.

    Returns:
      A :class:`MetaTrainResult`. Each ``history`` record has ``step``, ``epoch``,
      ``meta_loss``, ``loss``, ``grad_norm``, ``skipped`` (1 if this update was
      skipped), ``skipped_total``, ``seconds``, ``wall_seconds`` and
      ``function_steps_per_second``; steps that end a validated epoch also have
      ``validation_loss`` and ``best_validation_loss``.

    Raises:
      MetaTrainingDiverged: ``max_consecutive_skips`` was reached.

    Example:
      >>> import jax
      >>> from metaopt.lstm import lstm_optimizer
      >>> from metaopt.quadratic import quadratic_family
      >>> result = meta_train(lstm_optimizer(), quadratic_family(), jax.random.key(0),
      ...     num_epochs=2, num_tasks=8, truncation=5, horizon=10, progress=False)
      >>> len(result.history), result.state.step
      (4, 4)

    """
    wall_start = time.perf_counter()
    num_epochs = checks.positive_int("num_epochs", num_epochs)
    num_tasks = checks.positive_int("num_tasks", num_tasks)
    validate_every = checks.positive_int("validate_every", validate_every)
    num_validation_tasks = checks.positive_int("num_validation_tasks", num_validation_tasks)
    if max_consecutive_skips is not None:
        max_consecutive_skips = checks.positive_int("max_consecutive_skips", max_consecutive_skips)
    lengths = truncation_lengths(horizon, truncation)
    if weights is not None:
        weights = jnp.asarray(weights)
        if weights.shape != (horizon,):
            raise ValueError(
                f"weights must have shape (horizon,) = ({horizon},), got {weights.shape}"
            )
    meta_optimizer = optax.adam(1e-3) if meta_optimizer is None else meta_optimizer
    if state is not None:
        if theta is not None:
            raise ValueError("give theta or state, not both")
        if not np.array_equal(jax.random.key_data(key), jax.random.key_data(state.key)):
            raise ValueError("key must be the key of the run that produced state")
        if state.step > num_epochs * len(lengths):
            raise ValueError(
                f"state is at meta-step {state.step}, past the {num_epochs * len(lengths)} "
                f"meta-steps of num_epochs={num_epochs}"
            )

    _, k_train, k_val = _run_keys(key)
    val_family = family if validation_family is None else validation_family
    # Datasets enter every compiled function as an argument (family.data), never as a
    # constant baked into the program.
    init_batch = jax.jit(
        lambda data, th, k: init_task_batch(with_data(family, data), lopt, th, k, num_tasks)
    )
    val_loss = jax.jit(
        lambda data, th: jnp.mean(
            loss_curves(
                with_data(val_family, data),
                as_optax(lopt, th),
                k_val,
                num_validation_tasks,
                horizon,
            )[:, -1]
        )
    )

    def validate(th) -> float:
        value = float(val_loss(val_family.data, th))
        return value if np.isfinite(value) else float("inf")

    if state is None:
        state = init_meta_train_state(
            lopt, family, key, num_tasks=num_tasks, meta_optimizer=meta_optimizer, theta=theta
        )

    def jitted_step(n):
        def step(data, *args):
            fam = with_data(family, data)
            return make_meta_step(
                lopt, fam, meta_optimizer, n, weights=weights, second_order=second_order
            )(*args)

        return jax.jit(step, donate_argnums=(2, 3))

    t_compile = time.perf_counter()
    init_batch = init_batch.lower(family.data, state.theta, k_train).compile()
    steps = {
        n: jitted_step(n)
        .lower(family.data, state.theta, state.meta_state, state.batch, k_train)
        .compile()
        for n in sorted(set(lengths))
    }
    compile_seconds = time.perf_counter() - t_compile

    if state.step == 0 and np.isnan(state.best_validation_loss):
        state = state._replace(best_validation_loss=validate(state.theta))

    total_steps = num_epochs * len(lengths)
    history: list[dict[str, Any]] = []
    start_step, start_seconds, start_wall = state.step, state.seconds, state.wall_seconds
    bar = tqdm(
        total=total_steps,
        initial=start_step,
        disable=not progress,
        desc="meta-train",
        unit="meta-step",
        dynamic_ncols=True,
    )
    stopped = False
    function_steps = 0
    try:
        while state.step < total_steps:
            epoch, i = divmod(state.step, len(lengths))
            k_tasks, k_steps = _epoch_keys(k_train, epoch)
            n = lengths[i]
            t0 = time.perf_counter()
            batch = init_batch(family.data, state.theta, k_tasks) if i == 0 else state.batch
            theta, meta_state, batch, metrics = steps[n](
                family.data, state.theta, state.meta_state, batch, jax.random.fold_in(k_steps, i)
            )
            metrics = jax.device_get(metrics)
            seconds = state.seconds + time.perf_counter() - t0
            function_steps += n * num_tasks
            skipped = int(metrics["skipped"])
            state = state._replace(
                step=state.step + 1,
                theta=theta,
                meta_state=meta_state,
                batch=batch,
                skipped=state.skipped + skipped,
                consecutive_skipped=(state.consecutive_skipped + 1) * skipped,
                seconds=seconds,
            )
            record = {
                "step": state.step,
                "epoch": epoch + 1,
                "meta_loss": float(metrics["meta_loss"]),
                "loss": float(metrics["loss"]),
                "grad_norm": float(metrics["grad_norm"]),
                "skipped": skipped,
                "skipped_total": state.skipped,
            }
            last_of_epoch = i == len(lengths) - 1
            if last_of_epoch and ((epoch + 1) % validate_every == 0 or epoch + 1 == num_epochs):
                value = validate(state.theta)
                if value < state.best_validation_loss:
                    state = state._replace(best_theta=state.theta, best_validation_loss=value)
                record["validation_loss"] = value
                record["best_validation_loss"] = state.best_validation_loss
            wall = start_wall + time.perf_counter() - wall_start
            state = state._replace(wall_seconds=wall)
            record |= {
                "seconds": state.seconds,
                "wall_seconds": wall,
                "function_steps_per_second": function_steps / (state.seconds - start_seconds),
            }
            history.append(record)
            bar.update(1)
            bar.set_postfix(
                loss=f"{record['loss']:.3g}",
                best=f"{state.best_validation_loss:.3g}",
                skipped=state.skipped,
                refresh=False,
            )
            if on_step is not None:
                on_step(state, record)
            if (
                max_consecutive_skips is not None
                and state.consecutive_skipped >= max_consecutive_skips
            ):
                raise MetaTrainingDiverged(
                    f"{state.consecutive_skipped} consecutive meta-updates were skipped "
                    f"because the meta-loss or meta-gradient was not finite (meta-steps "
                    f"{state.step - state.consecutive_skipped + 1}..{state.step}); stopping "
                    f"(max_consecutive_skips={max_consecutive_skips}). The meta-parameters "
                    "are those of the last finite update."
                )
            if should_stop is not None and state.step < total_steps and should_stop():
                stopped = True
                break
    finally:
        bar.close()
    ran = state.seconds - start_seconds
    return MetaTrainResult(
        theta=state.best_theta,
        last_theta=state.theta,
        history=history,
        best_validation_loss=state.best_validation_loss,
        seconds=ran,
        compile_seconds=compile_seconds,
        function_steps_per_second=function_steps / ran if ran > 0 else 0.0,
        state=state,
        stopped=stopped,
    )
