"""One-shot learners beside the MAML family, on the same held-out digit episodes.

The survey's second branch of metalearning (Santoro et al. 2016: memory-augmented
networks; Vinyals et al. 2016: matching networks; with Snell et al. 2017's prototypical
networks as the simple, strong baseline) against MAML, FOMAML, Reptile and Meta-SGD
(Finn et al. 2017; Nichol et al. 2018; Li et al. 2017). Every method meta-trains on
N-way K-shot episodes of the training digits (each also rotated as new classes) and is
scored on the same held-out episodes of unseen digits: mean query accuracy with a 95%
interval. The memory-augmented network is also scored by instance number, the
accuracy on the first, second, ... presentation of a class in a sequence (Santoro et
al.'s Figure 2). A reference row, ``pixels``, labels each query by its nearest class
mean in pixel space, with nothing learned; ``matching_scaled`` is a matching network
whose attention multiplies the cosines by 10 first, beside the paper's (``matching``).
"""

import inspect
import os
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from metaopt.core import checks
from metaopt.core.files import prepare_dir, write_json
from metaopt.core.types import EpisodicLearner, TaskFamily
from metaopt.estimators.episodic import episodic
from metaopt.evaluation.episodes import episode_accuracies, held_out_episodes, mean_and_interval
from metaopt.evaluation.machine import machine
from metaopt.experiments import fewshot, runs
from metaopt.learners.embedding import identity_embedding, mlp_embedding
from metaopt.learners.mann import instance_numbers, memory_augmented_network, sequence_logits
from metaopt.learners.matching import matching_network
from metaopt.learners.prototypical import prototypical_network
from metaopt.tasks import datasets
from metaopt.tasks.fewshot import fewshot_family, query_accuracy

EPISODIC = ("matching", "matching_scaled", "prototypical", "mann", "matching_fce")
MAML_FAMILY = ("maml", "fomaml", "reptile", "metasgd")
METHODS = EPISODIC + MAML_FAMILY
DEFAULT_METHODS = tuple(m for m in METHODS if m != "matching_fce")
# matching_scaled: the cosines times this before the attention's softmax (see
# metaopt.learners.matching); "matching" is the paper's, a factor of 1.
MATCHING_SCALE = 10.0
# 5-way Omniglot, 1-shot and 5-shot (Vinyals et al. 2016, Table 1, without fine-tuning;
# Snell et al. 2017, Table 1).
PAPERS = {
    "matching": {"1shot": 0.981, "5shot": 0.989},
    "prototypical": {"1shot": 0.988, "5shot": 0.997},
}


def _maml_settings(meta_steps: int, num_tasks: int, num_eval_tasks: int) -> dict[str, Any]:
    """The few-shot demo's own settings of the MAML family, with this demo's sizes."""
    params = inspect.signature(fewshot.fewshot_demo).parameters
    settings = {name: params[name].default for name in fewshot.SETTINGS}
    return settings | dict(
        meta_steps=meta_steps, num_tasks=num_tasks, num_eval_tasks=num_eval_tasks
    )


def _learner(name: str, features: int, ways: int, mann: dict[str, int | float]) -> EpisodicLearner:
    """An episodic method's learner; the metric learners embed with the MAML family's MLP."""
    embed = mlp_embedding(features, (64, 64))
    if name == "prototypical":
        return prototypical_network(embed, ways)
    if name == "matching_scaled":
        return matching_network(embed, ways, scale=MATCHING_SCALE)
    if name in ("matching", "matching_fce"):
        return matching_network(embed, ways, full_context=name == "matching_fce")
    return memory_augmented_network(features, ways, **mann)


def _scored(accuracies: np.ndarray, **extra) -> dict[str, Any]:
    mean, half = mean_and_interval(accuracies)
    return {"accuracy": mean, "ci95": half, **extra}


def _instance_curve(learner, theta, family: TaskFamily, key, num_tasks: int) -> list[dict]:
    """The MANN's accuracy by instance number over held-out sequences, then its queries."""

    def one(episode, k_order):
        support, labels, queries = sequence_logits(learner, theta, episode, k_order)
        correct = jnp.argmax(support, axis=-1) == labels
        query = jnp.mean(jnp.argmax(queries, axis=-1) == episode.y_query)
        return correct, instance_numbers(labels), query

    run = jax.jit(lambda k: jax.vmap(one)(*held_out_episodes(family, k, num_tasks)))
    correct, instance, query = run(key)
    correct, instance = np.asarray(correct, np.float64), np.asarray(instance)
    curve = []
    for k in range(1, int(instance.max()) + 1):
        at_k = instance == k  # every class appears k times, so each episode has `ways`
        per_episode = (correct * at_k).sum(axis=1) / at_k.sum(axis=1)
        curve.append(_scored(per_episode, instance=k))
    curve.append(_scored(np.asarray(query), instance="query"))
    return curve


