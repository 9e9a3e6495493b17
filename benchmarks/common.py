"""Shared helpers for the benchmark scripts: timing after block_until_ready, JSON output."""

import json
import os
import time
from datetime import UTC, datetime
from pathlib import Path

import jax

from metaopt.demo import machine

RESULTS = Path(__file__).resolve().parent / "results"


def timed(fn, *args, repeats: int):
    """Seconds per call of ``fn(*args)``, measured after ``block_until_ready``."""
    jax.block_until_ready(fn(*args))
    start = time.perf_counter()
    for _ in range(repeats):
        out = fn(*args)
    jax.block_until_ready(out)
    return (time.perf_counter() - start) / repeats


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
