"""The MAML family end to end: sinusoid regression and few-shot digit episodes.

Each method meta-trains a start for new tasks on the same engine (Finn et al. 2017;
Nichol et al. 2018; Li et al. 2017), then adapts it to held-out tasks with a few
inner steps on their support sets and is measured on their query sets:

- ``maml``: a learned initialization, second-order meta-gradients;
- ``fomaml``: the same, first order;
- ``reptile``: the initialization moved toward the params that inner Adam steps reach;
- ``metasgd``: an initialization and a learning rate per parameter;
- ``pretrained``: one network trained on all tasks jointly, then fine-tuned by SGD with
  a learning rate tuned on validation tasks (the paper's baseline, made no weaker).
"""

import os
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from metaopt.core import checks
from metaopt.core.files import prepare_dir, write_json
from metaopt.core.types import MetaLearner, TaskFamily
from metaopt.estimators.maml import fomaml, maml
from metaopt.estimators.pretraining import pretraining
from metaopt.estimators.reptile import reptile
from metaopt.evaluation.adaptation import adaptation_curves, query_loss
from metaopt.evaluation.machine import machine
from metaopt.experiments import runs
from metaopt.learners.initialization import learned_initialization
from metaopt.learners.learning_rates import meta_sgd
from metaopt.tasks import datasets
from metaopt.tasks.fewshot import fewshot_family, query_accuracy
from metaopt.tasks.sinusoid import sinusoid_family
from metaopt.train.run import MetaTrainRun

METHODS = ("maml", "fomaml", "reptile", "metasgd", "pretrained")
FINE_TUNE_RATES = (0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0)


def _method(
    name: str, family: TaskFamily, settings: dict[str, Any]
) -> tuple[MetaLearner, Any, optax.GradientTransformation]:
    """The learner, estimator and meta-optimizer of one method."""
    steps, tasks = settings["meta_steps"], settings["num_tasks"]
    inner = dict(num_tasks=tasks, inner_steps=settings["inner_steps"])
    adam = optax.adam(optax.cosine_decay_schedule(settings["meta_lr"], steps))
    sgd = optax.sgd(settings["inner_lr"])
    if name == "maml":
        learner = learned_initialization(family, sgd)
        return learner, maml(learner, family, **inner), adam
    if name == "fomaml":
        learner = learned_initialization(family, sgd)
        return learner, fomaml(learner, family, **inner), adam
    if name == "metasgd":
        learner = meta_sgd(family, settings["inner_lr"])
        return learner, maml(learner, family, **inner), adam
    if name == "reptile":
        # Nichol et al. take the inner steps with Adam (β1 = 0); SGD from a random
        # start can diverge within a few steps and carry θ with it.
        inner_adam = optax.adam(settings["reptile_inner_lr"], b1=0.0)
        learner = learned_initialization(family, inner_adam)
        est = reptile(learner, family, num_tasks=tasks, inner_steps=settings["reptile_steps"])
        # Nichol et al.: plain SGD on θ - φ̄ with a step size annealed linearly to zero.
        return learner, est, optax.sgd(optax.linear_schedule(settings["reptile_lr"], 0.0, steps))
    learner = learned_initialization(family, sgd)
    return learner, pretraining(learner, family, num_tasks=tasks), adam


def _summary(curves: np.ndarray, prefix: str) -> dict[str, float]:
    """Mean (and standard error) after 0, 1 and the last number of steps."""
    last = curves.shape[1] - 1
    out = {}
    for k, label in ((0, "0_steps"), (1, "1_step"), (last, f"{last}_steps")):
        col = curves[:, k].astype(np.float64)
        with np.errstate(over="ignore", invalid="ignore"):  # a diverged method reports inf
            out[f"{prefix}_{label}"] = float(np.mean(col))
            out[f"{prefix}_{label}_sem"] = float(np.std(col) / np.sqrt(len(col)))
    return out


def _evaluate(learner, theta, family, key, settings, measures) -> tuple[dict, dict]:
    """Adaptation curves of every measure on held-out tasks, and their summaries."""
    curves, summary = {}, {}
    for prefix, measure in measures.items():
        fn = jax.jit(
            lambda th, k, m=measure: adaptation_curves(
                learner,
                th,
                family,
                k,
                num_tasks=settings["num_eval_tasks"],
                num_steps=settings["eval_steps"],
                measure=m,
            )
        )
        curves[prefix] = np.asarray(fn(theta, key))
        summary |= _summary(curves[prefix], prefix)
    return curves, summary