def _instance_curves(data, learner, theta, key, settings) -> dict[str, list[dict]]:
    """The MANN's instance curves on unseen classes and, for contrast, its training classes."""
    curves = {}
    for field, classes, rotations in (
        ("mann_instances", settings["test_classes"], 1),
        ("mann_instances_train_classes", settings["train_classes"], settings["rotations"]),
    ):
        family = fewshot_family(
            data,
            classes=classes,
            ways=settings["ways"],
            shots=settings["curve_shots"],
            rotations=rotations,
        )
        curves[field] = _instance_curve(learner, theta, family, key, settings["num_eval_tasks"])
    return curves


# Settings that only change the evaluation: a resumed run may change them.
EVALUATION_SETTINGS = frozenset({"num_eval_tasks", "curve_shots"})


def _episodic_config(name: str, family: TaskFamily, settings: dict) -> dict[str, Any]:
    """The settings that define an episodic method's meta-training, as its checkpoints hold."""
    keys = ("ways", "meta_steps", "num_tasks", "meta_lr", "rotations")
    config = {"method": name, "family": family.name} | {k: settings[k] for k in keys}
    config["train_classes"] = list(settings["train_classes"])  # checkpoints store lists
    return config | ({"mann": settings["mann"]} if name == "mann" else {})


def _run_episodic(
    name, family, eval_family, keys, settings, run_dir, resume, progress
) -> tuple[dict, Any]:
    """Meta-trains one episodic method in ``run_dir`` and scores it on the held-out episodes."""
    k_train, k_eval = keys
    features = int(family.sample(jax.random.key(0)).x_support.shape[-1])
    learner = _learner(name, features, settings["ways"], settings["mann"])
    steps = settings["meta_steps"]
    run = runs.meta_train_method(
        run_dir,
        episodic(learner, family, num_tasks=settings["num_tasks"]),
        jax.random.fold_in(k_train, METHODS.index(name)),
        num_steps=steps,
        meta_optimizer=optax.adam(optax.cosine_decay_schedule(settings["meta_lr"], steps)),
        config=_episodic_config(name, family, settings),
        resume=resume,
        may_change=EVALUATION_SETTINGS,
        progress=progress,
    )
    evaluate = jax.jit(
        lambda th: episode_accuracies(
            learner, th, eval_family, k_eval, num_tasks=settings["num_eval_tasks"]
        )
    )
    theta = run.state.theta
    entry = _scored(np.asarray(evaluate(theta)), **runs.run_summary(run, run_dir))
    return entry, (learner, theta)


def _run_maml_family(family, eval_family, key, settings, out, resume, progress) -> dict[str, dict]:
    """The few-shot demo's MAML family, scored after its ``eval_steps`` inner steps.

    Their meta-training checkpoints in ``out/<method>``.
    """
    methods = tuple(m for m in MAML_FAMILY if m in settings["methods"])
    if not methods:
        return {}
    start = time.perf_counter()
    summaries, fitted = fewshot.run_methods(
        family,
        eval_family,
        key,
        settings["maml"],
        {"query_accuracy": lambda fam, cfg, params: query_accuracy(cfg, params)},
        out=out,
        methods=methods,
        progress=progress,
        resume=resume,
    )
    wall = (time.perf_counter() - start) / len(methods)
    keep = ("inner_rule", "meta_train_seconds", "compile_seconds", "final_meta_loss")
    results = {}
    for name in methods:
        per_episode = np.asarray(fitted[name][2]["query_accuracy"][:, -1])
        extra = {k: summaries[name][k] for k in keep}
        results[name] = _scored(per_episode, **extra, wall_seconds=wall)
    return results


