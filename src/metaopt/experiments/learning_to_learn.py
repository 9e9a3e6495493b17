"""The paper's quadratic experiment end to end (Andrychowicz et al. 2016, §3.1, Fig. 2).

Meta-train the 2×20 coordinate-wise LSTM on 128 random 10-dimensional quadratics per
meta-batch (100 steps, truncations of 20), then compare it on held-out quadratics with
SGD, NAG, RMSprop and Adam, each with a tuned learning rate.
"""

import os
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jax
import optax

from metaopt.core import checks
from metaopt.core.files import prepare_dir, write_json
from metaopt.core.optax_adapter import as_optax
from metaopt.estimators.tbptt import tbptt
from metaopt.evaluation.evaluate import validation_loss
from metaopt.evaluation.machine import machine
from metaopt.evaluation.report import (
    EVAL_TASKS,
    TUNE_TASKS,
    compare_optimizers,
    comparison_keys,
    format_table,
    plot_curves,
)
from metaopt.io.serialization import save
from metaopt.learners.learned_optimizer import learned_optimizer
from metaopt.optimizers.lstm import lstm_optimizer
from metaopt.tasks import datasets
from metaopt.tasks.quadratic import quadratic_family
from metaopt.train.loop import run_keys
from metaopt.train.plots import read_metrics
from metaopt.train.run import MetaTrainRun, checkpointed_meta_train, require_completed


def _record(
    experiment: str, config: dict, run: MetaTrainRun, out: Path, **sections: Any
) -> dict[str, Any]:
    """The common shape of a demo's results.json."""
    state = run.state
    function_steps = state.step * config["num_tasks"] * config["truncation"]
    return {
        "experiment": experiment,
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "config": config,
        **sections,
        "meta_train": {
            "seconds": state.seconds,
            "compile_seconds": run.compile_seconds,
            "function_steps_per_second": function_steps / state.seconds,
            "best_validation_loss": state.best_validation_loss,
            "skipped": state.skipped,
            "history": read_metrics(out),
        },
    }


