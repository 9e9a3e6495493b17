"""``metaopt demo --task oneshot --resume``: a stopped one-shot demo continues its runs."""

import json
import os
import signal

import jax
import numpy as np

from metaopt.cli.main import main
from metaopt.experiments import runs
from metaopt.train import run
from metaopt.train.hooks import callback

DEMO = ["demo", "--task", "oneshot", "--meta-steps", "4", "--tasks", "2", "--eval-tasks", "4"]
DEMO += ["--shots", "1", "--methods", "prototypical", "maml", "--no-progress"]


def test_oneshot_demo_stopped_twice_resumes_to_the_uninterrupted_theta(
    tmp_path, capsys, monkeypatch
):
    thetas = {}
    real_method, real_meta_train = runs.meta_train_method, run.meta_train

    def meta_train_method(run_dir, *args, **kwargs):  # keeps each method's final θ
        result = real_method(run_dir, *args, **kwargs)
        thetas[run_dir.parents[2].name, run_dir.name] = result.state.theta
        return result

    def meta_train(*args, hooks, **kwargs):  # SIGTERM at meta-step 2 of any method
        def hook(state, record):
            if state.step == 2:
                os.kill(os.getpid(), signal.SIGTERM)

        # After the hook that writes metrics and checkpoints, before the signal check.
        return real_meta_train(*args, hooks=[hooks[0], callback(hook), *hooks[1:]], **kwargs)

    monkeypatch.setattr(runs, "meta_train_method", meta_train_method)
    assert main([*DEMO, "--out", str(tmp_path / "whole")]) == 0
    stopped = [*DEMO, "--out", str(tmp_path / "stopped")]
    monkeypatch.setattr(run, "meta_train", meta_train)
    # First stop: the episodic learner at its meta-step 2; MAML never starts.
    assert main(stopped) == 128 + signal.SIGTERM
    assert "--resume" in capsys.readouterr().err
    # Second: prototypical continues from 2 to 4; MAML starts afresh and stops at 2.
    assert main([*stopped, "--resume"]) == 128 + signal.SIGTERM
    assert "(meta-step 2)" in capsys.readouterr().err
    monkeypatch.setattr(run, "meta_train", real_meta_train)
    assert main([*stopped, "--resume"]) == 0
    # Prototypical had finished: it is read back; MAML continues from its meta-step 2.
    err = capsys.readouterr().err
    assert "(meta-step 4)" in err and "(meta-step 2)" in err
    runs_dir = tmp_path / "stopped/runs/5way_1shot"
    for name in ("prototypical", "maml"):
        lines = (runs_dir / name / "metrics.jsonl").read_text().splitlines()
        assert [json.loads(line)["step"] for line in lines] == [1, 2, 3, 4]
    # Meta-step i draws from fold_in(key, i) and the checkpoint holds every array the
    # next step reads, so resuming must reproduce the uninterrupted θ bit for bit.
    for name in ("prototypical", "maml"):
        whole, resumed = thetas["whole", name], thetas["stopped", name]
        assert jax.tree.structure(whole) == jax.tree.structure(resumed)
        for a, b in zip(jax.tree.leaves(whole), jax.tree.leaves(resumed), strict=True):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    a, b = (json.loads((tmp_path / d / "results.json").read_text()) for d in ("whole", "stopped"))
    for name in ("prototypical", "maml"):
        section_a, section_b = a["settings"]["5way_1shot"], b["settings"]["5way_1shot"]
        assert section_a["methods"][name]["accuracy"] == section_b["methods"][name]["accuracy"]


def test_oneshot_demo_resume_without_checkpoints_names_the_directory(tmp_path, capsys):
    assert main([*DEMO, "--out", str(tmp_path / "empty"), "--resume"]) == 2
    assert "resume: no checkpoint of any method under" in capsys.readouterr().err