def _run_setting(
    data, shot: int, key: jax.Array, settings: dict, out: Path, resume: bool, progress: bool
) -> dict:
    """Every method on one N-way K-shot setting, scored on the same held-out episodes.

    Each method meta-trains with checkpoints in ``out/<method>``.
    """
    ways, test_classes = settings["ways"], settings["test_classes"]
    family = fewshot_family(
        data,
        classes=settings["train_classes"],
        ways=ways,
        shots=shot,
        rotations=settings["rotations"],
    )
    eval_family = fewshot_family(data, classes=test_classes, ways=ways, shots=shot)
    k_train, _, k_eval = fewshot.method_keys(key)  # run_methods' held-out episodes
    num_eval = settings["num_eval_tasks"]
    features = int(eval_family.sample(k_eval).x_query.shape[-1])
    pixels = prototypical_network(identity_embedding(features), ways)
    baseline = episode_accuracies(pixels, (), eval_family, k_eval, num_tasks=num_eval)
    results = {"pixels": _scored(np.asarray(baseline))}
    section = {}
    for name in (m for m in EPISODIC if m in settings["methods"]):
        start = time.perf_counter()
        entry, (learner, theta) = _run_episodic(
            name, family, eval_family, (k_train, k_eval), settings, out / name, resume, progress
        )
        results[name] = entry | {"wall_seconds": time.perf_counter() - start}
        if name == "mann":
            section |= _instance_curves(data, learner, theta, k_eval, settings)
    results |= _run_maml_family(family, eval_family, key, settings, out, resume, progress)
    if progress:
        for name, entry in results.items():
            print(f"{ways}-way {shot}-shot {name}: {entry['accuracy']:.3f} ± {entry['ci95']:.3f}")
    return {"methods": results, **section}


def _check_methods(methods) -> tuple[str, ...]:
    methods = tuple(methods)
    if not methods or any(m not in METHODS for m in methods):
        raise ValueError(f"methods must be a non-empty subset of {list(METHODS)}, got {methods}")
    return methods


def oneshot_demo(
    out: str | os.PathLike,
    *,
    seed: int = 0,
    ways: int = 5,
    shots: tuple[int, ...] = (1, 5),
    train_classes: tuple[int, ...] = (0, 1, 2, 3, 4),
    test_classes: tuple[int, ...] = (5, 6, 7, 8, 9),
    rotations: int = 4,
    meta_steps: int = 1000,
    maml_meta_steps: int = 1000,
    num_tasks: int = 32,
    meta_lr: float = 1e-3,
    mann_hidden: int = 64,
    mann_slots: int = 32,
    mann_heads: int = 1,
    mann_strength: float = 5.0,
    curve_shots: int = 10,
    num_eval_tasks: int = 1000,
    methods: tuple[str, ...] = DEFAULT_METHODS,
    progress: bool = True,
    resume: bool = False,
) -> dict[str, Any]:
    """Episodic learners and the MAML family on N-way K-shot digits; writes results and plots.

    Meta-training draws episodes from ``train_classes`` (each also rotated as new
    classes); every method is scored on the same ``num_eval_tasks`` episodes of
    ``test_classes``. The MAML family keeps the few-shot demo's settings (one inner SGD
    step of 0.4 in meta-training, ten at test) with ``maml_meta_steps`` meta-steps; the
    episodic learners take ``meta_steps`` Adam steps of ``meta_lr``. The memory-augmented
    network's instance curves are measured on sequences of ``curve_shots`` examples per
    class, of the test classes and, for contrast, of the training classes. Writes
    ``results.json``, ``accuracy.png`` and ``mann_instances.png``. Every method
    meta-trains with checkpoints in ``out/runs/<setting>/<method>``; SIGINT or SIGTERM
    stops the demo with a checkpoint (:class:`~metaopt.train.run.RunStopped`), and
    ``resume=True`` continues it to the θ of a run never stopped.

    Returns:
      The dictionary written to ``results.json``: per setting (``"5way_1shot"``, ...)
      each method's ``accuracy`` and ``ci95`` (the 95% interval's half-width), and the
      MANN's ``mann_instances`` (and ``mann_instances_train_classes``).

    Example:
      >>> import tempfile
      >>> res = oneshot_demo(tempfile.mkdtemp(), shots=(1,), meta_steps=2, num_tasks=2,
      ...     num_eval_tasks=4, curve_shots=2, methods=("prototypical",), progress=False)
      >>> sorted(res["settings"]["5way_1shot"]["methods"])
      ['pixels', 'prototypical']
    """
    out = prepare_dir(out, "out")
    wall = time.perf_counter()
    sizes = dict(
        ways=ways,
        meta_steps=meta_steps,
        maml_meta_steps=maml_meta_steps,
        num_tasks=num_tasks,
        mann_hidden=mann_hidden,
        mann_slots=mann_slots,
        mann_heads=mann_heads,
        curve_shots=curve_shots,
        num_eval_tasks=num_eval_tasks,
    )
    sizes = {k: checks.positive_int(k, v) for k, v in sizes.items()}
    shots = tuple(checks.positive_int("shots", s) for s in shots)
    meta_lr = checks.positive_float("meta_lr", meta_lr)
    settings = sizes | dict(
        meta_lr=meta_lr,
        train_classes=tuple(train_classes),
        test_classes=tuple(test_classes),
        rotations=rotations,
        methods=_check_methods(methods),
        mann=dict(
            hidden_size=mann_hidden, slots=mann_slots, heads=mann_heads, strength=mann_strength
        ),
        maml=_maml_settings(maml_meta_steps, num_tasks, num_eval_tasks),
    )
    if resume:
        runs.check_resumable(out / "runs")
    data = datasets.digits()
    record: dict[str, Any] = {
        "experiment": "oneshot",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "config": {"seed": int(seed), "dataset": data.name, "shots": list(shots)} | settings,
        "papers_omniglot": PAPERS,
        "settings": {},
    }
    for k, shot in enumerate(shots):
        key = jax.random.fold_in(jax.random.key(int(seed)), k)
        setting = f"{ways}way_{shot}shot"
        runs_dir = out / "runs" / setting
        section = _run_setting(data, shot, key, settings, runs_dir, resume, progress)
        record["settings"][setting] = section
    record["wall_seconds"] = time.perf_counter() - wall
    write_json(out / "results.json", record)
    plot_accuracy(out / "accuracy.png", record)
    if any("mann_instances" in s for s in record["settings"].values()):
        plot_instances(out / "mann_instances.png", record)
    return record


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


