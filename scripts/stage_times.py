#!/usr/bin/env python
"""Run a `luigi` command and print where its wall time went, stage by stage, when it exits.

    .venv/bin/python scripts/stage_times.py --module pipeline RangeDaily --of DuckLoadDay ...

The arguments are the `luigi` command's own. Each stage is a function timed where the pipeline
calls it (wall clock, calls counted): luigid round trips, InfluxDB queries, each task's run and
the canonical transform and load inside them, and Luigi's scheduling. Stages nest (a task's run
holds its queries), so they do not add up to the total. `bench_backfill.py --stages` runs its
backfill through this.
"""

from __future__ import annotations

import atexit
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

STARTED = time.perf_counter()
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the pipeline of this checkout

import luigi.cmdline  # noqa: E402
import luigi.rpc  # noqa: E402
import luigi.worker  # noqa: E402

import pipeline.extract  # noqa: E402
import pipeline.tasks  # noqa: E402
import pipeline.transform  # noqa: E402

# (where it is looked up, its name there, what the line says)
STAGES: list[tuple[Any, str, str]] = [
    (luigi.worker.Worker, "add", "scheduling (Luigi's worker.add)"),
    (luigi.worker.Worker, "_get_work", "asking luigid for work"),
    (luigi.rpc.RemoteScheduler, "_request", "luigid round trips"),
    (pipeline.extract.InfluxSource, "_query", "InfluxDB queries"),
    (pipeline.extract.InfluxSource, "daily_field_counts", "  of them, per-day counts"),
    (pipeline.tasks.ExtractDay, "run", "ExtractDay.run"),
    (pipeline.tasks.ParquetDay, "run", "ParquetDay.run"),
    (pipeline.transform.CanonicalWriter, "write", "  canonical transform"),
    (pipeline.tasks.DuckLoadDay, "run", "DuckLoadDay.run"),
    (pipeline.tasks, "load_days", "  DuckDB load"),
]
seconds: defaultdict[str, float] = defaultdict(float)
calls: Counter[str] = Counter()


def timed(function: Callable[..., Any], label: str) -> Callable[..., Any]:
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return function(*args, **kwargs)
        finally:
            seconds[label] += time.perf_counter() - started
            calls[label] += 1

    return wrapper


@atexit.register
def report() -> None:
    print(f"stage times: total {time.perf_counter() - STARTED:.2f} s", file=sys.stderr)
    for _, _, label in STAGES:
        print(f"stage {label:34} {seconds[label]:8.2f} s {calls[label]:6} calls", file=sys.stderr)


def main() -> None:
    for owner, name, label in STAGES:
        setattr(owner, name, timed(getattr(owner, name), label))
    sys.argv = ["luigi", *sys.argv[1:]]
    luigi.cmdline.luigi_run()


if __name__ == "__main__":
    main()
