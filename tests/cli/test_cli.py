"""The ``metaopt`` command."""

import json
import subprocess
import sys

import numpy as np
import pytest

from metaopt.cli.main import main
from metaopt.train.hooks import callback

SMALL = [
    "--epochs",
    "2",
    "--tasks",
    "4",
    "--truncation",
    "5",
    "--horizon",
    "10",
    "--eval-tasks",
    "8",
    "--tune-tasks",
    "8",
    "--no-progress",
]


def test_demo_output_that_is_a_file_is_a_clear_error(tmp_path, capsys):
    target = tmp_path / "file"
    target.write_text("x")
    assert main(["demo", "--out", str(target), *SMALL]) == 2
    assert "out must be a directory" in capsys.readouterr().err


@pytest.mark.parametrize("flag", ["--epochs", "--tasks", "--truncation", "--horizon"])
def test_nonpositive_sizes_are_rejected_by_the_parser(flag, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["demo", flag, "0"])
    assert exc.value.code == 2
    assert flag in capsys.readouterr().err


def test_truncation_longer_than_horizon_is_a_clear_error(tmp_path, capsys):
    args = ["demo", "--out", str(tmp_path), "--truncation", "30", "--horizon", "10"]
    assert main(args) == 2
    assert "truncation" in capsys.readouterr().err


def test_console_script_is_installed():
    out = subprocess.run(
        [sys.executable, "-m", "metaopt", "--help"], capture_output=True, text=True, check=True
    )
    assert "demo" in out.stdout


TRAIN = [
    "--meta-steps",
    "6",
    "--tasks",
    "4",
    "--truncation",
    "5",
    "--horizon",
    "10",
    "--validate-every",
    "4",
    "--validation-tasks",
    "4",
    "--no-progress",
]


@pytest.mark.parametrize("lopt", ["lstm", "mlp"])
def test_train_then_eval(tmp_path, lopt, capsys):
    run_dir = tmp_path / "run"
    args = ["train", "--task", "mlp_regression", "--lopt", lopt, "--out", str(run_dir), *TRAIN]
    assert main(args) == 0
    lines = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    # One record per meta-step: 6 truncations of 5 steps.
    assert [r["step"] for r in lines] == [1, 2, 3, 4, 5, 6]
    # Validated every 4 meta-steps and after the last one.
    assert [r["step"] for r in lines if "validation_loss" in r] == [4, 6]
    summary = json.loads((run_dir / "summary.json").read_text())
    # The saved optimizer is the best one on validation; reloading it reproduces that loss.
    best = min(r["validation_loss"] for r in lines if "validation_loss" in r)
    assert summary["best_validation_loss"] <= best
    import metaopt as mo

    loaded, _ = mo.load(run_dir / "optimizer.mopt")
    assert loaded.name == lopt
    if lopt == "lstm":
        return  # eval reads every kind of saved optimizer alike; once is enough

    eval_dir = tmp_path / "eval"
    args = [
        "eval",
        "--lopt",
        str(run_dir / "optimizer.mopt"),
        "--task",
        "mlp_regression",
        "--out",
        str(eval_dir),
        "--steps",
        "10",
        "--eval-tasks",
        "4",
        "--tune-tasks",
        "4",
    ]
    capsys.readouterr()
    assert main(args) == 0
    # It says what it scored on and what it tuned on, over which rates.
    assert (
        "scored on 4 held-out tasks; baselines' learning rates tuned on 4 other tasks over "
        "26 rates from 0.0001 to 10"
    ) in capsys.readouterr().out
    results = json.loads((eval_dir / "results.json").read_text())
    assert set(results["optimizers"]) == {"learned", "sgd", "nag", "rmsprop", "adam"}
    assert len(results["optimizers"]["learned"]["curve_mean"]) == 11
    assert (eval_dir / "curves.png").read_bytes().startswith(b"\x89PNG")


def test_eval_and_the_quadratic_demo_share_their_comparison_sizes():
    import inspect

    from metaopt.cli.main import DEMO_DEFAULTS, build_parser
    from metaopt.experiments.learning_to_learn import quadratic_demo

    ev = build_parser().parse_args(["eval", "--lopt", "x", "--task", "quadratic", "--out", "o"])
    demo = build_parser().parse_args(["demo"])
    function = inspect.signature(quadratic_demo).parameters
    for size in ("tune_tasks", "eval_tasks"):
        assert getattr(demo, size) is None  # the flag's absence means DEMO_DEFAULTS
        shared = {
            getattr(ev, size),
            DEMO_DEFAULTS["quadratic"][size],
            function[f"num_{size}"].default,
        }
        assert len(shared) == 1, (size, shared)


def test_eval_scores_the_demos_optimizer_as_the_demo_did(tmp_path):
    sizes = ["--eval-tasks", "4", "--tune-tasks", "4"]
    demo, ev = tmp_path / "demo", tmp_path / "eval"
    args = ["--epochs", "1", "--tasks", "2", "--truncation", "5", "--horizon", "5", *sizes]
    assert main(["demo", "--out", str(demo), "--seed", "3", "--no-progress", *args]) == 0
    optimizer = str(demo / "optimizer.mopt")
    args = ["--task", "quadratic", "--seed", "3", "--steps", "5", *sizes, "--out", str(ev)]
    assert main(["eval", "--lopt", optimizer, *args]) == 0
    shown = json.loads((demo / "results.json").read_text())["optimizers"]
    again = json.loads((ev / "results.json").read_text())["optimizers"]
    again["lstm"] = again.pop("learned")
    assert set(again) == set(shown)
    for name, entry in shown.items():
        # The same program on the same tasks, from a file that holds θ exactly: equal up
        # to the order XLA sums in.
        np.testing.assert_allclose(again[name]["curve_mean"], entry["curve_mean"], rtol=1e-6)
        assert again[name].get("learning_rate") == entry.get("learning_rate")


