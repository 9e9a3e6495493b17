"""``metaopt train`` and ``metaopt plot``: configuration, bad input, metrics, divergence."""

import contextlib
import json
import os
import subprocess

import jax
import numpy as np
import pytest

import metaopt as mo
from metaopt.cli.main import main
from metaopt.estimators.options import ONLINE_ES_DEFAULTS
from metaopt.estimators.registry import ESTIMATORS
from metaopt.io.checkpoint import checkpoint_steps, read_checkpoint
from metaopt.train import build, train_run
from metaopt.train import run as run_layer
from metaopt.train.config import TrainConfig, flatten, from_flat, read_toml, resolve, to_toml
from metaopt.train.hooks import callback

TINY = [
    "--meta-steps",
    "4",
    "--tasks",
    "2",
    "--truncation",
    "5",
    "--horizon",
    "10",
    "--validate-every",
    "2",
    "--validation-tasks",
    "2",
    "--no-progress",
]


def fails(args, capsys, *needles):
    """Runs the command, expects exit status 2 and every needle in stderr."""
    try:
        status = main(args)
    except SystemExit as e:  # argparse
        status = e.code
    err = capsys.readouterr().err
    assert status == 2, err
    for needle in needles:
        assert needle in err, err
    return err


@contextlib.contextmanager
def read_only_dir(path):
    """A directory nobody may write to, root included (root ignores permission bits)."""
    path.mkdir()
    if os.geteuid() == 0:
        subprocess.run(["chattr", "+i", str(path)], check=True)
        undo = ["chattr", "-i", str(path)]
    else:
        path.chmod(0o555)
        undo = ["chmod", "755", str(path)]
    try:
        yield path
    finally:
        subprocess.run(undo, check=True)


@pytest.mark.parametrize(
    "flags, needle",
    [
        (["--meta-steps", "0"], "--meta-steps"),
        (["--tasks", "-3"], "--tasks"),
        (["--truncation", "-1"], "--truncation"),
        (["--meta-lr", "0"], "--meta-lr"),
        (["--seed", "-1"], "--seed"),
        (["--task", "imagenet"], "--task"),
        (["--lopt", "adam"], "--lopt"),
        (["--meta-steps", "ten"], "--meta-steps"),
    ],
)
def test_bad_flags_name_the_flag(tmp_path, capsys, flags, needle):
    fails(["train", "--out", str(tmp_path), *flags], capsys, needle)


@pytest.mark.parametrize(
    "toml, needles",
    [
        ("meta_steps = 0", ["meta_steps must be a positive integer, got 0"]),
        ("tasks = -3", ["tasks must be a positive integer, got -3"]),
        ("validation_tasks = 0", ["validation_tasks"]),
        ("meta_lr = -0.1", ["meta_lr must be a finite positive number"]),
        ('meta_steps = "ten"', ["meta_steps must be a positive integer, got 'ten'"]),
        ("meta_steps = 2.5", ["meta_steps must be a positive integer, got 2.5"]),
        ("meta_steps = true", ["meta_steps must be a positive integer, got True"]),
        ('meta_lr = "fast"', ["meta_lr must be a positive number"]),
        ("progress = 1", ["progress must be true or false"]),
        ('task = "imagenet"', ["task must be one of", "imagenet"]),
        ('lopt = "adam"', ["lopt must be one of", "adam"]),
        ("meta_step = 3", ["unknown key 'meta_step'", "did you mean 'meta_steps'"]),
        ("colour = 3", ["unknown key 'colour'", "known keys"]),
        ("meta_steps = ", ["not valid TOML", "line 1"]),
        ("[run]\nmeta_steps = 3", ["unknown key 'run'"]),
        ("[meta_steps]\nx = 3", ["key 'meta_steps' must be a value, not a table"]),
        ("meta_steps = 3\nmeta_steps = 4", ["not valid TOML"]),
    ],
)
def test_bad_config_files_name_the_file_and_the_key(tmp_path, capsys, toml, needles):
    config = tmp_path / "run.toml"
    config.write_text(toml + "\n")
    args = ["train", "--out", str(tmp_path / "run"), "--config", str(config)]
    fails(args, capsys, str(config), *needles)
    assert not (tmp_path / "run" / "config.toml").exists()


def test_a_missing_config_file_is_named(tmp_path, capsys):
    missing = tmp_path / "nope.toml"
    fails(["train", "--out", str(tmp_path), "--config", str(missing)], capsys, str(missing))


def test_truncation_longer_than_the_horizon_is_rejected(tmp_path, capsys):
    args = ["train", "--out", str(tmp_path), "--truncation", "30", "--horizon", "10"]
    fails(args, capsys, "truncation (30) must not exceed horizon (10)")


