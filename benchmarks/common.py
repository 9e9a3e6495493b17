"""Shared helpers for the benchmark scripts: timing after block_until_ready, JSON output."""

import json
import os
import resource
import time
from datetime import UTC, datetime
from pathlib import Path

import jax

from metaopt.evaluation.machine import machine

RESULTS = Path(__file__).resolve().parent / "results"


def timed(fn, *args, repeats: int) -> float:
    """Seconds per call of ``fn(*args)``, measured after ``block_until_ready``."""
    return cpu_usage(fn, *args, repeats=repeats)["wall_seconds"]


def cpu_usage(fn, *args, repeats: int) -> dict[str, float]:
    """Per call of ``fn(*args)``: wall, user and system CPU seconds, and minor page faults.

    System time and page faults show how much of a step goes to the kernel mapping
    fresh memory for the program's buffers rather than to computing.
    """
    jax.block_until_ready(fn(*args))
    before, start = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    for _ in range(repeats):
        out = fn(*args)
    jax.block_until_ready(out)
    wall, after = time.perf_counter() - start, resource.getrusage(resource.RUSAGE_SELF)
    return {
        "wall_seconds": wall / repeats,
        "user_cpu_seconds": (after.ru_utime - before.ru_utime) / repeats,
        "system_cpu_seconds": (after.ru_stime - before.ru_stime) / repeats,
        "minor_page_faults": (after.ru_minflt - before.ru_minflt) / repeats,
    }


def write(name: str, record: dict) -> Path:
    RESULTS.mkdir(exist_ok=True)
    stamp = datetime.now(UTC)
    record = {
        "benchmark": name,
        "date": stamp.isoformat(timespec="seconds"),
        "machine": machine(),
        **record,
    }
    path = RESULTS / f"{name}-{stamp.strftime('%Y%m%dT%H%M%S')}.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(record, indent=2) + "\n")
    os.replace(tmp, path)
    return path