def test_eval_of_a_missing_optimizer_is_a_clear_error(tmp_path, capsys):
    args = ["eval", "--lopt", "no_such_optimizer", "--task", "quadratic", "--out", str(tmp_path)]
    assert main(args) == 2
    assert "no_such_optimizer" in capsys.readouterr().err


def test_unknown_task_or_optimizer_is_rejected(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--task", "nope", "--lopt", "lstm", "--out", "x"])
    assert "--task" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["train", "--task", "quadratic", "--lopt", "adamw", "--out", "x"])
    assert "--lopt" in capsys.readouterr().err


def test_mlp_demo_on_digits_writes_main_and_generalization_results(tmp_path):
    args = [
        "demo",
        "--task",
        "mlp",
        "--out",
        str(tmp_path),
        "--epochs",
        "1",
        "--tasks",
        "2",
        "--truncation",
        "5",
        "--horizon",
        "10",
        "--eval-tasks",
        "2",
        "--tune-tasks",
        "2",
        "--generalization",
        "layers_2",
        "--no-progress",
    ]
    assert main(args) == 0
    results = json.loads((tmp_path / "results.json").read_text())
    names = {"lstm", "sgd", "nag", "rmsprop", "adam"}
    assert set(results["optimizers"]) == names
    # One setting keeps the test short; each runs the same code with its own settings.
    assert set(results["generalization"]) == {"layers_2"}
    assert results["generalization"]["layers_2"]["setting"]["hidden_sizes"] == [20, 20]
    for name, entry in results["generalization"].items():
        assert set(entry["optimizers"]) == names
        steps = entry["setting"]["steps"]
        assert len(entry["optimizers"]["lstm"]["curve_mean"]) == steps + 1
        assert (tmp_path / f"curves_{name}.png").read_bytes().startswith(b"\x89PNG")
    assert results["config"]["splits"] == {"train": 1258, "val": 180, "test": 359}


def test_mlp_demo_runs_on_a_users_own_dataset(tmp_path):
    import numpy as np

    from metaopt.experiments.learning_to_learn import mlp_demo
    from metaopt.tasks.datasets import from_arrays

    rng = np.random.default_rng(0)
    ds = from_arrays(rng.random((50, 3, 3)), np.arange(50) % 4, name="mine")
    res = mlp_demo(
        tmp_path, data=ds, epochs=1, num_tasks=2, truncation=5, horizon=5, num_eval_tasks=2,
        num_tune_tasks=2, generalization=False, progress=False,
    )  # fmt: skip
    # from_arrays splits 50 examples 70/10/20.
    assert res["config"]["data"] == "mine"
    assert res["config"]["splits"] == {"train": 35, "val": 5, "test": 10}
    assert res["generalization"] == {}
    assert all(np.isfinite(v["final_loss_mean"]) for v in res["optimizers"].values())
    with pytest.raises(ValueError, match="data must be a Dataset or one of"):
        mlp_demo(tmp_path / "other", data="imagenet")


def test_mlp_demo_without_mnist_files_says_where_to_put_them(tmp_path, capsys):
    args = [
        "demo",
        "--task",
        "mlp",
        "--data",
        "mnist",
        "--data-dir",
        str(tmp_path),
        "--out",
        str(tmp_path / "out"),
    ]
    assert main(args) == 2
    assert "train-images-idx3-ubyte.gz" in capsys.readouterr().err


def test_demo_stopped_by_a_signal_resumes_and_writes_results(tmp_path, capsys, monkeypatch):
    import os
    import signal

    from metaopt.train import run

    real_meta_train = run.meta_train

    def meta_train(*args, hooks, **kwargs):
        def hook(state, record):
            if state.step == 2:
                os.kill(os.getpid(), signal.SIGTERM)  # as if from outside, mid-run

        # After the hook that writes metrics and checkpoints, before the signal check.
        hooks = [hooks[0], callback(hook), *hooks[1:]]
        return real_meta_train(*args, hooks=hooks, **kwargs)

    monkeypatch.setattr(run, "meta_train", meta_train)
    args = ["demo", "--out", str(tmp_path), *SMALL]
    assert main(args) == 128 + signal.SIGTERM
    assert "--resume" in capsys.readouterr().err
    assert not (tmp_path / "results.json").exists()
    monkeypatch.setattr(run, "meta_train", real_meta_train)
    # Other settings are refused; the same ones continue from meta-step 2.
    changed = [a if a != "--tasks" else "--epochs" for a in args]
    assert main([*changed, "--resume"]) == 2
    assert "different configuration" in capsys.readouterr().err
    assert main([*args, "--resume"]) == 0
    captured = capsys.readouterr()
    assert "(meta-step 2)" in captured.err and "lstm" in captured.out
    results = json.loads((tmp_path / "results.json").read_text())
    assert [r["step"] for r in results["meta_train"]["history"]] == [1, 2, 3, 4]
    assert set(results["optimizers"]) == {"lstm", "sgd", "nag", "rmsprop", "adam"}
    for name, entry in results["optimizers"].items():
        assert len(entry["curve_mean"]) == 11
        assert entry["final_loss_mean"] == pytest.approx(entry["curve_mean"][-1])
        assert ("learning_rate" in entry) == (name != "lstm")
        assert np.all(np.isfinite(entry["curve_mean"]))
    mt = results["meta_train"]
    assert mt["seconds"] > 0
    # 2 epochs × 10 steps × 4 tasks in the measured seconds, across both processes' parts.
    assert mt["function_steps_per_second"] == pytest.approx(80 / mt["seconds"], rel=1e-6)
    assert (tmp_path / "curves.png").read_bytes().startswith(b"\x89PNG")
