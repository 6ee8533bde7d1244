"""Operator commands: `rebuild` a day or a span of days."""

from __future__ import annotations

import argparse
from datetime import date, timedelta

from pipeline.partitions import PartitionTarget
from pipeline.tasks import LANDING_DATASET, dataset_dir


def rebuild(first: date, last: date) -> list[date]:
    """Flag the landing partitions of [first, last] so the next run extracts them again.

    The new extraction replaces each day whole, and the fingerprints make every stage after it
    rebuild that day. Until then the archived partition stays in place, so a failed
    re-extraction (InfluxDB down, data past its retention) loses nothing.
    """
    flagged = []
    day = first
    while day <= last:
        if PartitionTarget(dataset_dir(LANDING_DATASET), day).request_rebuild():
            flagged.append(day)
        day += timedelta(days=1)
    return flagged


def _cmd_rebuild(args: argparse.Namespace) -> int:
    flagged = rebuild(args.date, args.to or args.date)
    for day in flagged:
        print(f"{day}: flagged for rebuild")
    if not flagged:
        print("no archived day in that range; the next run extracts missing days anyway")
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m pipeline")
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("rebuild", help="force archived days to be extracted and loaded again")
    r.add_argument("--date", type=date.fromisoformat, required=True, help="first day, YYYY-MM-DD")
    r.add_argument("--to", type=date.fromisoformat, help="last day, inclusive (default --date)")
    r.set_defaults(run=_cmd_rebuild)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    return args.run(args)