def test_an_output_path_that_is_a_file_is_rejected(tmp_path, capsys):
    target = tmp_path / "file"
    target.write_text("keep me")
    fails(["train", "--out", str(target), *TINY], capsys, "out must be a directory")
    assert target.read_text() == "keep me"


def test_a_read_only_output_directory_is_rejected(tmp_path, capsys):
    with read_only_dir(tmp_path / "ro") as ro:
        fails(["train", "--out", str(ro), *TINY], capsys, "not writable", str(ro))


def test_an_existing_run_is_never_overwritten(tmp_path, capsys):
    (tmp_path / "config.toml").write_text(to_toml(TrainConfig()))
    fails(["train", "--out", str(tmp_path), *TINY], capsys, "already holds a run", "--resume")
    assert read_toml(tmp_path / "config.toml") == read_toml_of(TrainConfig())


def read_toml_of(config):
    return {k: v for k, v in flatten(config).items() if v is not None}


def test_resume_with_a_different_configuration_names_the_keys(tmp_path, capsys):
    (tmp_path / "config.toml").write_text(to_toml(TrainConfig(meta_steps=2, tasks=2)))
    err = fails(
        ["train", "--out", str(tmp_path), "--resume", "--meta-steps", "3", "--seed", "1"],
        capsys,
        "different configuration",
    )
    assert "meta_steps = 3 here, 2 in the saved run" in err
    assert "seed = 1 here, 0 in the saved run" in err


def test_resume_where_there_is_no_run_is_an_error(tmp_path, capsys):
    fails(["train", "--out", str(tmp_path), "--resume"], capsys, "no run to resume")


def test_config_file_then_flags_and_the_saved_config_repeats_the_run(tmp_path, capsys):
    config = tmp_path / "run.toml"
    config.write_text("meta_steps = 2\ntasks = 3\ntruncation = 5\nhorizon = 10\nseed = 4\n")
    first = tmp_path / "first"
    common = ["--validation-tasks", "2", "--no-progress"]
    args = ["train", "--out", str(first), "--config", str(config), "--tasks", "2", *common]
    assert main(args) == 0
    saved = read_toml(first / "config.toml")
    # The flag beat the file, the file beat the defaults, and defaults fill the rest.
    assert (saved["tasks"], saved["meta_steps"], saved["seed"]) == (2, 2, 4)
    assert saved == read_toml_of(from_flat(saved)) and saved["meta_lr"] == 1e-2
    # The saved file, given back, is the same run: a new directory takes it as it is,
    # and the run's own directory resumes with it.
    assert resolve(read_toml(first / "config.toml")) == train_run.saved_config(first)
    again = ["train", "--out", str(first), "--resume", "--config", str(first / "config.toml")]
    assert main(again) == 0


def test_metrics_have_one_record_per_meta_step_and_plot_draws_them(tmp_path, capsys):
    assert main(["train", "--out", str(tmp_path), *TINY]) == 0
    records = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2, 3, 4]
    for r in records:
        assert {"meta_loss", "grad_norm", "skipped", "skipped_total", "wall_seconds"} <= set(r)
        assert r["function_steps_per_second"] > 0
    validated = [r for r in records if "validation_loss" in r]
    assert [r["step"] for r in validated] == [2, 4]
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["step"] == 4
    assert summary["best_validation_loss"] <= min(r["validation_loss"] for r in validated)
    capsys.readouterr()
    assert main(["plot", str(tmp_path)]) == 0
    written = capsys.readouterr().out
    for name in ("meta_loss", "grad_norm", "validation_loss", "throughput", "skipped"):
        png = tmp_path / f"{name}.png"
        assert str(png) in written
        assert png.read_bytes().startswith(b"\x89PNG")


def test_plot_of_a_directory_without_a_run_is_a_clear_error(tmp_path, capsys):
    fails(["plot", str(tmp_path)], capsys, "metrics.jsonl", "does not exist")
    fails(["plot", str(tmp_path / "missing")], capsys, "is not a directory")


