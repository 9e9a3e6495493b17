"""``metaopt demo --task sinusoid`` and ``metaopt train`` with the MAML family."""

import json

import flax.serialization
import jax
import numpy as np
import pytest

import metaopt as mo
from metaopt.cli.main import main
from metaopt.train.config import TrainConfig

TINY = ["--meta-steps", "2", "--tasks", "2", "--eval-tasks", "6", "--tune-tasks", "2"]


def test_sinusoid_demo_writes_every_method_and_the_fits(tmp_path, capsys):
    out = tmp_path / "sin"
    assert main(["demo", "--task", "sinusoid", "--out", str(out), *TINY, "--no-progress"]) in (
        0,
        None,
    )
    results = json.loads((out / "results.json").read_text())
    assert sorted(results["methods"]) == ["fomaml", "maml", "metasgd", "pretrained", "reptile"]
    for entry in results["methods"].values():
        # Two meta-steps leave SGD at 0.01 free to diverge from a random start, so only
        # the measurement before adaptation must be finite here.
        assert np.isfinite(entry["query_loss_0_steps"])
        assert {"query_loss_1_step", "query_loss_10_steps"} <= set(entry)
    assert results["config"]["num_eval_tasks"] == 6
    assert (out / "fits.png").stat().st_size > 0
    assert "query MSE" in capsys.readouterr().out


def test_demo_rejects_several_shots_for_sinusoids(tmp_path):
    with pytest.raises(SystemExit, match="one --shots"):
        main(["demo", "--task", "sinusoid", "--out", str(tmp_path), "--shots", "5", "10"])


def test_train_meta_sgd_with_maml_saves_theta_that_loads(tmp_path, capsys):
    out = tmp_path / "run"
    flags = ["--task", "sinusoid", "--learner", "metasgd", "--estimator", "maml"]
    sizes = ["--horizon", "1", "--meta-steps", "2", "--tasks", "4", "--validation-tasks", "4"]
    assert main(["train", "--out", str(out), *flags, *sizes, "--no-progress"]) == 0
    learner = mo.meta_sgd(mo.sinusoid_family())
    template = learner.init(jax.random.key(0))
    theta = flax.serialization.from_bytes(template, (out / "theta.msgpack").read_bytes())
    assert jax.tree.structure(theta) == jax.tree.structure(template)
    # Two Adam steps at 1e-3 moved the rates away from their initial 0.01.
    rates = np.concatenate([np.ravel(x) for x in jax.tree.leaves(theta["rule"])])
    assert not np.allclose(rates, 0.01) and np.all(np.abs(rates - 0.01) < 0.01)


def test_train_config_rejects_combinations_that_cannot_work():
    with pytest.raises(ValueError, match="reptile' needs a learned initialization"):
        TrainConfig(task="sinusoid", estimator="reptile")
    with pytest.raises(ValueError, match="task must be one of"):
        TrainConfig(task="quadratic", learner="learned_init", estimator="maml")


def test_demos_reject_unknown_methods_and_bad_sizes(tmp_path):
    from metaopt.experiments.fewshot import fewshot_demo, sinusoid_demo

    with pytest.raises(ValueError, match="methods must be"):
        fewshot_demo(tmp_path / "a", methods=("bogus",))
    with pytest.raises(ValueError, match="meta_steps"):
        sinusoid_demo(tmp_path / "b", meta_steps=0)
    with pytest.raises(ValueError, match="reptile_inner_lr"):
        sinusoid_demo(tmp_path / "c", reptile_inner_lr=-1.0)


def test_sinusoid_demo_stopped_part_way_resumes_to_the_uninterrupted_theta(
    tmp_path, capsys, monkeypatch
):
    import os
    import signal

    from metaopt.experiments import fewshot
    from metaopt.train import run
    from metaopt.train.hooks import callback

    thetas = {}
    real_run_methods, real_meta_train = fewshot.run_methods, run.meta_train

    def run_methods(*args, out, **kwargs):  # keeps each demo's final θ of every method
        results, fitted = real_run_methods(*args, out=out, **kwargs)
        thetas[out.parent.name] = {name: theta for name, (_, theta, _) in fitted.items()}
        return results, fitted

    calls = []

    def meta_train(*args, hooks, **kwargs):  # SIGTERM at meta-step 2 of the second method
        calls.append(None)

        def hook(state, record):
            if len(calls) == 2 and state.step == 2:
                os.kill(os.getpid(), signal.SIGTERM)

        # After the hook that writes metrics and checkpoints, before the signal check.
        return real_meta_train(*args, hooks=[hooks[0], callback(hook), *hooks[1:]], **kwargs)

    monkeypatch.setattr(fewshot, "run_methods", run_methods)
    demo = ["demo", "--task", "sinusoid", *TINY, "--meta-steps", "4", "--no-progress"]
    demo += ["--methods", "maml", "reptile"]
    assert main([*demo, "--out", str(tmp_path / "whole")]) == 0
    monkeypatch.setattr(run, "meta_train", meta_train)
    stopped = [*demo, "--out", str(tmp_path / "stopped")]
    assert main(stopped) == 128 + signal.SIGTERM
    assert "--resume" in capsys.readouterr().err
    monkeypatch.setattr(run, "meta_train", real_meta_train)
    assert main([*stopped, "--resume"]) == 0
    # MAML had finished: it is read back; Reptile continues from its meta-step 2.
    err = capsys.readouterr().err
    assert "(meta-step 4)" in err and "(meta-step 2)" in err
    metrics = (tmp_path / "stopped/runs/reptile/metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in metrics] == [1, 2, 3, 4]
    # Meta-step i draws from fold_in(key, i) and the checkpoint holds every array the
    # next step reads, so resuming must reproduce the uninterrupted θ bit for bit.
    for name in ("maml", "reptile"):
        whole, resumed = thetas["whole"][name], thetas["stopped"][name]
        assert jax.tree.structure(whole) == jax.tree.structure(resumed)
        for a, b in zip(jax.tree.leaves(whole), jax.tree.leaves(resumed), strict=True):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    a, b = (json.loads((tmp_path / d / "results.json").read_text()) for d in ("whole", "stopped"))
    assert (
        a["methods"]["reptile"]["query_loss_1_step"] == b["methods"]["reptile"]["query_loss_1_step"]
    )
