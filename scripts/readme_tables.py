"""Reruns the README's seeded tables and rewrites them from what the runs returned.

Each table this script covers sits in README.md between ``<!-- table:NAME -->`` and
``<!-- /table -->``: a caption (the command, the seed, the wall time and the machine's
load, which are the machine's and not the code's) and a markdown table of the numbers.
The script runs the documented command, reads the ``results.json`` it writes, stores
the numbers the table shows with the machine, date, commit and load in
``docs/readme_tables.json`` (one entry per table, replaced when that table is rerun;
git keeps the history), and rewrites the region from that record.
``tests/test_readme_tables.py`` checks, without rerunning anything, that every number in
a region is the record's at the precision shown.

The record is one file in docs/, not a timestamped series in benchmarks/results/: the
README shows one run per table, so the test compares it with the one record there is,
and rerunning a table replaces only its entry.

Covered (each runs in minutes on 2 cores):

- ``demo-quadratic``: the Quickstart, ``metaopt demo`` (about a minute);
- ``demo-mlp``: ``metaopt demo --task mlp`` on the digits (5-15 minutes).

Not covered, and why (each cites its own timestamped results file instead):

- ``metaopt demo --task sinusoid``, ``fewshot`` and ``oneshot``: 13-18 minutes each on a
  quiet 2-core machine, longer under load;
- the held-out suite (``benchmarks/heldout_suite.py``), MNIST end to end (25 minutes),
  the estimator diagnostics, the learned meta-optimizer, the combined MAML learners and
  influence balancing: benchmarks that write their own records under
  ``benchmarks/results/``, which the README names beside each table; the first four take
  tens of minutes;
- the MAML memory table: compiled memory, which no seed changes.

Run from the repository root (``nice -n 10`` on a shared machine):
python scripts/readme_tables.py [--tables NAME ...] [--render-only]
"""

import argparse
import json
import os
import re
import shlex
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
RECORD = ROOT / "docs" / "readme_tables.json"

BASELINES = ("adam", "nag", "rmsprop", "sgd")


class Table(NamedTuple):
    """A README table: the command that makes it and how its rows come from results.json.

    Attributes:
      command: the documented command, without ``--out`` (the script adds its own).
      columns: the table's header.
      rows: ``results -> rows``, each row a label followed by numbers (None shows "–").
      caption: ``entry -> text`` written above the table.
      verdict: ``entry -> text`` written below it, or None.
    """

    command: str
    columns: tuple[str, ...]
    rows: Callable[[dict], list[list]]
    caption: Callable[[dict], str]
    verdict: Callable[[dict], str] | None = None


def _finite_or_text(entry: dict) -> float | str:
    """An optimizer's mean final loss, or what happened when it is not finite."""
    loss = entry["final_loss_mean"]
    if loss is not None and loss == loss and abs(loss) != float("inf"):
        return loss
    return f"diverged on {entry.get('diverged_tasks', '?')} tasks"


def _quadratic_rows(results: dict) -> list[list]:
    optimizers = results["optimizers"]
    names = sorted(optimizers, key=lambda n: _sort_key(optimizers[n]))
    return [
        [name, _finite_or_text(optimizers[name]), optimizers[name].get("learning_rate")]
        for name in names
    ]


def _sort_key(entry: dict) -> tuple[bool, float]:
    loss = _finite_or_text(entry)
    return (isinstance(loss, str), 0.0 if isinstance(loss, str) else loss)


MLP_SETTINGS = {
    "MLP(20, sigmoid), 100 steps": None,
    "200 steps": "steps_200",
    "40 hidden units": "hidden_40",
    "2 hidden layers": "layers_2",
    "ReLU": "relu",
}


def _mlp_rows(results: dict) -> list[list]:
    rows = []
    for label, key in MLP_SETTINGS.items():
        part = results if key is None else results["generalization"][key]
        optimizers = part["optimizers"]
        rows.append([label, *(_finite_or_text(optimizers[n]) for n in ("lstm", *BASELINES))])
    return rows


def _when(entry: dict) -> str:
    """The machine-dependent part of a caption: wall time, cores, load, date."""
    seconds = entry["wall_seconds"]
    wall = f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min"
    cores = entry["machine"]["cpu_count"]
    load = entry["load_average"]
    return (
        f"{wall} wall on a {cores}-core CPU whose load average was {load:.1f} as it started, "
        f"{entry['date'][:10]}; the time depends on the machine and its load"
    )


def _quadratic_caption(entry: dict) -> str:
    config = entry["config"]
    return (
        f"A run of `{entry['command']}` (seed {config['seed']}; {_when(entry)}): final loss "
        f"at step {config['horizon']}, mean over {config['num_eval_tasks']} held-out tasks; "
        f"the baselines' rates tuned on {config['num_tune_tasks']} other tasks."
    )


def _mlp_caption(entry: dict) -> str:
    config = entry["config"]
    return (
        f"A run of `{entry['command']}` (seed {config['seed']}; {_when(entry)}): mean "
        f"test-split loss over {config['num_eval_tasks']} runs at the last step; the "
        f"baselines' rates tuned on {config['num_tune_tasks']} runs on the validation split; "
        "in bold the best of each row."
    )


