"""Settings as `luigi.Config` classes, read from luigi.cfg and overridden by the environment.

Precedence, highest first: the command line (`--influx-url ...`), the environment variable of the
contract (`INFLUX_URL`), luigi.cfg, the default here. The environment hook sits where Luigi reads
a parameter's config value, so everything else (parsing, visibility, the CLI) stays Luigi's.
A value that cannot be parsed stops the run with one line and exit code 2, as a bad flag does:
Luigi would otherwise wrap it in a traceback, or in the failure of whichever task read it first.
"""

from __future__ import annotations

import functools
import os
import sys
from pathlib import Path
from typing import Any, NoReturn
from zoneinfo import ZoneInfo

import luigi
from luigi.cmdline_parser import CmdlineParser
from luigi.parameter import ParameterVisibility
from luigi.task_register import Register

from contracts.homeassistant import DISCOVERY_PREFIX
from contracts.influx import InfluxSettings
from contracts.message import DEFAULT_SOURCE
from contracts.mqtt import MqttSettings
from contracts.settings import (
    DUCKDB_PATH_DEFAULT,
    PUBLISH_MODES,
    REPORTS_DIR_DEFAULT,
    TZ_DEFAULT,
    SettingError,
    parse_bool,
    parse_choice,
    parse_float,
    parse_int,
    parse_zone,
)
from pipeline.errors import PipelineError


def refuse(message: str) -> NoReturn:
    """Stop the process: a setting is wrong, and no task can run right with it."""
    print(f"pipeline: bad configuration: {message}", file=sys.stderr, flush=True)
    raise SystemExit(2)


class _EnvOverride:
    """Mixin for a Luigi parameter whose config value an environment variable overrides.

    `env` names the variable, or several, the first one set winning (AWS_REGION before
    AWS_DEFAULT_REGION). A value the parameter cannot parse, from the environment, luigi.cfg or
    a flag, is refused in one line naming where it came from and the value.
    """

    def __init__(self, *args: object, env: str | tuple[str, ...], **kwargs: object) -> None:
        self.env = (env,) if isinstance(env, str) else env
        super().__init__(*args, **kwargs)

    def _get_value_from_config(self, section: str, name: str) -> object:
        for variable in self.env:
            value = os.environ.get(variable)
            if value:
                return self._parsed(variable, value)
        try:
            return super()._get_value_from_config(section, name)  # type: ignore[misc]
        except ValueError:  # parse it again to say why, in the contract's words
            raw = luigi.configuration.get_config().get(section, name)
            self._parsed(f"luigi.cfg [{section}] {name}", raw)
            raise

    def _get_value(self, task_name: str, param_name: str) -> object:
        try:
            return super()._get_value(task_name, param_name)  # type: ignore[misc]
        except ValueError:  # only a flag is left unchecked: parse it again to say why
            parser = CmdlineParser.get_instance()
            if parser is None:
                raise
            flag = f"--{task_name}-{param_name}".replace("_", "-")
            dest = self._parser_global_dest(param_name, task_name)  # type: ignore[attr-defined]
            self._parsed(flag, str(getattr(parser.known_args, dest)))
            raise

    def _parsed(self, variable: str, value: str) -> object:
        try:
            return self.parse_variable(variable, value)
        except SettingError as e:
            refuse(str(e))

    def parse_variable(self, variable: str, value: str) -> object:
        """The value of an environment variable, parsed as contracts.settings parses it."""
        return value


class EnvParameter(_EnvOverride, luigi.Parameter):
    pass


class EnvIntParameter(_EnvOverride, luigi.IntParameter):
    def parse_variable(self, variable: str, value: str) -> int:
        return parse_int(variable, value)


class EnvFloatParameter(_EnvOverride, luigi.FloatParameter):
    def parse_variable(self, variable: str, value: str) -> float:
        return parse_float(variable, value)


class EnvBoolParameter(_EnvOverride, luigi.BoolParameter):
    def parse_variable(self, variable: str, value: str) -> bool:
        return parse_bool(variable, value)


class EnvChoiceParameter(_EnvOverride, luigi.ChoiceParameter):
    def parse_variable(self, variable: str, value: str) -> str:
        return parse_choice(variable, value, sorted(self._choices))  # Luigi keeps a set


_PRIVATE = ParameterVisibility.PRIVATE


