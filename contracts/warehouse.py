"""How the pipeline publishes the DuckDB file, as its readers need to know (design.md section 4).

Standard library only: the pipeline's writer (`pipeline/publishing.py`) and the gateway's
long-lived reader (`gateway/warehouse_reader.py`) agree here on the modes and on the writers'
lock file.
"""

from __future__ import annotations

from pathlib import Path

# DUCKDB_PUBLISH_MODE: swap renames a new file over the live one; alternate points the live
# name (a symbolic link) at the other of two files; inplace changes the live file itself.
PUBLISH_MODES = ("swap", "alternate", "inplace")
DEFAULT_PUBLISH_MODE = "swap"


def writer_lock_path(live: Path) -> Path:
    """The lock file the pipeline's writers take (the swaps go around DuckDB's own lock)."""
    return live.with_name(live.name + ".lock")