def test_a_diverging_run_stops_and_keeps_its_last_good_checkpoint(tmp_path, capsys, monkeypatch):
    """The task's loss turns NaN for good after meta-step 4; the run must stop cleanly."""
    scale = np.ones((), np.float32)
    base = mo.quadratic_family(dim=3)

    def bind(data):
        loss = lambda cfg, p, k: data * base.loss(cfg, p, k)  # noqa: E731
        return base._replace(loss=loss, data=data, bind=bind)

    real_meta_train = run_layer.meta_train

    def meta_train(*args, hooks, **kwargs):
        def hook(state, record):
            if state.step == 4:
                scale[()] = np.nan

        # After the hook that writes metrics and checkpoints, before the signal check.
        hooks = [hooks[0], callback(hook), *hooks[1:]]
        return real_meta_train(*args, hooks=hooks, **kwargs)

    monkeypatch.setattr(build, "build_family", lambda task, split="train": bind(scale))
    monkeypatch.setattr(run_layer, "meta_train", meta_train)
    args = ["train", "--out", str(tmp_path), *TINY, "--meta-steps", "20"]
    args += ["--checkpoint-every", "2", "--max-consecutive-skips", "3"]
    assert main(args) == 1
    err = capsys.readouterr().err
    assert "3 consecutive meta-updates were skipped" in err and "last good" in err
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["status"] == "diverged" and summary["step"] == 7 and summary["skipped"] == 3
    records = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["skipped"] for r in records] == [0, 0, 0, 0, 1, 1, 1]
    # No checkpoint after the last finite update, and the ones kept are readable and finite.
    found = checkpoint_steps(tmp_path / "checkpoints")
    assert found[-1][0] == 4
    template = train_run.initial_state(train_run.saved_config(tmp_path))
    for _, _, path in found:
        state, _ = read_checkpoint(path, template)
        assert all(np.all(np.isfinite(x)) for x in jax.tree.leaves(state.theta))
    _, theta = mo.load(tmp_path / "optimizer.mopt")
    assert all(np.all(np.isfinite(x)) for x in jax.tree.leaves(theta))


def test_conv_task_and_the_two_optimizer_pair_are_built_by_name():
    family = build.build_family("conv_digits", "val")
    params = jax.jit(family.init)(None, jax.random.key(0))
    assert [c["w"].shape for c in params["conv"]] == [(5, 5, 1, 16), (5, 5, 16, 16), (5, 5, 16, 16)]
    lopt = build.build_lopt(TrainConfig(lopt="conv_and_rest", options={"output_scale": 0.05}))
    assert lopt.name == "conv_and_rest"
    assert lopt.config["conv"]["config"]["output_scale"] == 0.05
    assert lopt.config["rest"] == lopt.config["conv"]


def test_an_estimators_defaults_fill_only_what_is_not_given():
    config = flatten(TrainConfig(estimator="pes"))
    assert {k: config[k] for k in ONLINE_ES_DEFAULTS} == ONLINE_ES_DEFAULTS
    given = TrainConfig(estimator="pes", meta_lr=3e-3, options={"std": 0.02})
    assert (given.meta_lr, given.options["std"], given.options["perturbations"]) == (3e-3, 0.02, 4)
    assert TrainConfig().meta_lr == ESTIMATORS["tbptt"].defaults["meta_lr"]
    # An estimator that sets no defaults runs with the fallbacks and its options' own.
    reptile = TrainConfig(estimator="reptile", learner="learned_init", task="sinusoid")
    assert (reptile.meta_lr, reptile.clip, reptile.meta_steps) == (1e-3, None, 500)


def test_a_default_truncation_is_cut_to_the_horizon_and_a_given_one_is_checked():
    assert TrainConfig(estimator="es", horizon=50).options["truncation"] == 50
    assert TrainConfig(estimator="es").options["truncation"] == 100
    with pytest.raises(ValueError, match=r"truncation \(60\) must not exceed horizon \(50\)"):
        TrainConfig(estimator="es", horizon=50, options={"truncation": 60})


def test_epochs_still_works_as_a_deprecated_budget_of_meta_steps():
    with pytest.warns(DeprecationWarning, match="meta_steps = 15"):
        config = TrainConfig(epochs=3, horizon=100, options={"truncation": 20})
    assert config.meta_steps == 15 and config.epochs is None
    assert "epochs" not in to_toml(config)
    with pytest.warns(DeprecationWarning, match="meta_steps = 3"):
        assert TrainConfig(estimator="full_bptt", epochs=3).meta_steps == 3


def test_clip_none_unsets_an_estimators_clip_and_a_resume_keeps_it(tmp_path, capsys):
    args = ["train", "--out", str(tmp_path), *TINY, "--estimator", "pes", "--clip", "none"]
    args += ["--perturbations", "1", "--meta-steps", "2"]
    assert main(args) == 0
    saved = train_run.saved_config(tmp_path)
    assert saved.clip is None and saved.estimator == "pes" and saved.options["std"] == 0.1
    assert main([*args[:3], "--resume", "--meta-steps", "2"]) == 0
    capsys.readouterr()


def test_help_shows_each_estimators_defaults(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "pes, nres: 3000" in text and "es: 0.03" in text
    assert "--desync, --no-desync" in text