_COLORS = {"pixels": "0.6"}


def plot_accuracy(path: str | os.PathLike, record: dict[str, Any]) -> None:
    """Mean held-out accuracy with 95% intervals, one panel per setting."""
    plt = _pyplot()
    sections = record["settings"]
    fig, axes = plt.subplots(1, len(sections), figsize=(5.5 * len(sections), 4), squeeze=False)
    for ax, (setting, section) in zip(axes[0], sections.items(), strict=True):
        names = list(section["methods"])
        acc = [section["methods"][n]["accuracy"] for n in names]
        err = [section["methods"][n]["ci95"] for n in names]
        colors = [_COLORS.get(n, "tab:blue" if n in EPISODIC else "tab:orange") for n in names]
        ax.barh(names, acc, xerr=err, color=colors, capsize=3)
        ax.axvline(1.0 / record["config"]["ways"], color="k", ls=":", lw=1, label="chance")
        ax.set_xlim(0, 1)
        ax.invert_yaxis()
        ax.set_xlabel("query accuracy on unseen digits (95% interval)")
        ax.set_title(setting)
        ax.legend(loc="lower right", fontsize=8)
    fig.suptitle("episodic learners (blue) and the MAML family (orange), same test episodes")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_instances(path: str | os.PathLike, record: dict[str, Any]) -> None:
    """The MANN's accuracy by instance number, one color per training setting.

    Solid lines: sequences of unseen classes; dashed: of the training classes.
    """
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for k, (setting, section) in enumerate(record["settings"].items()):
        for field, style, where in (
            ("mann_instances", "-", "unseen digits"),
            ("mann_instances_train_classes", "--", "training classes"),
        ):
            curve = [c for c in section.get(field, []) if c["instance"] != "query"]
            if curve:
                ax.errorbar(
                    [c["instance"] for c in curve],
                    [c["accuracy"] for c in curve],
                    yerr=[c["ci95"] for c in curve],
                    color=f"C{k}",
                    ls=style,
                    marker="o",
                    capsize=3,
                    label=f"trained on {setting}, {where}",
                )
    ax.axhline(1.0 / record["config"]["ways"], color="k", ls=":", lw=1, label="chance")
    ax.set_xlabel("instance (presentation of the class in the sequence)")
    ax.set_ylabel("accuracy")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=8)
    ax.set_title("memory-augmented network: accuracy by instance (Santoro et al. Fig. 2)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def format_summary(record: dict[str, Any]) -> str:
    """The demo's table (and the MANN's instance curve) as text.

    Example:
      >>> rec = {"config": {"ways": 5}, "settings": {"5way_1shot": {"methods": {
      ...     "prototypical": {"accuracy": 0.6, "ci95": 0.01}}}}}
      >>> print(format_summary(rec).splitlines()[1])
      prototypical     0.600 ± 0.010      0.988
    """
    lines = []
    for setting, section in record["settings"].items():
        shot = setting.split("_")[-1]
        lines.append(f"{setting}: query accuracy on unseen classes   paper (Omniglot)")
        for name, entry in section["methods"].items():
            paper = PAPERS.get(name, {}).get(shot)
            ref = f"{paper:>11.3f}" if paper is not None else ""
            lines.append(f"{name:<16}{entry['accuracy']:>6.3f} ± {entry['ci95']:.3f}{ref}")
        for field, where in (
            ("mann_instances", "unseen"),
            ("mann_instances_train_classes", "training classes"),
        ):
            if field in section:
                curve = ", ".join(f"{c['instance']}: {c['accuracy']:.3f}" for c in section[field])
                lines.append(f"mann by instance ({where}): {curve}")
        lines.append("")
    return "\n".join(lines).rstrip()
