"""`python -m scheduler`: luigid with the batched task history (scheduler/history.py), cheap
pending counts (scheduler/counting.py) and its `[cors]` settings read once.

The options are luigid's, but for `--background`: the deployment's supervisor (compose,
systemd) keeps it running. With `[scheduler] record_task_history` false it records no history,
as luigid.
"""

from __future__ import annotations

import argparse
import atexit
import sys

import luigi.configuration
import luigi.scheduler
import luigi.server
import tornado.ioloop
from luigi.setup_logging import DaemonLogging

from scheduler.counting import PendingCountScheduler
from scheduler.history import WRITE_EVERY_S, BatchedTaskHistory


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m scheduler", description="Luigi's central scheduler (luigid)"
    )
    parser.add_argument(
        "--address",
        default="127.0.0.1",  # luigid's default is every interface
        help="listening interface (default 127.0.0.1; 0.0.0.0 for every interface)",
    )
    parser.add_argument("--port", type=int, default=8082, help="listening port")
    parser.add_argument("--unix-socket", help="listen on this Unix socket instead")
    parser.add_argument("--state-path", help="the pickled scheduler state, kept across restarts")
    parser.add_argument("--logdir", help="write luigi-server.log here instead of stderr")
    opts = parser.parse_args(argv)
    opts.background = False  # what DaemonLogging reads besides logdir
    return opts


def scheduler_with_history() -> luigi.scheduler.Scheduler:
    """The scheduler luigid would build, its pending counts cheap and its history (if one is
    recorded) batched."""
    if not luigi.scheduler.scheduler().record_task_history:
        return PendingCountScheduler()
    history = BatchedTaskHistory()
    tornado.ioloop.PeriodicCallback(history.write_queued, WRITE_EVERY_S * 1000).start()
    atexit.register(history.write_queued)  # luigid exits through sys.exit on SIGTERM
    return PendingCountScheduler(task_history_impl=history)


def read_cors_settings_once() -> None:
    """Luigi's API handler builds a new `[cors]` Config object for every request, reading its
    seven options from the configuration each time: a year's backfill spent 5.4 s in its 2,020
    round trips with it and 4.5 s without. luigid reads its configuration once, at start, so
    one object serves them all."""
    settings = luigi.server.cors()
    luigi.server.cors = lambda: settings  # type: ignore[assignment,misc]


def main(argv: list[str]) -> None:
    opts = parse_args(argv)
    read_cors_settings_once()
    if opts.state_path:
        luigi.configuration.get_config().set("scheduler", "state_path", opts.state_path)
    DaemonLogging.setup(opts)
    luigi.server.run(
        api_port=opts.port,
        address=opts.address,
        unix_socket=opts.unix_socket,
        scheduler=scheduler_with_history(),
    )


if __name__ == "__main__":
    main(sys.argv[1:])