class ReadOnce(Register):
    """Luigi's metaclass for a settings section that a process reads once, not on every call.

    Luigi resolves every parameter of a Config each time one is made (the command line, the
    environment, luigi.cfg: about a millisecond), before it even looks in its instance cache; a
    year's backfill asks for its settings thousands of times. A section made without arguments
    is kept and made again only when what it reads changes: another command line being parsed,
    one of its environment variables, or Luigi's instance cache being cleared.
    """

    def __call__(cls, *args: Any, **kwargs: Any) -> Any:
        if args or kwargs:
            return super().__call__(*args, **kwargs)
        read_from = (
            CmdlineParser.get_instance(),
            Register._Register__instance_cache,  # type: ignore[attr-defined]
            [os.environ.get(name) for name in _variables(cls)],
        )
        kept = _sections.get(cls)
        if kept is None or not _same_sources(kept[0], read_from):
            kept = _sections[cls] = (read_from, super().__call__())
        return kept[1]


@functools.cache
def _variables(section: type[luigi.Config]) -> tuple[str, ...]:
    return tuple(name for _, param in section.get_params() for name in param.env)


def _same_sources(a: tuple[object, object, list], b: tuple[object, object, list]) -> bool:
    # The parser and the cache by identity (the kept tuple keeps them alive), the values by value.
    return a[0] is b[0] and a[1] is b[1] and a[2] == b[2]


_sections: dict[type, tuple[tuple[object, object, list], Any]] = {}


class Section(luigi.Config, metaclass=ReadOnce):
    """A settings section, read once per process (ReadOnce)."""


# Luigi names a config section after its class, hence the lowercase names ([influx], ...).
class influx(Section):
    url = EnvParameter(
        env="INFLUX_URL", default=InfluxSettings.url, description="InfluxDB base URL"
    )
    bucket = EnvParameter(
        env="INFLUX_BUCKET", default=InfluxSettings.database, description="v1 database or v2 bucket"
    )
    measurement = EnvParameter(
        env="INFLUX_MEASUREMENT",
        default=InfluxSettings.measurement,
        description="measurement holding readings",
    )
    token = EnvParameter(
        env="INFLUX_TOKEN",
        default="",
        visibility=_PRIVATE,
        significant=False,
        description="InfluxDB 2 token for the v1 compatibility API (sent as 'Token ...')",
    )
    username = EnvParameter(
        env="INFLUX_USERNAME", default="", significant=False, description="InfluxDB 1.x user"
    )
    password = EnvParameter(
        env="INFLUX_PASSWORD",
        default="",
        visibility=_PRIVATE,
        significant=False,
        description="InfluxDB 1.x password",
    )
    timeout_s = EnvFloatParameter(
        env="INFLUX_TIMEOUT_S",
        default=InfluxSettings.timeout_s,
        description="seconds before a query gives up",
    )
    verify_ssl = EnvBoolParameter(
        env="INFLUX_VERIFY_SSL",
        default=InfluxSettings.verify_ssl,
        parsing=luigi.BoolParameter.EXPLICIT_PARSING,
        description="verify the server certificate for https URLs",
    )
    window_rows = EnvIntParameter(
        env="INFLUX_WINDOW_ROWS",
        default=200_000,
        description="a day is queried in windows expected to hold at most this many readings, "
        "which bounds memory (a larger day is counted, then cut by its count)",
    )
    compress_answers = EnvBoolParameter(
        env="INFLUX_COMPRESS_ANSWERS",
        default=False,
        parsing=luigi.BoolParameter.EXPLICIT_PARSING,
        description="ask InfluxDB to gzip its answers: worth it over a link slower than about "
        "150 Mbit/s (Wi-Fi, 100 Mbit/s Ethernet); on one machine or a gigabit LAN, compressing "
        "takes longer than sending",
    )

    def settings(self) -> InfluxSettings:
        return InfluxSettings(
            url=self.url,
            database=self.bucket,
            measurement=self.measurement,
            token=self.token or None,
            username=self.username or None,
            password=self.password or None,
            timeout_s=self.timeout_s,
            verify_ssl=self.verify_ssl,
        )


