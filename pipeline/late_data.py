"""Late and lost data: what InfluxDB holds now against what the archive holds for a day.

A day gains readings when an edge replays its outbox after an outage; the archived day is then
extracted again. A source that holds fewer readings than the archive (retention, a wrong
database) must never replace it without the user asking (`python -m pipeline rebuild`).
"""

from __future__ import annotations

from datetime import date, timedelta

import luigi

from contracts.message import MEASUREMENT_FIELDS
from pipeline.config import calendar, late_data
from pipeline.days import LocalDateParameter, local_today
from pipeline.errors import PipelineError
from pipeline.partitions import PartitionTarget
from pipeline.task_base import LANDING_DATASET, dataset_dir, influx_source, logger


class SourceCoversArchive(luigi.ExternalTask):
    """InfluxDB still holds at least the readings archived for the day (or none are archived).

    The archive outlives the source: a day re-extracted after retention deleted it, or from a
    misconfigured source, must not replace the archive with less. While this is incomplete,
    ExtractDay does not run and the command exits with the missing-data code (3).
    """

    date = LocalDateParameter(description="local day YYYY-MM-DD; default yesterday")

    def complete(self) -> bool:
        archive = PartitionTarget(dataset_dir(LANDING_DATASET), self.date)
        if not guards(archive):
            return True
        try:
            counts = influx_source().daily_field_counts(self.date, self.date, calendar().zone)
        except PipelineError:
            return True  # the extraction itself reports the server's failure in one line
        kept = archive_kept(archive, counts.get(self.date, dict.fromkeys(MEASUREMENT_FIELDS, 0)))
        if kept:
            logger.error(kept)
        return kept is None


def guards(archive: PartitionTarget) -> bool:
    """Whether an extraction must not replace the day with fewer values: it is archived, and
    the user has not accepted fewer (`rebuild --accept-fewer`)."""
    return archive.archived() and not archive.accepts_fewer()


def archive_kept(archive: PartitionTarget, new_counts: dict[str, int]) -> str | None:
    """Why a guarded archive is kept against an extraction holding `new_counts` values per
    field, or None when that extraction holds at least as many.

    Values (readings times the fields each carries) rather than rows, because InfluxDB counts
    per field; a source that gained readings while losing a few still replaces the day.
    """
    new = sum(new_counts.values())
    archived = sum(archive.manifest().get("field_counts", {}).values())
    if new >= archived:
        return None
    day = archive.day
    return (
        f"{day}: the source holds fewer values than the archive ({new:,} < {archived:,}); the "
        f"archive is kept. To replace it anyway: python -m pipeline rebuild --date {day} "
        f"--accept-fewer; to keep it and stop asking: python -m pipeline rebuild --date {day} "
        "--cancel"
    )


def gained_in_source(days: list[date]) -> set[date]:
    """Archived days inside the late-data lookback that gained readings in InfluxDB since.

    One aggregate query covers the whole lookback. Only gains count: edges replay, they never
    delete, and a source that lost readings (retention, a restored server) must not shrink the
    archive. Removals and values rewritten in place take an explicit `rebuild`.
    """
    zone = calendar().zone
    oldest = local_today(zone) - timedelta(days=late_data().lookback_days)
    recent = sorted(d for d in days if d >= oldest)
    if not recent:
        return set()
    try:
        counts = influx_source().daily_field_counts(recent[0], recent[-1], zone)
    except PipelineError as e:
        logger.warning("late data not checked for %s..%s: %s", recent[0], recent[-1], e)
        return set()
    archived = dataset_dir(LANDING_DATASET).manifests(recent)
    nothing = dict.fromkeys(MEASUREMENT_FIELDS, 0)
    return {d for d in recent if _gained(counts.get(d, nothing), archived[d]["field_counts"])}


def _gained(source: dict[str, int], archived: dict[str, int]) -> bool:
    return any(source[name] > archived.get(name, 0) for name in MEASUREMENT_FIELDS)