def _mlp_verdict(entry: dict) -> str:
    """Where the LSTM is best and where it is not, from the rows."""
    wins, losses = [], []
    for label, lstm, *baselines in entry["rows"]:
        finite = isinstance(lstm, float)
        best = finite and all(not isinstance(b, float) or lstm < b for b in baselines)
        (wins if best else losses).append(label)
    beaten = " and ".join(f'"{label}"' for label in losses)
    return f"Here the LSTM is the best of the five in {len(wins)} of {len(entry['rows'])} rows" + (
        f"; it is beaten in {beaten}." if losses else "."
    )


TABLES = {
    "demo-quadratic": Table(
        command="metaopt demo",
        columns=("optimizer", "final loss", "tuned learning rate"),
        rows=_quadratic_rows,
        caption=_quadratic_caption,
    ),
    "demo-mlp": Table(
        command="metaopt demo --task mlp",
        columns=("setting", "lstm", *BASELINES),
        rows=_mlp_rows,
        caption=_mlp_caption,
        verdict=_mlp_verdict,
    ),
}


def format_number(value: float) -> str:
    """Three significant digits, or two in scientific notation below 1e-3.

    Trailing zeros are kept, so the digits shown are the precision the README claims.
    """
    if value != 0 and abs(value) < 1e-3:
        mantissa, exponent = f"{value:.1e}".split("e")
        return f"{mantissa}e{int(exponent)}"
    return f"{value:#.3g}".rstrip(".")


def _cell(value: Any, bold: bool = False) -> str:
    if value is None:
        return "–"
    text = value if isinstance(value, str) else format_number(value)
    return f"**{text}**" if bold else text


def render(name: str, entry: dict) -> str:
    """The README region of table ``name``: caption, blank line, markdown table."""
    table = TABLES[name]
    caption = textwrap.fill(table.caption(entry), 88, break_on_hyphens=False)
    lines = [caption, "", "| " + " | ".join(entry["columns"]) + " |"]
    lines.append("| " + " | ".join("---" for _ in entry["columns"]) + " |")
    for label, *values in entry["rows"]:
        numbers = [v for v in values if isinstance(v, float)]
        # The MLP table marks each row's best; the quadratic one is sorted instead.
        best = min(numbers) if name == "demo-mlp" and numbers else None
        cells = [_cell(v, bold=v is not None and v == best) for v in values]
        lines.append("| " + " | ".join([label, *cells]) + " |")
    if table.verdict is not None:
        lines += ["", textwrap.fill(table.verdict(entry), 88, break_on_hyphens=False)]
    return "\n".join(lines)


def rewrite_readme(text: str, record: dict) -> str:
    """``text`` with every ``<!-- table:NAME -->`` region rendered from ``record``."""

    def replace(match: re.Match) -> str:
        name = match.group(1)
        if name not in record["tables"]:
            print(f"README region {name!r} has no entry in {RECORD.name} yet: left as it is")
            return match.group(0)
        return f"<!-- table:{name} -->\n{render(name, record['tables'][name])}\n<!-- /table -->"

    return re.sub(r"<!-- table:([\w-]+) -->\n.*?<!-- /table -->", replace, text, flags=re.S)


def _commit() -> str:
    """The commit the run's code is at, marked where src/ differs from it."""
    head = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.strip()
    dirty = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=no", "--", "src"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    return head + ("+uncommitted changes in src" if dirty else "")


def run_table(name: str) -> dict:
    """Runs table ``name``'s command in a temporary directory; returns its record entry."""
    from metaopt.evaluation.machine import machine

    table = TABLES[name]
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "out"
        argv = [*shlex.split(table.command)[1:], "--no-progress", "--out", str(out)]
        load, commit = os.getloadavg()[0], _commit()
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "metaopt", *argv], check=True)
        wall = time.perf_counter() - start
        results = json.loads((out / "results.json").read_text())
    return {
        "command": table.command,
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "commit": commit,
        "load_average": load,
        "wall_seconds": wall,
        "config": results["config"],
        "columns": list(table.columns),
        "rows": table.rows(results),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tables", nargs="+", choices=list(TABLES), default=list(TABLES))
    parser.add_argument(
        "--render-only", action="store_true", help="rewrite the README from the record alone"
    )
    args = parser.parse_args()
    record = json.loads(RECORD.read_text()) if RECORD.exists() else {"tables": {}}
    record["about"] = (
        "The numbers of the README's seeded tables, as scripts/readme_tables.py last ran "
        "them; wall_seconds and load_average belong to the machine, the rest to the code."
    )
    if not args.render_only:
        for name in args.tables:
            record["tables"][name] = run_table(name)
            RECORD.write_text(json.dumps(record, indent=2, ensure_ascii=False) + "\n")
            print(render(name, record["tables"][name]), end="\n\n")
    README.write_text(rewrite_readme(README.read_text(), record))
    print(f"wrote {RECORD.relative_to(ROOT)} and {README.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
