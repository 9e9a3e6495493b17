"""Every registered entry has a small configuration, and the pairings are valid runs.

The conformance checks are parametrized over the registries; these tests make sure that
none of them can skip an entry: an estimator, learner or optimizer registered without a
recipe in ``recipes.py`` fails here, by name.
"""

import pytest

from metaopt.estimators.registry import ESTIMATORS
from metaopt.learners.registry import LEARNERS
from metaopt.optimizers.registry import OPTIMIZERS
from metaopt.tasks.registry import TASKS
from metaopt.train.config import TrainConfig
from tests.conformance import recipes

ROLES = {
    "optimizer": (OPTIMIZERS, recipes.OPTIMIZER_RECIPES),
    "learner": (LEARNERS, recipes.LEARNER_RECIPES),
    "estimator": (ESTIMATORS, recipes.ESTIMATOR_RECIPES),
}
ENTRIES = [(role, name) for role, (registry, _) in ROLES.items() for name in registry]


@pytest.mark.parametrize("role, name", ENTRIES)
def test_every_registered_entry_has_a_small_recipe(role, name):
    registry, known = ROLES[role]
    assert name in known, f"add a small configuration for the {role} {name!r} to recipes.py"
    if role != "optimizer":  # the recipe's options are the entry's own, and pass its checks
        registry[name].make_options(known[name])
        assert set(known[name]) <= {f.name for f in registry[name].option_fields()}


@pytest.mark.parametrize("role", sorted(ROLES))
def test_no_recipe_is_left_for_an_entry_that_is_gone(role):
    registry, known = ROLES[role]
    assert set(known) <= set(registry)


def test_every_task_trait_has_a_small_family():
    traits = {t for entry in TASKS.values() for t in entry.traits}
    assert traits <= set(recipes.FAMILIES)


def run_config(estimator: str, learner: str) -> TrainConfig:
    """The run ``metaopt train`` would make of the pairing (its checks raise if invalid)."""
    trait = recipes.family_trait(estimator)
    return TrainConfig(
        task=TASKS.names(trait)[0] if trait else TASKS.names()[0],
        lopt=recipes.LOPT,
        learner=learner,
        estimator=estimator,
        tasks=recipes.NUM_TASKS,
        horizon=recipes.HORIZON,
        options=recipes.ESTIMATOR_RECIPES[estimator] | recipes.LEARNER_RECIPES[learner],
    )


@pytest.mark.parametrize("name", ESTIMATORS.names())
def test_each_estimator_runs_with_a_learner_and_task_that_metaopt_train_accepts(name):
    learner = recipes.learner_for(name)
    assert recipes.fits(name, learner)
    run_config(name, learner)


@pytest.mark.parametrize("name", LEARNERS.names())
def test_each_learner_is_trained_by_an_estimator_that_metaopt_train_accepts(name):
    estimator = recipes.estimator_for(name)
    run_config(estimator, name)
