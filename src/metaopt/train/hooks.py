"""What the meta-training loop calls around its steps: validation, progress, callbacks, stop.

A hook is three optional functions. ``start(state) -> state`` runs once before the
first meta-step, ``step(state, record) -> state`` after every meta-step (it may add
keys to ``record``, e.g. ``validation_loss``, and set ``record["stop"] = True`` to end
the run), and ``end(state)`` once when the loop exits, however it exits. Hooks run in
the order given, so a hook that writes the record comes after the ones that fill it.
"""

from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np
from tqdm.auto import tqdm

from metaopt.core import checks
from metaopt.core.types import Theta


class Hook(NamedTuple):
    """Functions the loop calls; any may be None."""

    start: Callable[[Any], Any] | None = None
    step: Callable[[Any, dict[str, Any]], Any] | None = None
    end: Callable[[Any], None] | None = None


def validation(validate: Callable[[Theta], float], every: int, num_steps: int) -> Hook:
    """Validates θ before training, every ``every`` meta-steps and after the last; keeps the best.

    ``validate(theta)`` returns a loss (lower is better; non-finite counts as +inf).
    The best θ and its loss live in the state (``best_theta``,
    ``best_validation_loss``), so a checkpoint keeps them.

    Example:
      >>> hook = validation(lambda th: 1.0, every=10, num_steps=100)
      >>> hook.step is not None
      True
    """
    every = checks.positive_int("validate_every", every)

    def value_of(theta) -> float:
        value = float(validate(theta))
        return value if np.isfinite(value) else float("inf")

    def start(state):
        if state.step == 0 and np.isnan(state.best_validation_loss):
            state = state._replace(best_validation_loss=value_of(state.theta))
        return state

    def step(state, record):
        if state.step % every == 0 or state.step == num_steps:
            value = value_of(state.theta)
            if not value >= state.best_validation_loss:
                state = state._replace(best_theta=state.theta, best_validation_loss=value)
            record["validation_loss"] = value
            record["best_validation_loss"] = state.best_validation_loss
        return state

    return Hook(start=start, step=step)


def progress(total: int, enabled: bool = True) -> Hook:
    """A tqdm progress bar with an ETA, the loss, the best validation loss and skips.

    Example:
      >>> progress(10, enabled=False).end is not None
      True
    """
    bar: list[tqdm] = []

    def start(state):
        bar.append(
            tqdm(
                total=total,
                initial=state.step,
                disable=not enabled,
                desc="meta-train",
                unit="meta-step",
                dynamic_ncols=True,
            )
        )
        return state

    def step(state, record):
        bar[-1].update(1)
        bar[-1].set_postfix(
            loss=f"{record['loss']:.3g}",
            best=f"{state.best_validation_loss:.3g}",
            skipped=state.skipped,
            refresh=False,
        )
        return state

    def end(state):
        del state
        if bar:
            bar.pop().close()

    return Hook(start=start, step=step, end=end)


def callback(fn: Callable[[Any, dict[str, Any]], None]) -> Hook:
    """Calls ``fn(state, record)`` after every meta-step (metrics files, checkpoints).

    The state's arrays are valid only until the next meta-step (their buffers are
    donated), so copy what you keep, for instance with ``jax.device_get``.

    Example:
      >>> seen = []
      >>> hook = callback(lambda s, r: seen.append(r["step"]))
      >>> _ = hook.step(None, {"step": 3}); seen
      [3]
    """

    def step(state, record):
        fn(state, record)
        return state

    return Hook(step=step)


def stop_when(should_stop: Callable[[], bool]) -> Hook:
    """Ends the run after the current meta-step once ``should_stop()`` is True (signals).

    Example:
      >>> record = {}
      >>> _ = stop_when(lambda: True).step(None, record); record
      {'stop': True}
    """

    def step(state, record):
        if should_stop():
            record["stop"] = True
        return state

    return Hook(step=step)
