"""Named points in the write paths where a test can kill the process (`PIPELINE_FAILPOINT`).

Crash safety is a claim about every point between two durable steps; the tests prove it by
setting `PIPELINE_FAILPOINT=<name>` and running the real CLI, which SIGKILLs itself there.
`PIPELINE_FAILPOINT=<name>:pause=<seconds>` holds the process there instead, so a test can run
a second writer at exactly that moment.
"""

import os
import signal
import time


def failpoint(name: str) -> None:
    point, _, action = os.environ.get("PIPELINE_FAILPOINT", "").partition(":")
    if point != name:
        return
    if action.startswith("pause="):
        time.sleep(float(action.removeprefix("pause=")))
    else:
        os.kill(os.getpid(), signal.SIGKILL)
