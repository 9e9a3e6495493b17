"""The command line's rough edges: run directories for eval, nothing left on failure,
errors under the subcommand's usage, and files that honour the umask."""

import os
import stat

import jax
import pytest

import metaopt as mo
from metaopt.cli.main import main
from metaopt.core.files import atomic_write
from metaopt.io.serialization import save

EVAL = ["--task", "quadratic", "--steps", "3", "--eval-tasks", "2", "--tune-tasks", "2"]


def test_eval_takes_a_run_directory_and_finds_its_optimizer(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    lopt = mo.lstm_optimizer(hidden_size=4)
    save(run / "optimizer.mopt", lopt, lopt.init(jax.random.key(0)))
    out = tmp_path / "eval"
    assert main(["eval", "--lopt", str(run), "--out", str(out), *EVAL]) == 0
    assert (out / "results.json").is_file()


def test_a_directory_without_an_optimizer_is_a_clear_error(tmp_path, capsys):
    out = tmp_path / "eval"
    assert main(["eval", "--lopt", str(tmp_path), "--out", str(out), *EVAL]) == 2
    assert "without optimizer.mopt" in capsys.readouterr().err
    assert not out.exists()


def test_a_failed_eval_leaves_no_directory(tmp_path, capsys, monkeypatch):
    from metaopt.evaluation import report

    def broken(*args, **kwargs):
        raise ValueError("tuning failed")

    monkeypatch.setattr(report, "compare_optimizers", broken)
    out = tmp_path / "never"
    assert main(["eval", "--lopt", "versatile", "--out", str(out), *EVAL]) == 2
    assert "tuning failed" in capsys.readouterr().err
    assert not out.exists()


def test_a_flag_of_another_subcommand_is_reported_by_the_subcommand(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main(
            [
                "eval",
                "--lopt",
                "versatile",
                "--task",
                "quadratic",
                "--out",
                str(tmp_path),
                "--epochs",
                "3",
            ]
        )
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "metaopt eval: error: unrecognized arguments: --epochs 3" in err
    assert "usage: metaopt eval" in err


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_written_files_honour_the_umask(tmp_path, umask, mode):
    old = os.umask(umask)
    try:
        path = atomic_write(tmp_path / "f.bin", lambda f: f.write(b"x"))
        plain = tmp_path / "plain.bin"
        plain.write_bytes(b"x")  # what open() gives under the same umask
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == mode == stat.S_IMODE(plain.stat().st_mode)
