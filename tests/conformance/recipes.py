"""The small configurations every registered entry is checked with, and the runs shared.

Each entry of ``OPTIMIZERS``, ``LEARNERS`` and ``ESTIMATORS`` needs a recipe below: the
tiny settings its conformance checks run with (hidden sizes 2-4, 2 tasks, horizon 4).
``test_recipes.py`` fails for an entry without one, so a newly registered entry is never
skipped silently. Which learner and task family an estimator runs with is derived from
its traits; a learner runs with the first registered estimator that can train it
(:func:`estimator_for`).

Building goes through the registries, as ``metaopt train`` does
(``train/build.py``): ``entry.build`` with options made and checked by
``entry.make_options``. Only the task families are small copies of the registered ones
(a registered family's sizes are not options).
"""

import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

import metaopt as mo
from metaopt.core.types import Estimator, LearnedOptimizer, TaskFamily
from metaopt.estimators.options import RunSpec
from metaopt.estimators.registry import ESTIMATORS
from metaopt.learners.registry import LEARNERS
from metaopt.optimizers.registry import OPTIMIZERS
from metaopt.tasks.datasets import digits
from metaopt.train.loop import MetaTrainState, init_meta_train_state
from metaopt.train.meta_step import MetaState

NUM_TASKS, HORIZON = 2, 4

# Keyword arguments of ``OPTIMIZERS[name].build``.
OPTIMIZER_RECIPES: dict[str, dict[str, Any]] = {
    "lstm": {"hidden_size": 4, "num_layers": 1},
    "mlp": {"hidden_size": 4, "num_hidden_layers": 1},
    "versatile": {"hidden_size": 4},
    "orthogonal": {"hidden_size": 4, "max_orthogonal_dim": 4, "ns_steps": 2},
    "conv_and_rest": {"hidden_size": 2, "num_layers": 1},
}

# Option values for ``LEARNERS[name].make_options``.
LEARNER_RECIPES: dict[str, dict[str, Any]] = {
    "learned_optimizer": {},
    "learned_init": {},
    "metasgd": {},
    "learned_init+optimizer": {},
    "prototypical": {},
    "matching": {"full_context": True, "fce_steps": 2},
    "mann": {"controller_size": 4, "memory_slots": 4, "slot_size": 2, "read_heads": 2},
}

# Option values for ``ESTIMATORS[name].make_options`` (over the entry's defaults).
ESTIMATOR_RECIPES: dict[str, dict[str, Any]] = {
    "tbptt": {"truncation": 2},
    "full_bptt": {},
    # ES's default objective counts only the loss at the end of a horizon: one
    # truncation of the whole horizon, as its own default truncation (100) does.
    "es": {"truncation": HORIZON, "perturbations": 2},
    "pes": {"truncation": 2, "perturbations": 2},
    "nres": {"truncation": 2, "perturbations": 2},
    "maml": {},
    "fomaml": {},
    "reptile": {},
    "pretraining": {},
    "episodic": {},
}

# The learned optimizer inside the ``optimizer`` learners of the estimator checks.
LOPT = "mlp"

# A small family per task trait an estimator may need (None: any family); the registered
# task each stands in for is the first one with the trait (``test_recipes.py``).
FAMILIES: dict[str | None, Callable[[], TaskFamily]] = {
    None: lambda: mo.quadratic_family(dim=3),
    "query": lambda: mo.sinusoid_family(shots=2, query_shots=2, hidden_sizes=(4,)),
    "episodes": lambda: mo.fewshot_family(
        digits(), classes=range(5), ways=2, shots=1, query_shots=2, hidden_sizes=(4,)
    ),
}


def family_trait(estimator: str) -> str | None:
    """The task trait ``estimator`` needs of its family (None: any family will do)."""
    traits = ESTIMATORS[estimator].traits
    if "episodic" in traits:
        return "episodes"
    return "query" if "query" in traits else None


def learner_for(estimator: str) -> str:
    """The first registered learner that suits ``estimator``, by its traits.

    An episodic estimator trains an episodic learner; one that needs a learned
    initialization (Reptile) or measures a query set (the MAML family) trains one;
    the others train a learned optimizer.
    """
    traits = ESTIMATORS[estimator].traits
    if "episodic" in traits:
        return LEARNERS.names("episodic")[0]
    if traits & {"initialization", "query"}:
        return LEARNERS.names("initialization")[0]
    return LEARNERS.names("optimizer")[0]


def fits(estimator: str, learner: str) -> bool:
    """Whether ``learner`` can be trained by ``estimator`` (what ``TrainConfig`` checks)."""
    e, lrn = ESTIMATORS[estimator].traits, LEARNERS[learner].traits
    if ("episodic" in e) != ("episodic" in lrn):
        return False
    return "initialization" not in e or "initialization" in lrn


def estimator_for(learner: str) -> str:
    """The first registered estimator that can train ``learner``; for a learned
    initialization, the first one that measures a query set (the MAML family).

    A truncated estimator draws each task's starting params in ``init``, outside the
    truncations it differentiates or perturbs, so a learned initialization gets no
    meta-gradient until a task is replaced inside a truncation.
    """
    fitting = [name for name in ESTIMATORS if fits(name, learner)]
    if "initialization" in LEARNERS[learner].traits:
        fitting = [n for n in fitting if "query" in ESTIMATORS[n].traits] or fitting
    return fitting[0]


def build_lopt(name: str) -> LearnedOptimizer:
    """``OPTIMIZERS[name]`` built from its recipe."""
    return OPTIMIZERS[name].build(**OPTIMIZER_RECIPES[name])


