"""Training problems scored by held-out loss, and the baselines they are scored against.

A :class:`ScoredProblem` is a model, its minibatch training loss, a training loss to
report and a held-out (validation or test) loss that is the score. Model state that is
not trained by the optimizer (batch-norm running averages) rides beside the params.
:func:`run_curves` trains one problem with any optax transformation (a learned optimizer
through :func:`metaopt.as_optax`, or a baseline) as one ``lax.scan`` and records both
losses at evenly spaced steps; the score of a run is its last held-out loss, reported
with the best held-out loss along the run and the last training loss.

Baselines (:func:`baselines`): Adam at 1e-3; AdamW at a constant rate tuned on a seed
kept for tuning; AdamW with linear warmup and cosine decay at a tuned peak (where a
problem asks for it, as transformers are trained); Muon (``optax.contrib.muon``, Jordan
et al. 2024) at a tuned rate where a problem has weight matrices, its Adam part at the
tuned AdamW rate.
"""

import math
from collections.abc import Callable, Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from metaopt.core import checks
from metaopt.core.types import Params, PyTree

ADAMW_GRID = (3e-4, 1e-3, 3e-3, 1e-2, 3e-2)
COSINE_GRID = (1e-3, 3e-3, 1e-2, 3e-2)
MUON_GRID = (1e-2, 3e-2, 1e-1)
WARMUP_FRACTION = 0.05
TUNING_SEED = 0


class ScoredProblem(NamedTuple):
    """One training problem, scored by held-out loss.

    Attributes:
      name: identifier.
      description: one line for reports.
      init: ``init(key) -> (params, state)``; ``state`` is what the model keeps beside
        its trained params (batch-norm averages), ``()`` if nothing.
      loss: ``loss(params, state, key) -> (loss, state)`` on a minibatch from ``key``.
      train_loss: ``train_loss(params, state) -> scalar`` on (a fixed part of) the
        training data: reported, not scored.
      heldout_loss: ``heldout_loss(params, state) -> scalar`` on validation or test
        data: the score.
      steps: training steps.
      pair: ``(architecture, dataset)``, so suites can be checked to share none.
      schedule: whether warmup-cosine AdamW is a baseline here.
      muon: whether Muon is a baseline here (the problem has weight matrices).
      rates: the grid AdamW's constant rate is tuned on.
    """

    name: str
    description: str
    init: Callable[[jax.Array], tuple[Params, PyTree]]
    loss: Callable[[Params, PyTree, jax.Array], tuple[jax.Array, PyTree]]
    train_loss: Callable[[Params, PyTree], jax.Array]
    heldout_loss: Callable[[Params, PyTree], jax.Array]
    steps: int
    pair: tuple[str, str] = ("", "")
    schedule: bool = False
    muon: bool = True
    rates: tuple[float, ...] = ADAMW_GRID


class Curves(NamedTuple):
    """Losses after each of ``points`` equal chunks of training (the last after the end)."""

    train: jax.Array
    heldout: jax.Array


def stateless(
    loss: Callable[[Params, jax.Array], jax.Array],
) -> Callable[[Params, PyTree, jax.Array], tuple[jax.Array, PyTree]]:
    """Lifts ``loss(params, key)`` to the ``(params, state, key) -> (loss, state)`` form.

    Example:
      >>> import jax.numpy as jnp
      >>> stateless(lambda p, k: jnp.sum(p**2))(jnp.ones(2), (), None)
      (Array(2., dtype=float32), ())
    """
    return lambda params, state, key: (loss(params, key), state)


def run_curves(
    problem: ScoredProblem, tx: optax.GradientTransformation, key: jax.Array, *, points: int = 20
) -> Curves:
    """Trains ``problem`` with ``tx`` from ``key``; training and held-out losses along the run.

    One ``lax.scan`` of ``points`` chunks; the remainder of ``steps / points`` runs
    first. The loss value is passed to ``tx`` as ``value`` (optax's extra argument).

    Example:
      >>> import jax, jax.numpy as jnp, optax
      >>> prob = ScoredProblem("q", "a quadratic", lambda k: (jnp.ones(3), ()),
      ...     stateless(lambda p, k: jnp.sum(p**2)), lambda p, s: jnp.sum(p**2),
      ...     lambda p, s: jnp.sum((p - 0.1) ** 2), steps=100)
      >>> curves = run_curves(prob, optax.sgd(0.1), jax.random.key(0), points=4)
      >>> curves.heldout.shape, bool(curves.train[-1] < 1e-6)
      ((4,), True)
    """
    key = checks.prng_key("key", key)
    points = min(checks.positive_int("points", points), problem.steps)
    tx = optax.with_extra_args_support(tx)
    k_init, k_run = jax.random.split(key)
    params, state = problem.init(k_init)

    def step(carry, k):
        params, state, opt_state = carry
        (value, state), grads = jax.value_and_grad(problem.loss, has_aux=True)(params, state, k)
        updates, opt_state = tx.update(grads, opt_state, params, value=value)
        return (optax.apply_updates(params, updates), state, opt_state), None

    per_chunk, rest = divmod(problem.steps, points)
    carry = (params, state, tx.init(params))
    carry, _ = jax.lax.scan(step, carry, jax.random.split(jax.random.fold_in(k_run, 1), rest))

    def chunk(carry, k):
        carry, _ = jax.lax.scan(step, carry, jax.random.split(k, per_chunk))
        params, state, _ = carry
        return carry, (problem.train_loss(params, state), problem.heldout_loss(params, state))

    _, (train, heldout) = jax.lax.scan(chunk, carry, jax.random.split(k_run, points))
    return Curves(train, heldout)