def _tune_fine_tuning(theta, family, key, settings) -> float:
    """The SGD rate whose fine-tuning gives the lowest mean query loss on validation tasks.

    The rate is an argument of one compiled program, so the grid compiles once.
    """

    @jax.jit
    def score(start, rate):
        learner = learned_initialization(lambda k: start, optax.sgd(rate))
        curves = adaptation_curves(
            learner,
            start,
            family,
            key,
            num_tasks=settings["num_tune_tasks"],
            num_steps=settings["eval_steps"],
        )
        return jnp.mean(curves[:, 1:])

    scores = {rate: float(score(theta, jnp.float32(rate))) for rate in FINE_TUNE_RATES}
    return min(scores, key=lambda r: scores[r] if np.isfinite(scores[r]) else np.inf)


def method_keys(key: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """:func:`run_methods`' keys: meta-training, tuning, and the held-out tasks.

    Another method evaluated with the third key meets the same held-out tasks.

    Example:
      >>> len(method_keys(jax.random.key(0)))
      3
    """
    k_train, k_tune, k_eval = jax.random.split(key, 3)
    return k_train, k_tune, k_eval


# Settings that only change the evaluation: a resumed run may change them.
EVALUATION_SETTINGS = frozenset({"num_eval_tasks", "num_tune_tasks", "eval_steps"})


def _meta_train_method(
    name: str,
    family: TaskFamily,
    key: jax.Array,
    settings: dict[str, Any],
    run_dir: Path,
    resume: bool,
    progress: bool,
) -> tuple[MetaLearner, MetaTrainRun]:
    """One method's meta-training, checkpointed in ``run_dir``; raises if it stopped."""
    learner, est, meta_opt = _method(name, family, settings)
    run = runs.meta_train_method(
        run_dir,
        est,
        key,
        num_steps=settings["meta_steps"],
        meta_optimizer=meta_opt,
        config={"method": name, "family": family.name, **settings},
        resume=resume,
        may_change=EVALUATION_SETTINGS,
        progress=progress,
    )
    return learner, run


def _inner_rule(name: str, settings: dict[str, Any]) -> str:
    """How the method's inner steps update the params, as results.json records it."""
    if name == "reptile":
        return f"adam({settings['reptile_inner_lr']}, b1=0)"
    if name == "metasgd":
        return "sgd(learned per-parameter rates)"
    return f"sgd({settings['inner_lr']})"


def run_methods(
    family: TaskFamily,
    eval_family: TaskFamily,
    key: jax.Array,
    settings: dict[str, Any],
    measures: dict[str, Callable],
    *,
    out: str | os.PathLike,
    methods: tuple[str, ...] = METHODS,
    progress: bool = True,
    resume: bool = False,
) -> tuple[dict[str, dict], dict[str, Any]]:
    """Meta-trains and evaluates each method; returns summaries and what plots need.

    Each method meta-trains through :func:`~metaopt.train.run.checkpointed_meta_train`
    in ``out/<method>`` (checkpoints, ``metrics.jsonl``). A signal stops the run with a
    checkpoint (:class:`~metaopt.train.run.RunStopped`); ``resume=True`` continues
    each method from its newest checkpoint (a finished one is read, not re-run) and
    ends with the θ an uninterrupted run reaches (a method it never reached starts
    afresh; :func:`~metaopt.experiments.runs.check_resumable` tells a demo whether
    there is anything to resume).
    """
    out = prepare_dir(out, "out")
    k_train, k_tune, k_eval = method_keys(key)
    results, fitted = {}, {}
    for name in methods:
        k_method = jax.random.fold_in(k_train, METHODS.index(name))
        learner, run = _meta_train_method(
            name, family, k_method, settings, out / name, resume, progress
        )
        theta = run.state.theta
        entry: dict[str, Any] = {"inner_rule": _inner_rule(name, settings)}
        if name == "pretrained":
            rate = _tune_fine_tuning(theta, eval_family, k_tune, settings)
            learner = learned_initialization(lambda k, t=theta: t, optax.sgd(rate))
            entry["inner_rule"] = f"sgd({rate}), tuned over {list(FINE_TUNE_RATES)}"
        curves, summary = _evaluate(learner, theta, eval_family, k_eval, settings, measures)
        entry |= summary
        entry |= runs.run_summary(run, out / name)
        results[name] = entry
        fitted[name] = (learner, theta, curves)
        if progress:
            print(
                f"{name}: "
                + ", ".join(f"{k}={v:.4g}" for k, v in summary.items() if not k.endswith("sem"))
            )
    return results, fitted


SETTINGS = (
    "meta_steps",
    "num_tasks",
    "inner_steps",
    "inner_lr",
    "meta_lr",
    "reptile_steps",
    "reptile_lr",
    "reptile_inner_lr",
    "num_eval_tasks",
    "num_tune_tasks",
    "eval_steps",
)


def _settings(args: dict[str, Any]) -> dict[str, Any]:
    """The checked method settings among a demo's arguments; also checks ``methods``."""
    methods = args["methods"]
    if not methods or any(m not in METHODS for m in methods):
        raise ValueError(f"methods must be a non-empty subset of {list(METHODS)}, got {methods}")
    kw = {name: args[name] for name in SETTINGS}
    for name in SETTINGS:
        check = checks.positive_float if name.endswith("lr") else checks.positive_int
        kw[name] = check(name, kw[name])
    return kw


def _plot_sinusoids(path: Path, fitted: dict, family: TaskFamily, key: jax.Array, steps: int):
    """The adapted fits on three held-out tasks, one row per method (MAML paper, Fig. 2)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from metaopt.learners.adapt import adapt, initial_params
    from metaopt.tasks.regression import mlp_forward
    from metaopt.tasks.sinusoid import sine

    tasks = [family.sample(k) for k in jax.random.split(key, 3)]
    grid = jnp.linspace(-5.0, 5.0, 200)[:, None]
    fig, axes = plt.subplots(len(fitted), 3, figsize=(12, 2.6 * len(fitted)), squeeze=False)
    for row, (name, (learner, theta, _)) in enumerate(fitted.items()):
        for col, task in enumerate(tasks):
            ax = axes[row, col]
            ax.plot(grid, sine(task, grid), "k", lw=2, label="true")
            ax.plot(task.x_support, task.y_support, "^", color="purple", label="support")
            start = initial_params(learner, theta)
            ax.plot(grid, mlp_forward(start, grid), ":", color="gray", label="before")
            for k, color in ((1, "tab:green"), (steps, "tab:red")):
                params = adapt(
                    learner,
                    theta,
                    lambda p, t: family.loss(t, p, None),
                    task,
                    steps=k,
                )
                ax.plot(grid, mlp_forward(params, grid), "--", color=color, label=f"{k} step(s)")
            ax.set_ylim(-6, 6)
            if col == 0:
                ax.set_ylabel(name)
            if row == 0 and col == 2:
                ax.legend(fontsize=7, loc="upper right")
    fig.suptitle(f"Sinusoids, {family.name}: adaptation on held-out tasks")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def sinusoid_demo(
    out: str | os.PathLike,
    *,
    seed: int = 0,
    shots: int = 10,
    meta_steps: int = 20000,
    num_tasks: int = 25,
    inner_steps: int = 1,
    inner_lr: float = 0.01,
    meta_lr: float = 3e-3,
    reptile_steps: int = 5,
    reptile_lr: float = 1.0,
    reptile_inner_lr: float = 0.01,
    num_eval_tasks: int = 1000,
    num_tune_tasks: int = 200,
    eval_steps: int = 10,
    query_points: int = 100,
    methods: tuple[str, ...] = METHODS,
    progress: bool = True,
    resume: bool = False,
) -> dict[str, Any]:
    """Sinusoid regression (Finn et al. 2017, §5.1); writes results.json and fits.png.

    Meta-training uses ``shots`` support and ``shots`` query points per task, as the
    paper; held-out tasks are measured on ``query_points`` query points. Each method
    meta-trains with checkpoints in ``out/runs/<method>``; SIGINT or SIGTERM stops the
    demo with a checkpoint (:class:`~metaopt.train.run.RunStopped`), and
    ``resume=True`` continues it.

    Returns:
      The dictionary written to ``results.json``: per method, the mean query MSE after
      0, 1 and ``eval_steps`` adaptation steps over ``num_eval_tasks`` held-out tasks.

    Example:
      >>> import tempfile
      >>> res = sinusoid_demo(tempfile.mkdtemp(), meta_steps=2, num_tasks=2,
      ...     num_eval_tasks=4, num_tune_tasks=2, methods=("maml",), progress=False)
      >>> sorted(res["methods"]["maml"])[:3]
      ['compile_seconds', 'final_meta_loss', 'inner_rule']
    """
    out = prepare_dir(out, "out")
    wall = time.perf_counter()
    settings = _settings(locals())
    if resume:
        runs.check_resumable(out / "runs")
    family = sinusoid_family(shots=shots, query_shots=shots)
    eval_family = sinusoid_family(shots=shots, query_shots=query_points)
    key = jax.random.key(int(seed))
    k_run, k_plot = jax.random.split(key)
    results, fitted = run_methods(
        family,
        eval_family,
        k_run,
        settings,
        {"query_loss": query_loss},
        out=out / "runs",
        methods=tuple(methods),
        progress=progress,
        resume=resume,
    )
    _plot_sinusoids(out / "fits.png", fitted, eval_family, k_plot, eval_steps)
    record = {
        "experiment": "sinusoid",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "config": {"seed": int(seed), "shots": shots, "query_points": query_points, **settings},
        "methods": results,
        "wall_seconds": time.perf_counter() - wall,
    }
    write_json(out / "results.json", record)
    return record


def _accuracy(family: TaskFamily, cfg, params) -> jax.Array:
    return query_accuracy(cfg, params)


def fewshot_demo(
    out: str | os.PathLike,
    *,
    seed: int = 0,
    ways: int = 5,
    shots: tuple[int, ...] = (1, 5),
    train_classes: tuple[int, ...] = (0, 1, 2, 3, 4),
    test_classes: tuple[int, ...] = (5, 6, 7, 8, 9),
    rotations: int = 4,
    meta_steps: int = 2000,
    num_tasks: int = 32,
    inner_steps: int = 1,
    inner_lr: float = 0.4,
    meta_lr: float = 1e-3,
    reptile_steps: int = 5,
    reptile_lr: float = 1.0,
    reptile_inner_lr: float = 0.001,
    num_eval_tasks: int = 1000,
    num_tune_tasks: int = 200,
    eval_steps: int = 10,
    methods: tuple[str, ...] = METHODS,
    progress: bool = True,
    resume: bool = False,
) -> dict[str, Any]:
    """N-way K-shot digit episodes; writes results.json with query loss and accuracy.

    Meta-training draws episodes from ``train_classes`` (each also rotated, as new
    classes, if ``rotations`` > 1); evaluation draws them from ``test_classes``,
    digits no method saw. Query sets hold 15 examples per class. Each method
    meta-trains with checkpoints in ``out/runs/<setting>/<method>``, and
    ``resume=True`` continues a stopped demo (see :func:`sinusoid_demo`).

    Example:
      >>> import tempfile
      >>> res = fewshot_demo(tempfile.mkdtemp(), shots=(1,), meta_steps=2, num_tasks=2,
      ...     num_eval_tasks=4, num_tune_tasks=2, methods=("maml",), progress=False)
      >>> sorted(res["settings"]["5way_1shot"]["methods"])
      ['maml']
    """
    out = prepare_dir(out, "out")
    wall = time.perf_counter()
    settings = _settings(locals())
    if resume:
        runs.check_resumable(out / "runs")
    data = datasets.digits()
    record: dict[str, Any] = {
        "experiment": "fewshot",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "config": {
            "seed": int(seed),
            "dataset": data.name,
            "ways": ways,
            "shots": list(shots),
            "train_classes": list(train_classes),
            "test_classes": list(test_classes),
            "rotations": rotations,
            **settings,
        },
        "settings": {},
    }
    measures = {"query_loss": query_loss, "query_accuracy": _accuracy}
    for k, shot in enumerate(shots):
        family = fewshot_family(
            data, classes=train_classes, ways=ways, shots=shot, rotations=rotations
        )
        eval_family = fewshot_family(data, classes=test_classes, ways=ways, shots=shot)
        setting = f"{ways}way_{shot}shot"
        results, _ = run_methods(
            family,
            eval_family,
            jax.random.fold_in(jax.random.key(int(seed)), k),
            settings,
            measures,
            out=out / "runs" / setting,
            methods=tuple(methods),
            progress=progress,
            resume=resume,
        )
        record["settings"][setting] = {"methods": results}
    record["wall_seconds"] = time.perf_counter() - wall
    write_json(out / "results.json", record)
    return record


def _table(methods: dict[str, dict], metric: str, steps: int) -> list[str]:
    cols = [f"{metric}_0_steps", f"{metric}_1_step", f"{metric}_{steps}_steps"]
    lines = [f"{'method':<12}" + "".join(f"{c.replace(metric + '_', ''):>14}" for c in cols)]
    for name, entry in methods.items():
        lines.append(f"{name:<12}" + "".join(f"{entry[c]:>14.4f}" for c in cols))
    return lines


def format_summary(record: dict[str, Any]) -> str:
    """The demo's results as text tables, one per setting and measure.

    Example:
      >>> rec = {"experiment": "sinusoid", "config": {"eval_steps": 10}, "methods": {"maml": {
      ...     "query_loss_0_steps": 3.0, "query_loss_1_step": 0.5, "query_loss_10_steps": 0.2}}}
      >>> print(format_summary(rec).splitlines()[2])
      maml                3.0000        0.5000        0.2000
    """
    steps = record["config"]["eval_steps"]
    if record["experiment"] == "sinusoid":
        return "\n".join(
            ["query MSE on held-out sine waves", *_table(record["methods"], "query_loss", steps)]
        )
    lines = []
    for setting, section in record["settings"].items():
        lines += [f"{setting}: query accuracy on unseen classes"]
        lines += _table(section["methods"], "query_accuracy", steps)
        lines += [""]
    return "\n".join(lines).rstrip()
