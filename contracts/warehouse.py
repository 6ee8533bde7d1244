"""The DuckDB file's writers' lock, as its readers need to know it (design.md section 4).

Standard library only: the pipeline's writer (`pipeline/publishing.py`) and the gateway's
reader (`gateway/warehouse_reader.py`, inplace mode) agree here on the lock file the writers
take (their renames go around DuckDB's own lock). The publish modes are settings
(`contracts.settings.PUBLISH_MODES`).
"""

from __future__ import annotations

from pathlib import Path


def writer_lock_path(live: Path) -> Path:
    """The lock file the pipeline's writers take."""
    return live.with_name(live.name + ".lock")