class storage(Section):
    parquet_base_dir = EnvParameter(
        env="PARQUET_BASE_DIR",
        default="data/parquet",
        description="root of the Parquet datasets: a folder, or s3://bucket/prefix",
    )
    s3_endpoint_url = EnvParameter(
        env="S3_ENDPOINT_URL",
        default="",
        description="an S3-compatible server (http://host:port) for s3:// datasets; empty for "
        "AWS itself (credentials and region come from the AWS variables or profile)",
    )
    s3_region = EnvParameter(
        env=("AWS_REGION", "AWS_DEFAULT_REGION"),
        default="",
        description="region of the s3:// datasets' bucket; empty: the AWS SDK's own lookup",
    )
    attempt_grace_s = EnvFloatParameter(
        env="PARQUET_ATTEMPT_GRACE_S",
        default=3600.0,
        description="on object storage, seconds before an attempt no manifest names (a crashed "
        "or a replaced one) is deleted; readers of a replaced partition finish within it",
    )
    parquet_compression = EnvChoiceParameter(
        env="PARQUET_COMPRESSION",
        default="zstd",
        choices=["zstd", "snappy", "gzip", "lz4", "uncompressed"],
        description="Parquet codec",
    )
    parquet_row_group_size = EnvIntParameter(
        env="PARQUET_ROW_GROUP_SIZE", default=122_880, description="rows per Parquet row group"
    )
    duckdb_path = EnvParameter(
        env="DUCKDB_PATH",
        default=DUCKDB_PATH_DEFAULT,
        description="the live DuckDB file readers open",
    )
    publish_mode = EnvChoiceParameter(
        env="DUCKDB_PUBLISH_MODE",
        default=PUBLISH_MODES[0],
        choices=PUBLISH_MODES,
        description="swap: work on home_energy.next.duckdb copied from the live file and rename "
        "it in (readers keep the old file; each publish copies the history); alternate: two "
        "files take turns behind a symbolic link, each publish copies only what changed; "
        "inplace: one transaction in the live file",
    )
    duckdb_memory_limit = EnvParameter(
        env="DUCKDB_MEMORY_LIMIT",
        default="512MB",
        description="memory DuckDB may use while transforming and loading (it spills beyond)",
    )
    days_per_publish = EnvIntParameter(
        env="DUCKDB_DAYS_PER_PUBLISH",
        default=366,
        description="most days one DuckLoadDay batch loads before publishing; publishing copies "
        "the database, so a backfill publishes days/this many times (a year: once); ParquetDay "
        "batches as many",
    )
    lock_timeout_s = EnvFloatParameter(
        env="DUCKDB_LOCK_TIMEOUT_S",
        default=600.0,
        description="seconds a writer waits for the writer lock before failing",
    )
    holds_warehouse = EnvBoolParameter(
        env="PIPELINE_HOLDS_WAREHOUSE",
        default=True,
        parsing=luigi.BoolParameter.EXPLICIT_PARSING,
        description="whether the DuckDB warehouse lives on this machine; a worker without it "
        "extracts and archives only, and refuses DuckLoadDay and DbtBuild",
    )

    @property
    def duckdb_file(self) -> Path:
        return Path(self.duckdb_path)


class calendar(Section):
    tz = EnvParameter(
        env="TZ", default=TZ_DEFAULT, description="the pipeline's time zone: a day is local"
    )
    source_default = EnvParameter(
        env="SOURCE_DEFAULT", default=DEFAULT_SOURCE, description="source of readings without a tag"
    )

    @property
    def zone(self) -> ZoneInfo:
        try:
            return parse_zone("TZ", self.tz)
        except SettingError as e:
            refuse(str(e))


class late_data(Section):
    lookback_days = EnvIntParameter(
        env="LATE_DATA_LOOKBACK_DAYS",
        default=7,
        description="archived days this recent are compared with InfluxDB's per-day counts and "
        "extracted again when the source changed (an edge replaying after an outage); older "
        "archived days are final",
    )