class Baseline(NamedTuple):
    """A baseline: ``make(rate) -> transformation`` and the grid its rate is tuned on.

    ``grid`` is one rate for a baseline that is not tuned. ``after`` names a baseline
    whose tuned rate ``make`` also receives (Muon's Adam part takes AdamW's).
    """

    make: Callable[..., optax.GradientTransformation]
    grid: tuple[float, ...]
    after: str | None = None


def baselines(problem: ScoredProblem) -> dict[str, Baseline]:
    """The baselines that apply to ``problem``, in the order they are tuned.

    Example:
      >>> import jax.numpy as jnp
      >>> prob = ScoredProblem("q", "", None, None, None, None, steps=100, muon=False)
      >>> list(baselines(prob))
      ['adam_1e-3', 'adamw_tuned']
    """
    out = {
        "adam_1e-3": Baseline(lambda lr: optax.adam(lr), (1e-3,)),
        "adamw_tuned": Baseline(lambda lr: optax.adamw(lr), problem.rates),
    }
    if problem.schedule:
        steps = problem.steps
        warmup = max(1, int(WARMUP_FRACTION * steps))

        def cosine(peak):
            return optax.adamw(lambda count: peak * warmup_cosine(count, warmup, steps))

        out["adamw_cosine_tuned"] = Baseline(cosine, COSINE_GRID)
    if problem.muon:
        out["muon_tuned"] = Baseline(
            lambda lr, adam_lr: optax.contrib.muon(lr, adam_learning_rate=adam_lr),
            MUON_GRID,
            after="adamw_tuned",
        )
    return out


def warmup_cosine(count: jax.Array, warmup: int, steps: int) -> jax.Array:
    """A rate multiplier: linear from 0 to 1 over ``warmup`` steps, then cosine to 0 at ``steps``.

    Example:
      >>> [round(float(warmup_cosine(t, 10, 110)), 3) for t in (0, 5, 10, 60, 110)]
      [0.0, 0.5, 1.0, 0.5, 0.0]
    """
    count = jnp.asarray(count, jnp.float32)
    decay = jnp.clip((count - warmup) / max(steps - warmup, 1), 0.0, 1.0)
    return jnp.where(count < warmup, count / warmup, 0.5 * (1 + jnp.cos(jnp.pi * decay)))


def tune_rate(
    problem: ScoredProblem,
    make: Callable[[jax.Array], optax.GradientTransformation],
    grid: Sequence[float],
    *,
    seed: int = TUNING_SEED,
    points: int = 20,
) -> tuple[float, dict[float, float]]:
    """The rate of ``grid`` with the lowest final held-out loss from ``seed``, and each one's.

    Every rate runs in one compiled program (the rate is traced); a run that is not
    finite scores ``inf``.

    Example:
      >>> import jax.numpy as jnp, optax
      >>> prob = ScoredProblem("q", "", lambda k: (jnp.ones(3), ()),
      ...     stateless(lambda p, k: jnp.sum(p**2)), lambda p, s: jnp.sum(p**2),
      ...     lambda p, s: jnp.sum(p**2), steps=20)
      >>> tune_rate(prob, optax.sgd, [0.01, 0.1, 2.0])[0]
      0.1
    """
    run = runner(problem, make, points)
    finals = {float(r): float(run((r,), seed).heldout[-1]) for r in check_grid(grid)}
    return best_rate(finals), finals


def runner(
    problem: ScoredProblem, make: Callable[..., optax.GradientTransformation], points: int
) -> Callable[[tuple, int], Curves]:
    """``run(args, seed) -> Curves`` of ``make(*args)`` on ``problem``, compiled once."""
    run = jax.jit(lambda a, k: run_curves(problem, make(*a), k, points=points))
    return lambda args, seed: jax.device_get(
        run(tuple(jnp.float32(a) for a in args), jax.random.key(seed))
    )


def check_grid(grid: Sequence[float]) -> tuple[float, ...]:
    """``grid`` as floats, or a ValueError naming it if it is empty or not positive."""
    if not grid or not all(r > 0 and math.isfinite(r) for r in grid):
        raise ValueError(f"grid must be a non-empty sequence of positive rates, got {grid!r}")
    return tuple(float(r) for r in grid)


def best_rate(finals: dict[float, float]) -> float:
    """The rate with the lowest final loss; a non-finite loss never wins.

    Example:
      >>> best_rate({0.1: 2.0, 0.3: float("nan"), 1.0: 1.5})
      1.0
    """
    return min(finals, key=lambda r: finals[r] if math.isfinite(finals[r]) else math.inf)


def summarize_runs(curves: Sequence[Curves]) -> dict:
    """Per-seed and mean final held-out, best held-out and final training losses.

    Example:
      >>> import jax.numpy as jnp
      >>> s = summarize_runs([Curves(jnp.array([2.0, 1.0]), jnp.array([1.5, 2.5]))])
      >>> s["heldout_final"], s["heldout_best"], s["train_final"]
      (2.5, 1.5, 1.0)
    """
    train = np.asarray([np.asarray(c.train, np.float64) for c in curves])
    heldout = np.asarray([np.asarray(c.heldout, np.float64) for c in curves])
    return {
        "heldout_final": float(heldout[:, -1].mean()),
        "heldout_best": float(heldout.min(axis=1).mean()),
        "train_final": float(train[:, -1].mean()),
        "heldout_finals": heldout[:, -1].tolist(),
        "finite": bool(np.isfinite(train).all() and np.isfinite(heldout).all()),
        "heldout_curve": heldout.mean(axis=0).tolist(),
        "train_curve": train.mean(axis=0).tolist(),
    }
