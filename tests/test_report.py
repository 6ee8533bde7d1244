"""ReportDay: self-contained HTML per day and per billing period, atomic and idempotent, e-mailed
through a real SMTP server (aiosmtpd) when configured.

The warehouse is the real pipeline's (ExtractDay .. DbtBuild from a real influxd, so the day has
a real DbtBuild marker); the insights tables are added by devstack.sample_warehouse, published
the same way, until the dbt marts and ForecastDay that build them are merged.
"""

from __future__ import annotations

import email
import logging
import re
from datetime import date, timedelta
from email import policy
from pathlib import Path

import duckdb
import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from conftest import quarter_hour_lines

from devstack.sample_warehouse import publish_sample_warehouse
from devstack.servers import free_port
from pipeline.reports import ReportDay, ReportTarget
from pipeline.tasks import DbtBuild

D = date(2025, 12, 16)
SMTP_PASSWORD = "smtp-secret-7f3a"


@pytest.fixture
def warehouse(pipeline_env, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    pipeline_env.write(quarter_hour_lines(D, count=97))  # and the midnight after
    assert pipeline_env.build(DbtBuild(date=D))
    publish_sample_warehouse(pipeline_env.duckdb, ["meter1", "meter2"], D - timedelta(days=60), D)
    monkeypatch.setenv("REPORTS_DIR", str(tmp_path / "reports"))
    return pipeline_env


def daily_file(tmp_path: Path) -> Path:
    return tmp_path / "reports" / "daily" / f"{D}.html"


def test_report_day_is_self_contained_atomic_and_idempotent(warehouse, tmp_path: Path) -> None:
    assert warehouse.build(ReportDay(date=D))
    daily = daily_file(tmp_path)
    period = tmp_path / "reports" / "period" / "meter1" / "2025-12-01.html"
    text = daily.read_text()
    assert period.is_file() and (tmp_path / "reports" / "period" / "meter2").is_dir()
    # Self-contained: charts inline, nothing fetched from anywhere.
    assert not re.search(r"<script|<link|<img|src=|url\(", text)
    assert text.count("<svg") == 6  # three charts for each of the two sources
    assert period.read_text().count("<svg") == 1
    # The numbers are DuckDB's.
    with duckdb.connect(str(warehouse.duckdb), read_only=True) as con:
        for source in ("meter1", "meter2"):
            kwh, cost = con.execute(
                "select energy_kwh, cost_yen from fct_daily_cost where source = ? and date_jst = ?",
                [source, D],
            ).fetchone()
            assert f"{kwh:.2f} kWh" in text and f"¥{int(cost + 0.5):,}" in text
        reasons = con.execute(
            "select reason from fct_energy_findings where date_jst > ? and date_jst <= ?",
            [D - timedelta(days=7), D],
        ).fetchall()
    assert reasons and all(r.replace("'", "&#x27;") in text for (r,) in reasons)
    assert not [p.name for p in daily.parent.iterdir() if p.name.startswith(".")]  # no temp file

    # A rerun finds it complete and leaves it alone; written again, it is the same bytes.
    assert ReportDay(date=D).complete() and ReportDay.bulk_complete(iter([D])) == [D]
    mtime = daily.stat().st_mtime_ns
    assert warehouse.build(ReportDay(date=D))
    assert daily.stat().st_mtime_ns == mtime
    daily.unlink()
    assert warehouse.build(ReportDay(date=D))
    assert daily.read_text() == text


def test_killed_while_writing_a_report_then_rerun(warehouse, tmp_path: Path) -> None:
    env = {"REPORTS_DIR": str(tmp_path / "reports")}
    killed = warehouse.cli(
        "ReportDay",
        "--date",
        str(D),
        "--local-scheduler",
        extra_env={**env, "PIPELINE_FAILPOINT": "report.before_rename"},
    )
    assert killed.returncode == -9
    folder = tmp_path / "reports" / "period" / "meter1"
    (left,) = folder.iterdir()  # the first file's temporary copy, never half a report
    assert left.name.startswith(".writing-2025-12-01.html.")
    assert not daily_file(tmp_path).exists()
    rerun = warehouse.cli("ReportDay", "--date", str(D), "--local-scheduler", extra_env=env)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert "<svg" in daily_file(tmp_path).read_text()
    assert [p.name for p in folder.iterdir()] == ["2025-12-01.html"]  # the leftover is gone
    assert (folder / "2025-12-01.html").read_text().endswith("</html>\n")


def test_a_report_of_another_build_is_not_current(tmp_path: Path) -> None:
    path = tmp_path / "r.html"
    path.write_text('<!doctype html><meta name="built-from" content="abc">')
    assert ReportTarget(path, "abc").exists()
    assert not ReportTarget(path, "def").exists()  # the day was rebuilt since
    assert not ReportTarget(path, None).exists()  # the day has no build at all
    assert not ReportTarget(tmp_path / "missing.html", "abc").exists()


class Mailbox:
    def __init__(self) -> None:
        self.messages: list[email.message.EmailMessage] = []
        self.logins: list[tuple[bytes, bytes]] = []

    async def handle_DATA(self, server, session, envelope) -> str:
        self.messages.append(email.message_from_bytes(envelope.content, policy=policy.default))
        return "250 OK"

    def authenticate(self, server, session, envelope, mechanism, auth_data) -> AuthResult:
        assert isinstance(auth_data, LoginPassword)
        self.logins.append((auth_data.login, auth_data.password))
        return AuthResult(success=auth_data.password == SMTP_PASSWORD.encode())


def test_report_is_emailed_when_configured_and_the_password_never_logged(
    warehouse, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    mailbox = Mailbox()
    port = free_port()
    smtp = Controller(
        mailbox,
        hostname="127.0.0.1",
        port=port,
        authenticator=mailbox.authenticate,
        auth_require_tls=False,  # a loopback test server without a certificate
    )
    smtp.start()
    try:
        for name, value in {
            "REPORT_SMTP_HOST": "127.0.0.1",
            "REPORT_SMTP_PORT": str(port),
            "REPORT_SMTP_SECURITY": "none",
            "REPORT_SMTP_USERNAME": "reporter",
            "REPORT_SMTP_PASSWORD": SMTP_PASSWORD,
            "REPORT_EMAIL_FROM": "energy@home.test",
            "REPORT_EMAIL_TO": "family@home.test",
        }.items():
            monkeypatch.setenv(name, value)
        caplog.set_level(logging.DEBUG)
        assert warehouse.build(ReportDay(date=D))
    finally:
        smtp.stop()
    assert mailbox.logins == [(b"reporter", SMTP_PASSWORD.encode())]
    (message,) = mailbox.messages
    assert message["Subject"] == f"Home energy, {D}" and message["To"] == "family@home.test"
    body = message.get_body(("html",)).get_content().replace("\r\n", "\n")  # SMTP lines
    assert body == daily_file(tmp_path).read_text()
    assert "meter1:" in message.get_body(("plain",)).get_content()
    assert SMTP_PASSWORD not in caplog.text


def test_an_smtp_failure_fails_the_task_in_one_line_and_writes_no_daily_file(
    warehouse, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("REPORT_SMTP_HOST", "127.0.0.1")
    monkeypatch.setenv("REPORT_SMTP_PORT", str(free_port()))  # nobody listens
    monkeypatch.setenv("REPORT_SMTP_SECURITY", "none")
    monkeypatch.setenv("REPORT_EMAIL_TO", "family@home.test")
    assert not warehouse.build(ReportDay(date=D))
    assert "was not e-mailed through 127.0.0.1" in caplog.text
    assert not daily_file(tmp_path).exists()  # so the next run sends it again
