"""Named points in the write paths where a test can kill the process (`PIPELINE_FAILPOINT`).

Crash safety is a claim about every point between two durable steps; the tests prove it by
setting `PIPELINE_FAILPOINT=<name>` and running the real CLI, which SIGKILLs itself there.
"""

import os
import signal


def failpoint(name: str) -> None:
    if os.environ.get("PIPELINE_FAILPOINT") == name:
        os.kill(os.getpid(), signal.SIGKILL)
