"""A registered entry reaches every place that derives from the registries.

The estimator below is registered at run time and named nowhere in metaopt: the CLI's
choices and flags, the configuration's checks, the diagnostics and a saved optimizer
file must all pick it (or its optimizer) up from the registries alone.
"""

import dataclasses
import warnings

import jax
import jax.numpy as jnp
import pytest

import metaopt as mo
from metaopt.cli.main import build_parser, main
from metaopt.core import checks
from metaopt.core.registry import Entry, Registry, option
from metaopt.diagnostics.gradients import diagnosable, make_estimator
from metaopt.diagnostics.problems import quadratic_learning_rates
from metaopt.estimators.options import RunSpec, TruncatedOptions, truncated_kwargs
from metaopt.estimators.registry import ESTIMATORS
from metaopt.io.serialization import load_file as load
from metaopt.io.serialization import save
from metaopt.optimizers.registry import OPTIMIZERS
from metaopt.train.config import TrainConfig, read_toml


@dataclasses.dataclass(frozen=True)
class HalvedOptions(TruncatedOptions):
    scale: float = option(
        0.5, "what the tbptt gradient is multiplied by", check=checks.positive_float
    )
    second_order: bool = option(False, "keep second derivatives")


def halved_tbptt(learner, family, run: RunSpec, o: HalvedOptions):
    inner = mo.tbptt(learner, family, second_order=o.second_order, **truncated_kwargs(run, o))

    def estimate(theta, state, key):
        grad, state, metrics = inner.estimate(theta, state, key)
        return jax.tree.map(lambda g: o.scale * g, grad), state, metrics

    return inner._replace(name="halved", estimate=estimate, bind=None)


@pytest.fixture
def registered():
    entry = Entry(
        "halved",
        halved_tbptt,
        HalvedOptions,
        "tbptt, scaled",
        frozenset({"truncated", "diagnosable"}),
    )
    ESTIMATORS.register(entry)
    try:
        yield entry
    finally:
        ESTIMATORS.unregister("halved")


def test_the_cli_offers_a_registered_estimator_and_its_options(registered):
    text = build_parser().parse_args(
        ["train", "--out", "x", "--estimator", "halved", "--scale", "0.25"]
    )
    assert text.estimator == "halved" and text.scale == 0.25


def test_the_config_checks_a_registered_estimators_options(registered):
    config = TrainConfig(estimator="halved", options={"scale": 0.25})
    assert config.options["scale"] == 0.25 and config.options["truncation"] == 20
    with pytest.raises(ValueError, match="scale must be a finite positive number"):
        TrainConfig(estimator="halved", options={"scale": -1.0})


def test_a_run_of_a_registered_estimator_writes_its_options(registered, tmp_path):
    args = [
        "train",
        "--out",
        str(tmp_path),
        "--estimator",
        "halved",
        "--scale",
        "0.25",
        "--meta-steps",
        "2",
        "--tasks",
        "2",
        "--horizon",
        "4",
        "--truncation",
        "2",
        "--validation-tasks",
        "2",
        "--no-progress",
    ]
    assert main(args) == 0
    saved = read_toml(tmp_path / "config.toml")
    assert saved["estimator"] == "halved" and saved["scale"] == 0.25


def test_the_diagnostics_build_a_registered_estimator(registered):
    assert "halved" in diagnosable()
    problem = quadratic_learning_rates()
    halved = make_estimator(problem, "halved", truncation=5, horizon=10)
    plain = make_estimator(problem, "tbptt", truncation=5, horizon=10)
    theta = problem.theta
    key = jax.random.key(0)
    g_half, _, _ = halved.estimate(theta, halved.init(theta, key), key)
    g_plain, _, _ = plain.estimate(theta, plain.init(theta, key), key)
    # Same tasks and keys: the registered estimator is exactly half of tbptt's.
    for a, b in zip(jax.tree.leaves(g_half), jax.tree.leaves(g_plain), strict=True):
        assert jnp.allclose(a, 0.5 * b, rtol=1e-6, atol=0)


def test_a_registered_optimizer_saves_and_loads(tmp_path):
    def signed(scale: float = 0.1) -> mo.LearnedOptimizer:
        return mo.LearnedOptimizer(
            name="signed",
            config={"scale": scale},
            init=lambda key: {"log_scale": jnp.log(jnp.float32(scale))},
            init_state=lambda theta, params: None,
            update=lambda theta, g, s, p=None: (
                jax.tree.map(lambda x: -jnp.exp(theta["log_scale"]) * jnp.sign(x), g),
                s,
            ),
        )

    OPTIMIZERS.register(Entry("signed", signed))
    try:
        lopt = signed(0.25)
        path = save(tmp_path / "s.mopt", lopt, lopt.init(jax.random.key(0)))
        again, theta = load(path)
        assert again.name == "signed" and again.config == {"scale": 0.25}
        assert jnp.allclose(jnp.exp(theta["log_scale"]), 0.25)
    finally:
        OPTIMIZERS.unregister("signed")


def test_unknown_names_and_duplicates_are_clear_errors():
    reg = Registry("widget", [Entry("alpha", build=lambda: 1)])
    with pytest.raises(ValueError, match=r"widget must be one of \['alpha'\], got 'alph'; did"):
        reg["alph"]
    with pytest.raises(ValueError, match="already registered"):
        reg.register(Entry("alpha", build=lambda: 2))


def test_an_old_estimator_name_warns_and_still_works():
    with pytest.warns(DeprecationWarning, match="'full' is now called 'full_bptt'"):
        config = TrainConfig(estimator="full")
    assert config.estimator == "full_bptt"


def test_moved_modules_import_with_a_warning_naming_the_new_place():
    import importlib
    import sys

    for old, new in [
        ("metaopt.datasets", "metaopt.tasks.datasets"),
        ("metaopt.cli.config", "metaopt.train.config"),
        ("metaopt.cli.demo", "metaopt.experiments.learning_to_learn"),
    ]:
        sys.modules.pop(old, None)
        with pytest.warns(DeprecationWarning, match=new):
            module = importlib.import_module(old)
        assert module is importlib.import_module(new)
    sys.modules.pop("metaopt.cli.run", None)
    with pytest.warns(DeprecationWarning, match="metaopt.train.train_run"):
        from metaopt.cli.run import train_run
    from metaopt.train.train_run import train_run as moved

    assert train_run is moved
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        import metaopt.train.config  # noqa: F401  (the new path warns about nothing)


def test_names_that_left_the_top_level_still_work_with_a_warning():
    from metaopt.evaluation import log_grid

    with pytest.warns(DeprecationWarning, match="metaopt.evaluation.log_grid"):
        moved = mo.log_grid
    assert moved is log_grid
    with pytest.raises(AttributeError, match="no_such_name"):
        mo.no_such_name  # noqa: B018
