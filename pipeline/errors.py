"""Errors the pipeline expects and explains in one line (no traceback needed to act on them)."""

import errno
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import duckdb


class PipelineError(RuntimeError):
    """A failure with a cause the operator can act on: a server down, a lock held, bad input."""


class OneLineExpectedFailures(logging.Filter):
    """Drops the traceback Luigi's worker logs with a PipelineError: its one line says it all."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and isinstance(record.exc_info[1], PipelineError):
            record.exc_info, record.exc_text = None, None
        elif isinstance(record.msg, str) and _PIPELINE_ERROR_LINE in record.msg:
            # Luigi logs a failing complete() (e.g. the archive's store refusing the
            # credentials) as its message, a colon and the formatted traceback.
            head, _, trace = record.getMessage().partition("\n")
            cause = trace.rstrip().splitlines()[-1].removeprefix(_PIPELINE_ERROR_LINE)
            record.msg, record.args = f"{head.rstrip(':')}: {cause}", None
        return True


_PIPELINE_ERROR_LINE = f"{PipelineError.__module__}.{PipelineError.__qualname__}: "


@contextmanager
def disk_space_explained(target: Path) -> Iterator[None]:
    """Turn a full disk, whichever library hit it, into one line that says what to do."""
    try:
        yield
    except (OSError, duckdb.Error) as e:
        if getattr(e, "errno", None) not in (errno.ENOSPC, errno.EDQUOT) and (
            "No space left" not in str(e)
        ):
            raise
        raise PipelineError(
            f"No space left on device while writing {target}: nothing was replaced; "
            "free some space and rerun"
        ) from None


@contextmanager
def damage_explained(path: Path) -> Iterator[None]:
    """Turn DuckDB's report of a damaged file into one line that offers the way back."""
    try:
        yield
    except duckdb.Error as e:
        if not any(sign in str(e) for sign in _DAMAGE_SIGNS):
            raise
        raise PipelineError(
            f"DuckDB file {path} is damaged ({str(e).splitlines()[0][:120]}); restore the "
            "copy kept before the last publish with: python -m pipeline restore-prev"
        ) from None


# How DuckDB words a file whose bytes are wrong (checksums are verified on every block read).
_DAMAGE_SIGNS = ("Corrupt database file", "not a valid DuckDB database file")