class mqtt(Section):
    """The broker the pipeline publishes Home Assistant's sensors to (design.md section 7)."""

    broker_url = EnvParameter(
        env="MQTT_BROKER_URL",
        default="mqtt://127.0.0.1:1883",
        visibility=_PRIVATE,
        significant=False,
        description="mqtt://host[:1883] or mqtts://user:pass@host[:8883]; the user is "
        "`pipeline` in deploy/mosquitto/aclfile",
    )
    tls_ca_cert = EnvParameter(
        env="MQTT_TLS_CA_CERT",
        default="",
        description="CA certificate that signed the broker's (empty: the system's CAs)",
    )
    client_id = EnvParameter(
        env="MQTT_CLIENT_ID",
        default="home-energy-pipeline",
        description="client id the pipeline connects with",
    )
    timeout_s = EnvFloatParameter(
        env="MQTT_TIMEOUT_S",
        default=30.0,
        description="seconds to connect and have every publish acknowledged before failing",
    )

    def settings(self) -> MqttSettings:
        # MQTT 5, so a publish the ACL refuses comes back as "Not authorized", not silence.
        try:
            return MqttSettings.from_url(
                self.broker_url,
                ca_cert=self.tls_ca_cert or None,
                client_id=self.client_id,
                protocol="5",
            )
        except ValueError as e:  # its message shows the URL without the password
            raise PipelineError(str(e)) from None


class homeassistant(Section):
    enabled = EnvBoolParameter(
        env="HOMEASSISTANT_ENABLED",
        default=False,
        parsing=luigi.BoolParameter.EXPLICIT_PARSING,
        description="publish the daily sensors to Home Assistant through MQTT discovery",
    )
    discovery_prefix = EnvParameter(
        env="HOMEASSISTANT_DISCOVERY_PREFIX",
        default=DISCOVERY_PREFIX,
        description="Home Assistant's MQTT discovery prefix (its MQTT integration's setting)",
    )


class report(Section):
    folder = EnvParameter(
        env="REPORTS_DIR",
        default=REPORTS_DIR_DEFAULT,
        description="where reports are written (daily/ and period/<source>/); the gateway "
        "serves this folder under /reports/",
    )


class report_email(Section):
    smtp_host = EnvParameter(
        env="REPORT_SMTP_HOST", default="", description="SMTP server; empty: no e-mail"
    )
    smtp_port = EnvIntParameter(env="REPORT_SMTP_PORT", default=587, description="SMTP port")
    security = EnvChoiceParameter(
        env="REPORT_SMTP_SECURITY",
        default="starttls",
        choices=["starttls", "ssl", "none"],
        description="starttls (port 587), ssl (port 465) or none (a local relay only)",
    )
    username = EnvParameter(
        env="REPORT_SMTP_USERNAME",
        default="",
        significant=False,
        description="SMTP user",
    )
    password = EnvParameter(
        env="REPORT_SMTP_PASSWORD",
        default="",
        visibility=_PRIVATE,
        significant=False,
        description="SMTP password; set it in the environment, never in luigi.cfg",
    )
    sender = EnvParameter(env="REPORT_EMAIL_FROM", default="", description="From address")
    recipients = EnvParameter(
        env="REPORT_EMAIL_TO", default="", description="To addresses, separated by commas"
    )
    timeout_s = EnvFloatParameter(
        env="REPORT_SMTP_TIMEOUT_S", default=30.0, description="seconds before SMTP gives up"
    )

    @property
    def enabled(self) -> bool:
        return bool(self.smtp_host and self.recipients)


class forecast(Section):
    fit_days = EnvIntParameter(
        env="FORECAST_FIT_DAYS",
        default=28,
        description="days of half hours each model is fitted on, in the backtest and for the "
        "forecast itself",
    )
    backtest_days = EnvIntParameter(
        env="FORECAST_BACKTEST_DAYS",
        default=28,
        description="days of one-day-ahead forecasts (rolling origins) that choose the model",
    )
    min_history_days = EnvIntParameter(
        env="FORECAST_MIN_HISTORY_DAYS",
        default=14,
        description="a source with fewer days of history gets no forecast (the weekly models "
        "need two weeks)",
    )
    recent_days = EnvIntParameter(
        env="FORECAST_RECENT_DAYS",
        default=7,
        description="only days this recent (counted back from yesterday) are forecast; older "
        "days of a backfill are marked done without a forecast",
    )

    @property
    def history_days(self) -> int:
        """Days one forecast reads: the backtest's first origin needs fit_days before it."""
        return self.fit_days + self.backtest_days


@functools.cache
def check_settings() -> None:
    """Read every setting once per process, so that a bad one stops the run before any task.

    PipelineTask calls this when the first task is made, which Luigi does while it still holds
    the command line: flags count, and a bad value is refused in one line (`refuse`), not in a
    traceback from whichever task happened to read it first.
    """
    for section in (influx, storage, late_data, mqtt, homeassistant, report, report_email):
        section()
    forecast()
    calendar().zone  # noqa: B018 (parses TZ)
