"""PNGs of a run's meta-training curves, read from its ``metrics.jsonl``."""

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from metaopt.core.files import atomic_write

# file name -> (title, y label, [(metric, label)], log scale)
FIGURES = {
    "meta_loss.png": ("meta-loss", "loss", [("meta_loss", "meta-loss"), ("loss", "mean loss")], 1),
    "grad_norm.png": ("meta-gradient norm", "norm", [("grad_norm", "‖∇θ‖")], 1),
    "validation_loss.png": (
        "validation",
        "final loss",
        [("validation_loss", "validation loss"), ("best_validation_loss", "best so far")],
        1,
    ),
    "throughput.png": (
        "throughput",
        "function-steps/s",
        [("function_steps_per_second", "function-steps/s")],
        0,
    ),
    "skipped.png": ("skipped meta-updates", "count", [("skipped_total", "skipped so far")], 0),
}


def read_metrics(run_dir: str | os.PathLike) -> list[dict[str, Any]]:
    """The records of ``run_dir/metrics.jsonl``; a torn last line is ignored.

    Raises:
      FileNotFoundError: ``run_dir`` or its ``metrics.jsonl`` does not exist.
      ValueError: the file holds no records.

    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"run_dir {str(run_dir)!r} is not a directory")
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"{str(path)!r} does not exist; is this a metaopt train run?")
    records = []
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict) and "step" in record:
            records.append(record)
    if not records:
        raise ValueError(f"{str(path)!r} holds no meta-step records yet")
    return records


def plot_run(run_dir: str | os.PathLike) -> list[Path]:
    r"""Writes one PNG per meta-training curve into ``run_dir``; returns their paths.

    Example:
      >>> import json, pathlib, tempfile
      >>> d = pathlib.Path(tempfile.mkdtemp())
      >>> records = [{"step": 1, "meta_loss": 2.0, "loss": 2.0, "grad_norm": 0.5},
      ...            {"step": 2, "meta_loss": 1.0, "loss": 1.0, "grad_norm": 0.4,
      ...             "validation_loss": 0.9, "best_validation_loss": 0.9}]
      >>> _ = (d / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
      >>> [p.name for p in plot_run(d)][:2]
      ['meta_loss.png', 'grad_norm.png']

    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    run_dir = Path(run_dir)
    records = read_metrics(run_dir)
    written = []
    for name, (title, ylabel, series, log) in FIGURES.items():
        fig, ax = plt.subplots(figsize=(6, 4), dpi=110)
        for key, label in series:
            points = [(r["step"], r[key]) for r in records if key in r]
            if points:
                x, y = np.asarray(points, dtype=float).T
                ax.plot(x, y, label=label, marker="o" if len(x) < 30 else None, ms=3)
        lines = ax.get_lines()
        if log and lines and all(line.get_ydata().min() > 0 for line in lines):
            ax.set_yscale("log")
        ax.set_xlabel("meta-step")
        ax.set_ylabel(ylabel)
        ax.set_title(f"{title}: {run_dir.name}")
        if ax.get_lines():
            ax.legend()
        ax.grid(True, which="both", alpha=0.3)
        fig.tight_layout()
        save = lambda f, fig=fig: fig.savefig(f, format="png")  # noqa: E731
        written.append(atomic_write(run_dir / name, save))
        plt.close(fig)
    return written
