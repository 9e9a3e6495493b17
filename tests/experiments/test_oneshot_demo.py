"""``metaopt demo --task oneshot``: every method on the same held-out episodes."""

import json

import flax.serialization
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import metaopt as mo
from metaopt.cli.main import main
from metaopt.evaluation.adaptation import adaptation_curves
from metaopt.evaluation.episodes import held_out_episodes
from metaopt.experiments.oneshot import oneshot_demo
from metaopt.tasks.datasets import digits
from metaopt.train.config import TrainConfig


def test_oneshot_demo_scores_every_method_and_writes_its_figures(tmp_path, capsys):
    out = tmp_path / "oneshot"
    flags = ["--meta-steps", "2", "--tasks", "2", "--eval-tasks", "6", "--shots", "1"]
    methods = ["--methods", "matching", "prototypical", "mann", "maml"]
    argv = ["demo", "--task", "oneshot", "--out", str(out), *flags, *methods, "--no-progress"]
    assert main(argv) in (0, None)
    results = json.loads((out / "results.json").read_text())
    section = results["settings"]["5way_1shot"]
    assert sorted(section["methods"]) == ["maml", "mann", "matching", "pixels", "prototypical"]
    for entry in section["methods"].values():
        assert 0.0 <= entry["accuracy"] <= 1.0 and entry["ci95"] >= 0.0
    # Ten instances per class in the curve's sequences, then the queries.
    for field in ("mann_instances", "mann_instances_train_classes"):
        assert [c["instance"] for c in section[field]] == [*range(1, 11), "query"]
    assert results["config"]["num_eval_tasks"] == 6
    for png in ("accuracy.png", "mann_instances.png"):
        assert (out / png).stat().st_size > 0
    text = capsys.readouterr().out
    assert "5way_1shot" in text and "mann by instance" in text


def test_episodic_and_maml_evaluations_meet_the_same_episodes():
    fam = mo.fewshot_family(digits(), classes=range(5, 10), ways=5, shots=2)
    key = jax.random.key(7)
    learner = mo.learned_initialization(fam)
    # A measure that reads only the episode: the sum of its support images.
    fingerprint = adaptation_curves(
        learner,
        learner.init(jax.random.key(0)),
        fam,
        key,
        num_tasks=5,
        num_steps=0,
        measure=lambda family, cfg, params: jnp.sum(cfg.x_support),
    )
    episodes, _ = held_out_episodes(fam, key, 5)
    np.testing.assert_array_equal(fingerprint[:, 0], jnp.sum(episodes.x_support, axis=(1, 2)))


def test_oneshot_demo_rejects_unknown_methods_and_bad_sizes(tmp_path):
    with pytest.raises(ValueError, match="methods must be a non-empty subset"):
        oneshot_demo(tmp_path / "a", methods=("pretrained",))
    with pytest.raises(ValueError, match="meta_steps must be a positive integer"):
        oneshot_demo(tmp_path / "b", meta_steps=0)
    with pytest.raises(ValueError, match="shots must be a positive integer"):
        oneshot_demo(tmp_path / "c", shots=(0,))


def test_train_an_episodic_learner_saves_theta_that_loads(tmp_path):
    out = tmp_path / "run"
    flags = ["--task", "fewshot_digits", "--learner", "matching", "--estimator", "episodic"]
    sizes = [
        "--meta-steps",
        "2",
        "--tasks",
        "4",
        "--validation-tasks",
        "4",
        "--validate-every",
        "1",
    ]
    argv = ["train", "--out", str(out), *flags, *sizes, "--full-context", "--no-progress"]
    assert main(argv) == 0
    fam = mo.fewshot_family(digits(), classes=range(5), ways=5, shots=1)
    learner = mo.matching_network(mo.learners.mlp_embedding(64), ways=5, full_context=True)
    template = learner.init(jax.random.key(0))
    theta = flax.serialization.from_bytes(template, (out / "theta.msgpack").read_bytes())
    assert jax.tree.structure(theta) == jax.tree.structure(template)
    support = fam.sample(jax.random.key(1)).x_support
    queries = np.zeros((2, 64), np.float32)
    labels = mo.learners.classify(learner, theta, support, np.arange(5), queries)
    assert labels.shape == (2,)


def test_train_config_pairs_episodic_learners_with_the_episodic_estimator():
    with pytest.raises(ValueError, match="trains an episodic learner: set learner"):
        TrainConfig(task="fewshot_digits", learner="learned_init", estimator="episodic")
    with pytest.raises(ValueError, match="learner 'mann' has no inner steps"):
        TrainConfig(task="fewshot_digits", learner="mann", estimator="maml")
    with pytest.raises(ValueError, match="reads N-way K-shot episodes: task must be one of"):
        TrainConfig(task="sinusoid", learner="prototypical", estimator="episodic")
