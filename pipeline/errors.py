"""Errors the pipeline expects and explains in one line (no traceback needed to act on them)."""

import errno
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


class PipelineError(RuntimeError):
    """A failure with a cause the operator can act on: a server down, a lock held, bad input."""


@contextmanager
def disk_space_explained(target: Path) -> Iterator[None]:
    """Turn a full disk, whichever library hit it, into one line that says what to do."""
    try:
        yield
    except OSError as e:
        if e.errno not in (errno.ENOSPC, errno.EDQUOT) and "No space left" not in str(e):
            raise
        raise PipelineError(
            f"No space left on device while writing {target}: nothing was replaced; "
            "free some space and rerun"
        ) from None
