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


class MetaTrainResult(NamedTuple):
    """What :func:`meta_train` returns.

    Attributes:
      theta: the meta-parameters with the best validation loss.
      last_theta: the meta-parameters after the last meta-update.
      history: one dict per epoch: ``epoch``, ``meta_loss``, ``loss``, ``grad_norm``,
        ``skipped`` (non-finite meta-updates skipped) and, where validated,
        ``validation_loss``.
      best_validation_loss: mean final loss of ``theta`` on the validation tasks.
      seconds: wall time of the meta-updates, compilation and validation excluded.
      compile_seconds: time spent compiling the meta-step.
      function_steps_per_second: inner steps × tasks per second of ``seconds``.

    """

    theta: Theta
    last_theta: Theta
    history: list[dict[str, Any]]
    best_validation_loss: float
    seconds: float
    compile_seconds: float
    function_steps_per_second: float


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
    progress: bool = True,
    on_epoch: Callable[[dict[str, Any]], None] | None = None,
) -> MetaTrainResult:
    """Meta-trains ``lopt`` on ``family`` with truncated BPTT.

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
      progress: show a progress bar.
      on_epoch: called with each epoch's metrics as they are recorded (the dict
        that is also appended to ``history``, plus ``seconds`` and
        ``function_steps_per_second`` so far).

    Returns:
      A :class:`MetaTrainResult`.

    Example:
      >>> import jax
      >>> from metaopt.lstm import lstm_optimizer
      >>> from metaopt.quadratic import quadratic_family
      >>> result = meta_train(lstm_optimizer(), quadratic_family(), jax.random.key(0),
      ...     num_epochs=2, num_tasks=8, truncation=5, horizon=10, progress=False)
      >>> len(result.history)
      2

    """
    num_epochs = checks.positive_int("num_epochs", num_epochs)
    num_tasks = checks.positive_int("num_tasks", num_tasks)
    validate_every = checks.positive_int("validate_every", validate_every)
    num_validation_tasks = checks.positive_int("num_validation_tasks", num_validation_tasks)
    lengths = truncation_lengths(horizon, truncation)
    if weights is not None:
        weights = jnp.asarray(weights)
        if weights.shape != (horizon,):
            raise ValueError(
                f"weights must have shape (horizon,) = ({horizon},), got {weights.shape}"
            )
    meta_optimizer = optax.adam(1e-3) if meta_optimizer is None else meta_optimizer

    k_theta, k_train, k_val = jax.random.split(key, 3)
    if theta is None:
        theta = lopt.init(k_theta)
    meta_state = meta_optimizer.init(theta)

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

    def jitted_step(n):
        def step(data, *args):
            fam = with_data(family, data)
            return make_meta_step(
                lopt, fam, meta_optimizer, n, weights=weights, second_order=second_order
            )(*args)

        return jax.jit(step, donate_argnums=(2, 3))

    t_compile = time.perf_counter()
    batch0 = init_batch(family.data, theta, k_train)
    steps = {
        n: jitted_step(n).lower(family.data, theta, meta_state, batch0, k_train).compile()
        for n in sorted(set(lengths))
    }
    compile_seconds = time.perf_counter() - t_compile

    def validate(th) -> float:
        value = float(val_loss(val_family.data, th))
        return value if np.isfinite(value) else float("inf")

    best_theta, best_val = theta, validate(theta)
    history: list[dict[str, Any]] = []
    seconds = 0.0
    bar = tqdm(
        total=num_epochs * len(lengths),
        disable=not progress,
        desc="meta-train",
        unit="meta-step",
        dynamic_ncols=True,
    )
    for epoch in range(num_epochs):
        k_epoch = jax.random.fold_in(k_train, epoch)
        k_tasks, k_steps = jax.random.split(k_epoch)
        t0 = time.perf_counter()
        batch = init_batch(family.data, theta, k_tasks)
        epoch_metrics = []
        for i, n in enumerate(lengths):
            theta, meta_state, batch, metrics = steps[n](
                family.data, theta, meta_state, batch, jax.random.fold_in(k_steps, i)
            )
            epoch_metrics.append(metrics)
            bar.update(1)
        epoch_metrics = jax.device_get(epoch_metrics)
        seconds += time.perf_counter() - t0
        record = {
            "epoch": epoch + 1,
            "meta_loss": float(np.mean([m["meta_loss"] for m in epoch_metrics])),
            "loss": float(np.mean([m["loss"] for m in epoch_metrics])),
            "grad_norm": float(np.mean([m["grad_norm"] for m in epoch_metrics])),
            "skipped": int(np.sum([m["skipped"] for m in epoch_metrics])),
        }
        if (epoch + 1) % validate_every == 0 or epoch + 1 == num_epochs:
            record["validation_loss"] = validate(theta)
            if record["validation_loss"] < best_val:
                best_theta, best_val = theta, record["validation_loss"]
            bar.set_postfix(
                loss=f"{record['loss']:.3g}",
                val=f"{record['validation_loss']:.3g}",
                best=f"{best_val:.3g}",
            )
        history.append(record)
        if on_epoch is not None:
            done = (epoch + 1) * horizon * num_tasks
            on_epoch(record | {"seconds": seconds, "function_steps_per_second": done / seconds})
    bar.close()
    function_steps = num_epochs * horizon * num_tasks
    return MetaTrainResult(
        theta=best_theta,
        last_theta=theta,
        history=history,
        best_validation_loss=best_val,
        seconds=seconds,
        compile_seconds=compile_seconds,
        function_steps_per_second=function_steps / seconds,
    )
