"""The daily report: `ReportDay(date)` writes the page of a day as one self-contained HTML file.

`<reports>/daily/YYYY-MM-DD.html` holds every source's day; `<reports>/period/<source>/<start>.html`
the billing period holding that day, rewritten each day while the period is open. The numbers
come from gateway.insights and the charts from gateway.charts, the page's own modules; the charts
are rendered to inline SVG with vl-convert, so a report needs no other file and no network.

Each file is written atomically (a temporary file in the same folder, fsync, rename), and says
which build of the warehouse it comes from (the day's DbtBuild marker): the report is complete
while that build is current, and a rebuild of the day writes it again. E-mail is optional
(`[report_email]`); the password (`REPORT_SMTP_PASSWORD`) belongs in the environment and is
never logged.
"""

from __future__ import annotations

import fcntl
import logging
import os
import re
import smtplib
import ssl
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import date, timedelta
from email.message import EmailMessage
from pathlib import Path

import duckdb
import luigi

from gateway import insights
from gateway.warehouse_reader import WarehouseReader, WarehouseUnavailable
from pipeline.config import report, report_email, storage
from pipeline.days import LocalDateParameter
from pipeline.errors import PipelineError
from pipeline.failpoints import failpoint
from pipeline.forecast_task import ForecastDay
from pipeline.markers import marker_ids, read_markers
from pipeline.partitions import fsync_path
from pipeline.task_base import PipelineTask, warehouse_file
from pipeline.tasks import DbtBuild

logger = logging.getLogger("luigi-interface")

# The report shows the forecast, so it waits for it (and so for the marts before it).
UPSTREAM = ForecastDay

# A report being written; one a killed writer left is removed by the next writer.
TEMP_PREFIX = ".writing-"
BUILT_FROM = re.compile(r'<meta name="built-from" content="([^"]*)">')


class ReportTarget(luigi.Target):
    """A report file, current while it was built from the warehouse build `built_from`."""

    def __init__(self, path: Path, built_from: str | None) -> None:
        self.path = path
        self.built_from = built_from

    def exists(self) -> bool:
        if self.built_from is None or not self.path.is_file():
            return False
        with self.path.open(encoding="utf-8", errors="replace") as f:
            found = BUILT_FROM.search(f.read(2048))
        return bool(found) and found.group(1) == self.built_from


class ReportDay(PipelineTask):
    """The day's report (and its billing periods'), after the day's marts are built."""

    date = LocalDateParameter(description="local day YYYY-MM-DD; default yesterday")
    priority = -10

    def requires(self) -> luigi.Task:
        return UPSTREAM(date=self.date)

    def output(self) -> ReportTarget:
        return ReportTarget(daily_path(self.date), dbt_builds([self.date])[self.date])

    def run(self) -> None:
        build = dbt_builds([self.date])[self.date]
        if build is None:
            raise PipelineError(f"no dbt build of {self.date} in the warehouse; run DbtBuild first")
        store = storage()
        reader = WarehouseReader(warehouse_file(), store.publish_mode)
        try:
            with reader.cursor() as con:
                days = [
                    insights.overview(con, source, self.date) for source in insights.sources(con)
                ]
                periods = [
                    (day, period_days(con, day["source"], day["billing"]))
                    for day in days
                    if day["billing"]
                ]
        except WarehouseUnavailable as exc:
            raise PipelineError(f"cannot read {warehouse_file()}: {exc}") from None
        finally:
            reader.close()
        from pipeline import report_html  # Altair and vl-convert: only when writing a report

        with writing_reports(reports_root()):
            for day, rows in periods:
                path = period_path(day["source"], day["billing"]["period_start"])
                write_atomically(path, report_html.period(day, rows, build))
            daily = report_html.daily(self.date, days, build)
            send_report(self.date, daily, days)
            write_atomically(daily_path(self.date), daily)
        self.report(1.0, f"report for {self.date}: {len(days)} source(s)")

    @classmethod
    def bulk_complete(cls, parameter_tuples: Iterable[date]) -> list[date]:
        days = list(parameter_tuples)
        builds = dbt_builds(days)
        return [d for d in days if ReportTarget(daily_path(d), builds[d]).exists()]


def reports_root() -> Path:
    return Path(report().folder)


def daily_path(day: date) -> Path:
    return reports_root() / "daily" / f"{day.isoformat()}.html"


def period_path(source: str, start: str) -> Path:
    return reports_root() / "period" / source / f"{start}.html"


def dbt_builds(days: list[date]) -> dict[date, str | None]:
    """Each day's DbtBuild marker fingerprint (one query): a rebuild of the day changes it."""
    family = DbtBuild.get_task_family()
    markers = read_markers(warehouse_file(), f"{family}(")
    return {day: markers.get(update_id) for day, update_id in marker_ids(family, days).items()}


def period_days(con: duckdb.DuckDBPyConnection, source: str, period: dict) -> list[dict]:
    last = date.fromisoformat(period["period_end"]) - timedelta(days=1)
    return insights.days_between(con, source, period["period_start"], last)


@contextmanager
def writing_reports(root: Path) -> Iterator[None]:
    """One report writer at a time; it first removes what killed writers left behind."""
    root.mkdir(parents=True, exist_ok=True)
    with (root / ".lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # reports take seconds: wait for the other writer
        for leftover in root.glob(f"**/{TEMP_PREFIX}*"):
            leftover.unlink(missing_ok=True)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def write_atomically(path: Path, text: str) -> None:
    """Temporary file in the same folder, fsync, rename, fsync the folder: whole or absent."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(prefix=f"{TEMP_PREFIX}{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(temp, 0o644)
        failpoint("report.before_rename")
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
    fsync_path(path.parent)


# --- e-mail -----------------------------------------------------------------------------------


def send_report(day: date, body_html: str, days: list[dict]) -> None:
    settings = report_email()
    if not settings.enabled:
        return
    from pipeline import report_html

    message = EmailMessage()
    message["Subject"] = f"Home energy, {day.isoformat()}"
    message["From"] = settings.sender or f"home-energy@{settings.smtp_host}"
    message["To"] = settings.recipients
    message.set_content(
        "\n".join(
            f"{d['source']}: {report_html.kwh(d['day']['energy_kwh'])}, "
            f"{report_html.yen(d['day']['cost_yen'])}"
            for d in days
            if d["day"]
        )
        or "No data for this day."
    )
    message.add_alternative(body_html, subtype="html")
    try:
        with _smtp(settings) as smtp:
            if settings.username:
                smtp.login(settings.username, settings.password)
            smtp.send_message(message)
    except (OSError, smtplib.SMTPException) as exc:
        # The exception text is the server's answer: it never holds the password we sent.
        raise PipelineError(
            f"the report for {day} was not e-mailed through "
            f"{settings.smtp_host}:{settings.smtp_port}: {str(exc)[:200]}"
        ) from None
    logger.info("report for %s e-mailed to %s", day, settings.recipients)


def _smtp(settings: report_email) -> smtplib.SMTP:
    host, port, timeout = settings.smtp_host, settings.smtp_port, settings.timeout_s
    if settings.security == "ssl":
        return smtplib.SMTP_SSL(host, port, timeout=timeout, context=ssl.create_default_context())
    smtp = smtplib.SMTP(host, port, timeout=timeout)
    if settings.security == "starttls":
        try:
            smtp.starttls(context=ssl.create_default_context())
        except BaseException:
            smtp.close()
            raise
    return smtp
