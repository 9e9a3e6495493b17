"""Plots of an estimator report: quality and cost against truncation length and horizon."""

import os
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from metaopt.core.files import atomic_write

# (row key, axis label, log scale, scale of the values)
PANELS = (
    ("relative_bias", "relative bias ‖E[ĝ − g]‖ / ‖g‖ ± s.e.", False, 1.0),
    ("relative_variance", "relative variance tr Cov(ĝ) / ‖g‖²", True, 1.0),
    ("cosine_mean", "cosine(ĝ, g), mean ± std", False, 1.0),
    ("temp_bytes", "temp memory per meta-step (KiB)", True, 1 / 1024),
    ("seconds_per_horizon", "ms per horizon of meta-steps", True, 1e3),
)
ERRORS = {"relative_bias": "relative_bias_stderr", "cosine_mean": "cosine_std"}
STYLES = {"full_bptt": "k", "tbptt": "C0", "es": "C1", "pes": "C2", "nres": "C3"}


def _most_common(values: list[int]) -> int:
    counts = Counter(values)
    return max(counts, key=lambda v: (counts[v], v))


def _sweeps(rows: Sequence[Mapping[str, Any]]) -> list[tuple[str, str, int]]:
    """(x key, fixed key, fixed value) of the sweep against truncation, then horizon."""
    distinct = {(r["truncation"], r["horizon"]) for r in rows}
    per_h = [h for _, h in distinct]
    per_k = [k for k, _ in distinct]
    return [
        ("truncation", "horizon", _most_common(per_h)),
        ("horizon", "truncation", _most_common(per_k)),
    ]


def _panel(ax, rows, x_key, panel, title):
    from matplotlib import ticker

    y_key, label, log, scale = panel
    names = list(dict.fromkeys(r["estimator"] for r in rows))
    drawn = False
    for i, name in enumerate(names):
        own = sorted((r for r in rows if r["estimator"] == name), key=lambda r: r[x_key])
        # Dodge the estimators sideways so that their error bars do not hide each other.
        dodge = 2.0 ** (0.05 * (i - (len(names) - 1) / 2))
        x = np.array([r[x_key] for r in own], float) * dodge
        y = np.array([np.nan if r.get(y_key) is None else r[y_key] for r in own], float) * scale
        if log:
            y = np.where(y > 0, y, np.nan)
        if not np.isfinite(y).any():
            continue
        drawn = True
        style = dict(color=STYLES.get(name), marker="o", ms=4, lw=1.6, label=name)
        if y_key in ERRORS:
            err = np.array([r[ERRORS[y_key]] for r in own], float) * scale
            ax.errorbar(x, y, yerr=err, capsize=3, **style)
        else:
            ax.plot(x, y, **style)
    ax.set_xscale("log", base=2)
    xs = sorted({r[x_key] for r in rows})
    ax.set_xticks(xs, [str(v) for v in xs])
    ax.minorticks_off()
    if log and drawn:
        ax.set_yscale("log")
        ax.yaxis.set_major_locator(ticker.LogLocator(subs=(1.0, 2.0, 5.0)))
        ax.yaxis.set_major_formatter(ticker.FormatStrFormatter("%g"))
        ax.yaxis.set_minor_formatter(ticker.NullFormatter())
    elif y_key == "relative_bias":
        ax.set_ylim(bottom=0)
    if not drawn:
        ax.text(0.5, 0.5, "not measured", ha="center", va="center", transform=ax.transAxes)
    ax.set_xlabel("truncation length K" if x_key == "truncation" else "horizon H")
    ax.set_title(f"{label}\n{title}", fontsize=9)
    ax.grid(True, which="both", alpha=0.3)


def plot_report(
    rows: Sequence[Mapping[str, Any]], path: str | os.PathLike, title: str = ""
) -> None:
    """Writes bias, variance, cosine, memory and time of each estimator to ``path`` (PNG).

    The top row sweeps the truncation length at the horizon most rows share, the
    bottom row the horizon at the truncation most rows share; one line per estimator.
    The bias's error bars are its standard error (the norm an unbiased estimator's mean
    error would have with this noise): a bias within them is noise.

    Example:
      >>> import tempfile, pathlib
      >>> rows = [{"estimator": "tbptt", "truncation": k, "horizon": 8,
      ...     "relative_bias": 1 / k, "relative_bias_stderr": 0.0, "relative_variance": 0.0,
      ...     "cosine_mean": 0.9, "cosine_std": 0.1} for k in (2, 4, 8)]
      >>> path = pathlib.Path(tempfile.mkdtemp()) / "report.png"
      >>> plot_report(rows, path)
      >>> path.read_bytes()[1:4]
      b'PNG'
    """
    if not rows:
        raise ValueError("rows must not be empty")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sweeps = _sweeps(rows)
    fig, axes = plt.subplots(
        len(sweeps), len(PANELS), figsize=(3.6 * len(PANELS), 3.3 * len(sweeps)), dpi=110
    )
    for i, (x_key, fixed_key, fixed) in enumerate(sweeps):
        subset = [r for r in rows if r[fixed_key] == fixed]
        for j, panel in enumerate(PANELS):
            _panel(axes[i, j], subset, x_key, panel, f"({fixed_key} = {fixed})")
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=len(labels), frameon=False)
    if title:
        fig.suptitle(title)
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    atomic_write(path, lambda f: fig.savefig(f, format="png"))
    plt.close(fig)