@functools.cache
def jitted_lopt(name: str) -> tuple[LearnedOptimizer, Any, list[int]]:
    """``(lopt, θ, traces)``: ``OPTIMIZERS[name]`` from its recipe with ``init_state``
    and ``update`` jitted, perturbed meta-parameters, and how often ``update`` was
    traced. Kept across tests, so each input signature compiles once."""
    lopt = build_lopt(name)
    theta = perturbed(lopt.init(jax.random.key(0)), jax.random.key(1))
    traces = [0]

    def update(theta, grads, state, params=None):
        traces[0] += 1  # runs only while tracing
        return lopt.update(theta, grads, state, params)

    jitted = lopt._replace(init_state=jax.jit(lopt.init_state), update=jax.jit(update))
    return jitted, theta, traces


@functools.cache
def family(trait: str | None) -> TaskFamily:
    """The small family for ``trait`` (built once: the digits are read from disk)."""
    return FAMILIES[trait]()


def build_estimator(
    estimator: str,
    learner: str | None = None,
    task: TaskFamily | None = None,
    lopt: LearnedOptimizer | None = None,
    **options: Any,
) -> Estimator:
    """``ESTIMATORS[estimator]`` from its recipe (and ``options``), training ``learner``
    (by default :func:`learner_for`; if it has one, with ``lopt``, by default
    :data:`LOPT`'s) on ``task`` (by default the family its traits need)."""
    learner = learner_for(estimator) if learner is None else learner
    task = family(family_trait(estimator)) if task is None else task
    lopt = build_lopt(LOPT) if lopt is None else lopt
    entry = LEARNERS[learner]
    meta_learner = entry.build(lopt, task, entry.make_options(LEARNER_RECIPES[learner]))
    entry = ESTIMATORS[estimator]
    values = ESTIMATOR_RECIPES[estimator] | options
    return entry.build(meta_learner, task, RunSpec(NUM_TASKS, HORIZON), entry.make_options(values))


def keep_gradient() -> optax.GradientTransformation:
    """A meta-optimizer link that passes the meta-gradient on and keeps it in its state,
    so a compiled meta-step reports the meta-gradient it applied."""
    return optax.GradientTransformation(
        lambda params: jax.tree.map(jnp.zeros_like, params), lambda g, state, params=None: (g, g)
    )


# Adam's first step is about lr·sign(g) whatever |g| is; the first link keeps g itself.
META_OPTIMIZER = optax.chain(keep_gradient(), optax.adam(1e-2))
KEY = jax.random.key(0)
STEP_KEYS = (jax.random.key(1), jax.random.key(2))


def meta_gradient(state: MetaState) -> Any:
    """The meta-gradient the meta-step that made ``state`` applied (see ``keep_gradient``)."""
    return state.meta_opt_state[0]


class MetaStepRun(NamedTuple):
    """Two jitted meta-steps of one estimator, from the state ``meta_train`` starts at.

    Attributes:
      estimator: the estimator.
      step: ``jax.jit(make_meta_step(estimator, META_OPTIMIZER))``.
      start: ``init_meta_train_state(estimator, KEY)``: θ, the meta-optimizer and
        estimator states before the first step (also a checkpoint's template).
      first, first_metrics: after ``step(start, STEP_KEYS[0])``.
      second, second_metrics: after ``step(first, STEP_KEYS[1])``.
      second_compiles: compilations during the second call (0: the state ``step``
        returns has the types it took).
    """

    estimator: Estimator
    step: Callable[[MetaState, jax.Array], tuple[MetaState, dict]]
    start: MetaTrainState
    first: MetaState
    first_metrics: dict
    second: MetaState
    second_metrics: dict
    second_compiles: int


def as_meta_state(state: MetaTrainState) -> MetaState:
    """The arrays of a run state that a meta-step takes."""
    return MetaState(state.theta, state.meta_opt_state, state.estimator_state)


_RUNS: dict[tuple[str, str], MetaStepRun] = {}


def meta_step_run(estimator: str, learner: str, count_compiles) -> MetaStepRun:
    """The :class:`MetaStepRun` of ``estimator`` training ``learner``, computed once per
    pair and shared by the estimator and learner checks (compiling is what costs)."""
    if (estimator, learner) not in _RUNS:
        est = build_estimator(estimator, learner)
        step = jax.jit(mo.make_meta_step(est, META_OPTIMIZER))
        start = init_meta_train_state(est, KEY, meta_optimizer=META_OPTIMIZER)
        first, first_metrics = step(as_meta_state(start), STEP_KEYS[0])
        jax.block_until_ready(first)
        with count_compiles() as compiles:
            second, second_metrics = step(first, STEP_KEYS[1])
            jax.block_until_ready(second)
        _RUNS[estimator, learner] = MetaStepRun(
            est, step, start, first, first_metrics, second, second_metrics, compiles[0]
        )
    return _RUNS[estimator, learner]


def perturbed(tree: Any, key: jax.Array, scale: float = 0.1) -> Any:
    """``tree`` with Gaussian noise of std ``scale`` added to every leaf, so that every
    leaf matters (a fresh learned optimizer's output layer may be zero)."""
    leaves, treedef = jax.tree.flatten(tree)
    keys = jax.random.split(key, len(leaves))
    noisy = [
        x + scale * jax.random.normal(k, x.shape, x.dtype)
        for k, x in zip(keys, leaves, strict=True)
    ]
    return treedef.unflatten(noisy)