def _meta_train(
    out: Path,
    lopt,
    family,
    val_family,
    key,
    config: dict,
    resume: bool,
    *,
    epochs: int,
    num_tasks: int,
    truncation: int,
    horizon: int,
    validate_every: int,
    num_validation_tasks: int,
    **kwargs,
) -> MetaTrainRun:
    """Truncated-BPTT meta-training with checkpoints in ``out``.

    An epoch is ``ceil(horizon / truncation)`` meta-steps; validation runs every
    ``validate_every`` epochs. Raises if the run was stopped or diverged.
    """
    learner = learned_optimizer(lopt)
    estimator = tbptt(learner, family, num_tasks=num_tasks, truncation=truncation, horizon=horizon)
    per_epoch = -(-horizon // truncation)
    validate = validation_loss(
        learner, val_family, run_keys(key)[3], num_tasks=num_validation_tasks, num_steps=horizon
    )
    run = checkpointed_meta_train(
        out,
        estimator,
        key,
        num_steps=epochs * per_epoch,
        config=config,
        resume=resume,
        checkpoint_every=50,
        validate=validate,
        validate_every=validate_every * per_epoch,
        **kwargs,
    )
    return require_completed(run)


def quadratic_demo(
    out: str | os.PathLike,
    *,
    seed: int = 0,
    epochs: int = 100,
    num_tasks: int = 128,
    truncation: int = 20,
    horizon: int = 100,
    meta_learning_rate: float = 3e-3,
    num_eval_tasks: int = EVAL_TASKS,
    num_tune_tasks: int = TUNE_TASKS,
    progress: bool = True,
    resume: bool = False,
) -> dict[str, Any]:
    """Runs the quadratic experiment; writes results.json, curves.png, optimizer.mopt.

    Meta-training draws its tasks from one key of ``seed``; baseline tuning and
    evaluation draw theirs from two others, those of ``metaopt eval --seed``
    (:func:`~metaopt.evaluation.report.comparison_keys`), so the held-out quadratics
    are never seen before evaluation and the saved optimizer scores the same in both.
    Meta-training checkpoints into ``out/checkpoints`` and logs ``out/metrics.jsonl``;
    SIGINT or SIGTERM stops it with a checkpoint (:class:`~metaopt.train.run.RunStopped`),
    and ``resume=True`` continues it.

    Returns:
      The dictionary written to ``results.json``.

    Example:
      >>> import tempfile
      >>> res = quadratic_demo(tempfile.mkdtemp(), epochs=1, num_tasks=4, truncation=5,
      ...     horizon=10, num_eval_tasks=4, num_tune_tasks=4, progress=False)
      >>> sorted(res["optimizers"])
      ['adam', 'lstm', 'nag', 'rmsprop', 'sgd']

    """
    out = prepare_dir(out, "out")
    seed = int(seed)
    meta_learning_rate = checks.positive_float("meta_learning_rate", meta_learning_rate)
    wall = time.perf_counter()
    family = quadratic_family(dim=10)
    lopt = lstm_optimizer(hidden_size=20, num_layers=2, output_scale=0.1)
    # XLA compiles the "rbg" generator several times faster than threefry on CPU, and
    # compilation, not running, dominates meta-training this short.
    k_train = jax.random.split(jax.random.key(seed, impl="rbg"), 3)[0]
    k_tune, k_eval = comparison_keys(seed)  # the tasks metaopt eval --seed draws

    config = {
        "seed": seed,
        "dim": 10,
        "lstm": lopt.config,
        "epochs": epochs,
        "num_tasks": num_tasks,
        "truncation": truncation,
        "horizon": horizon,
        "meta_optimizer": f"adam(cosine_decay({meta_learning_rate}))",
        "num_eval_tasks": num_eval_tasks,
        "num_tune_tasks": num_tune_tasks,
    }
    run = _meta_train(
        out,
        lopt,
        family,
        family,
        k_train,
        {k: v for k, v in config.items() if k not in ("num_eval_tasks", "num_tune_tasks")},
        resume,
        epochs=epochs,
        num_tasks=num_tasks,
        truncation=truncation,
        horizon=horizon,
        # Cosine decay: the meta-loss is noisy, and a fixed rate this high spikes late on.
        meta_optimizer=optax.adam(
            optax.cosine_decay_schedule(meta_learning_rate, epochs * -(-horizon // truncation))
        ),
        validate_every=10,
        num_validation_tasks=256,
        progress=progress,
    )
    theta = run.state.best_theta
    optimizers = compare_optimizers(
        {"lstm": as_optax(lopt, theta)},
        family,
        k_tune,
        k_eval,
        num_eval_tasks=num_eval_tasks,
        num_tune_tasks=num_tune_tasks,
        num_steps=horizon,
    )
    results = _record("quadratic", config, run, out, optimizers=optimizers)
    save(out / "optimizer.mopt", lopt, theta)
    plot_curves(out / "curves.png", optimizers, "10-d quadratics, held-out tasks")
    results["wall_seconds"] = time.perf_counter() - wall
    write_json(out / "results.json", results)
    return results


def summary(results: dict[str, Any]) -> str:
    """Returns the demo's closing printout: tables and meta-training figures."""
    mt = results["meta_train"]
    general = [
        f"\ngeneralization: {name}\n{format_table(entry['optimizers'])}"
        for name, entry in results.get("generalization", {}).items()
    ]
    return "\n".join(
        [
            format_table(results["optimizers"]),
            *general,
            "",
            f"meta-training: {mt['seconds']:.1f} s steady state "
            f"({mt['function_steps_per_second']:,.0f} function-steps/s), "
            f"compile {mt['compile_seconds']:.1f} s; wall {results['wall_seconds']:.1f} s",
        ]
    )


GENERALIZATION = {
    "steps_200": {"hidden_sizes": (20,), "activation": "sigmoid", "steps": 200},
    "hidden_40": {"hidden_sizes": (40,), "activation": "sigmoid", "steps": 100},
    "layers_2": {"hidden_sizes": (20, 20), "activation": "sigmoid", "steps": 100},
    "relu": {"hidden_sizes": (20,), "activation": "relu", "steps": 100},
}


def _dataset_loader(
    data: str | datasets.Dataset, data_dir: str | os.PathLike | None
) -> tuple[str, Callable[[], datasets.Dataset]]:
    """``(name, load)`` for :func:`mlp_demo`'s ``data``; raises on an unknown name."""
    loaders = {
        "digits": lambda: datasets.digits(),
        "mnist": lambda: datasets.mnist(data_dir),
        "fashion_mnist": lambda: datasets.fashion_mnist(data_dir),
    }
    if isinstance(data, datasets.Dataset):
        own = data
        return own.name, lambda: own
    if isinstance(data, str) and data in loaders:
        return data, loaders[data]
    raise ValueError(f"data must be a Dataset or one of {sorted(loaders)}, got {data!r}")


def _generalization_names(generalization: bool | Sequence[str]) -> tuple[str, ...]:
    """The settings of ``GENERALIZATION`` that :func:`mlp_demo` runs; raises on unknown names."""
    if isinstance(generalization, bool):
        return tuple(GENERALIZATION) if generalization else ()
    unknown = sorted(set(generalization) - set(GENERALIZATION))
    if unknown:
        raise ValueError(f"generalization names {unknown}; expected some of {list(GENERALIZATION)}")
    return tuple(generalization)


def _comparison(
    tx: optax.GradientTransformation,
    family: Callable[..., Any],
    num_eval_tasks: int,
    num_tune_tasks: int,
) -> Callable[..., dict]:
    """``compare(k_tune, k_eval, steps, **arch)``: the learned ``tx`` against tuned baselines.

    Evaluation is on ``family("test", **arch)``; the baselines' learning rates are
    tuned on ``family("val", **arch)`` over 16 rates from 1e-4 to 10.
    """
    from metaopt.evaluation.evaluate import log_grid

    grid = log_grid(1e-4, 10.0, 16)

    def compare(k_tune, k_eval, steps, **arch):
        return compare_optimizers(
            {"lstm": tx},
            family("test", **arch),
            k_tune,
            k_eval,
            num_eval_tasks=num_eval_tasks,
            num_tune_tasks=num_tune_tasks,
            num_steps=steps,
            learning_rates=grid,
            tune_family=family("val", **arch),
        )

    return compare


def _generalize(
    compare: Callable[..., dict], names: Sequence[str], keys: jax.Array, out: Path, data: str
) -> dict[str, Any]:
    """Runs ``compare(k_tune, k_eval, steps, **arch)`` on the named generalization settings.

    Setting ``i`` of ``GENERALIZATION`` uses keys ``2i`` and ``2i + 1``, whichever
    others run, and plots its curves to ``out/curves_<name>.png``.
    """
    general = {}
    for i, (name, setting) in enumerate(GENERALIZATION.items()):
        if name in names:
            arch = {k: v for k, v in setting.items() if k != "steps"}
            optimizers = compare(keys[2 * i], keys[2 * i + 1], setting["steps"], **arch)
            general[name] = {"setting": setting, "optimizers": optimizers}
            plot_curves(out / f"curves_{name}.png", optimizers, f"generalization {name} on {data}")
    return general


def mlp_demo(
    out: str | os.PathLike,
    *,
    data: str | datasets.Dataset = "digits",
    data_dir: str | os.PathLike | None = None,
    seed: int = 0,
    epochs: int = 20,
    num_tasks: int = 16,
    truncation: int = 20,
    horizon: int = 100,
    meta_learning_rate: float = 3e-3,
    num_eval_tasks: int = 64,
    num_tune_tasks: int = 32,
    generalization: bool | Sequence[str] = True,
    progress: bool = True,
    resume: bool = False,
) -> dict[str, Any]:
    """The paper's MNIST experiment (§3.2, Figs. 3-4), on the digits by default.

    Meta-trains the LSTM (2×20, LogAndSign p=10, output scale 0.1) on MLP(20,
    sigmoid) classifiers over the training split for 100 steps, then evaluates it
    and the four tuned baselines on the test split (baselines tuned on the validation
    split). Generalization runs the same optimizer, untouched, at 200 steps, with 40
    hidden units, with 2 hidden layers and with ReLU (``generalization``: True for all,
    False for none, or some names of ``GENERALIZATION``; each setting has keys of its
    own, so its results do not depend on which others run). Meta-training checkpoints
    and resumes as in :func:`quadratic_demo`.

    ``data`` names a built-in dataset (``"digits"``, ``"mnist"``, ``"fashion_mnist"``,
    the last two read from ``data_dir`` or the cache) or is a
    :class:`~metaopt.tasks.datasets.Dataset` of your own, e.g. from
    :func:`~metaopt.tasks.datasets.from_arrays`.

    Returns:
      The dictionary written to ``results.json``.
    """
    from metaopt.tasks.classification import mlp_classifier_family

    out = prepare_dir(out, "out")
    data, load = _dataset_loader(data, data_dir)
    generalization = _generalization_names(generalization)
    wall = time.perf_counter()
    dataset = load()
    lopt = lstm_optimizer(hidden_size=20, num_layers=2, log_and_sign_p=10.0, output_scale=0.1)
    keys = jax.random.split(jax.random.key(seed, impl="rbg"), 2 + 2 * (1 + len(GENERALIZATION)))
    k_train, rest = keys[0], keys[2:]

    def family(split, hidden_sizes=(20,), activation="sigmoid"):
        return mlp_classifier_family(
            dataset, split=split, hidden_sizes=hidden_sizes, activation=activation
        )

    config = {
        "seed": seed,
        "data": data,
        "lstm": lopt.config,
        "epochs": epochs,
        "num_tasks": num_tasks,
        "truncation": truncation,
        "horizon": horizon,
        "meta_optimizer": f"adam({meta_learning_rate})",
        "num_eval_tasks": num_eval_tasks,
        "num_tune_tasks": num_tune_tasks,
        "splits": {s: len(dataset.split(s)[1]) for s in ("train", "val", "test")},
    }
    run = _meta_train(
        out,
        lopt,
        family("train"),
        family("val"),
        k_train,
        {k: v for k, v in config.items() if k not in ("num_eval_tasks", "num_tune_tasks")},
        resume,
        epochs=epochs,
        num_tasks=num_tasks,
        truncation=truncation,
        horizon=horizon,
        meta_optimizer=optax.adam(meta_learning_rate),
        validate_every=5,
        num_validation_tasks=64,
        progress=progress,
    )
    theta = run.state.best_theta
    compare = _comparison(as_optax(lopt, theta), family, num_eval_tasks, num_tune_tasks)
    optimizers = compare(rest[0], rest[1], horizon)
    plot_curves(out / "curves.png", optimizers, f"MLP(20, sigmoid) on {data}, test split")
    general = _generalize(compare, generalization, rest[2:], out, data)
    save(out / "optimizer.mopt", lopt, theta)
    results = _record("mlp", config, run, out, optimizers=optimizers, generalization=general)
    results["wall_seconds"] = time.perf_counter() - wall
    write_json(out / "results.json", results)
    return results
