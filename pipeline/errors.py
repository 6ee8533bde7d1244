"""Errors the pipeline expects and explains in one line (no traceback needed to act on them)."""


class PipelineError(RuntimeError):
    """A failure with a cause the operator can act on: a server down, a lock held, bad input."""
