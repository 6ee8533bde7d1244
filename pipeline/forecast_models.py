"""Forecasts of one source's energy from its half-hourly history, with statsforecast.

Half hours: the candidates are backtested from rolling origins, one per day of the last
`backtest_days` days: each is fitted on the `fit_days` before the origin and forecasts the next
48 half hours, exactly as the real forecast is made. The one with the lowest MAE is chosen,
the seasonal-naive baseline (the same half hour one week earlier) when nothing beats it.

Days: the next 7 local days are forecast from the daily totals with AutoETS (weekly season).
Summing the half-hour forecast would give the point but not the interval: a day's bounds are
not the sums of its half hours' bounds unless their errors move together, and how much they
do is exactly what a model of the daily totals estimates. Daily totals are also a short,
smooth series inside ETS's seasonal range (m <= 24), where a 336-step half-hour forecast is
neither cheap nor better.

The same history always gives the same numbers: every model here is deterministic (no random
starts), one process fits them (n_jobs=1) with BLAS limited to one thread, and the series is
built in a fixed order.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd
from statsforecast import StatsForecast
from statsforecast.models import MSTL, AutoETS, SeasonalNaive, SeasonalWindowAverage
from statsforecast.utils import ConformalIntervals
from threadpoolctl import threadpool_limits
from utilsforecast import losses

from pipeline.config import forecast

logger = logging.getLogger("luigi-interface")

DAY = 48  # half hours
WEEK = 7 * DAY
LEVEL = 80  # the prediction interval's coverage, in percent
METRICS = {"mae": losses.mae, "rmse": losses.rmse, "mape": losses.mape, "wape": losses.wape}
BASELINE = "SeasonalNaive"
DAY_MODEL = "AutoETS"


@dataclass(frozen=True)
class Candidate:
    name: str
    min_train_days: int  # days of history its fit and intervals need

    def model(self):
        if self.name == BASELINE:
            return SeasonalNaive(season_length=WEEK, alias=self.name)
        if self.name == "SeasonalWindowAverage":
            # The same half hour averaged over three weeks; intervals from one week of
            # one-day-ahead errors (conformal, no distribution assumed).
            return SeasonalWindowAverage(
                season_length=WEEK,
                window_size=3,
                alias=self.name,
                prediction_intervals=ConformalIntervals(h=DAY, n_windows=7),
            )
        # The weekly shape (which holds the daily one) by LOESS; the rest (level plus noise)
        # by exponential smoothing without a trend: a month's trend extrapolated a day ahead
        # is noise. One season and LOESS evaluated every few points (the jumps, as R's stl
        # does) keep the 28 backtest fits of a source near a second.
        return MSTL(
            season_length=WEEK,
            trend_forecaster=AutoETS(model="ANN"),
            stl_kwargs={"seasonal_jump": 10, "trend_jump": 40, "low_pass_jump": 10},
            alias=self.name,
        )


CANDIDATES = (
    Candidate(BASELINE, min_train_days=7),
    Candidate("MSTL", min_train_days=14),
    Candidate("SeasonalWindowAverage", min_train_days=28),
)


@dataclass
class SourceForecast:
    """One source's forecast made for a day, or why there is none."""

    source: str
    chosen: str | None = None
    accuracy: pd.DataFrame | None = None  # model, metric, value, chosen
    backtest_days: int = 0
    half_hours: pd.DataFrame | None = None  # target_start_utc, horizon, model, value, lo, hi
    days: pd.DataFrame | None = None
    skipped: str | None = None
    notes: list[str] = field(default_factory=list)


def local_midnight_utc(day: date, zone: ZoneInfo) -> pd.Timestamp:
    return pd.Timestamp(datetime.combine(day, datetime.min.time(), tzinfo=zone).astimezone(UTC))


def half_hour_series(
    rows: pd.DataFrame, made_for: date, zone: ZoneInfo, settings: forecast
) -> tuple[pd.Series, int]:
    """One source's kWh on every half hour from its first local day with data (at most
    history_days back) to the end of `made_for`, and how many days that is.

    A half hour with no value (the meter was silent, the import register missing) takes the
    value of the same half hour a week earlier, else a day earlier, else the nearest one:
    the models need a complete series, and a copy of the shape biases them least.
    """
    first_day = max(min(rows["date_jst"]), made_for - timedelta(days=settings.history_days - 1))
    grid = pd.date_range(
        local_midnight_utc(first_day, zone),
        local_midnight_utc(made_for + timedelta(days=1), zone),
        freq="30min",
        inclusive="left",
    )
    y = rows.set_index("bucket_start_utc")["energy_kwh"].astype(float).reindex(grid)
    y = y.fillna(y.shift(WEEK)).fillna(y.shift(DAY)).ffill().bfill()
    return y, (made_for - first_day).days + 1


def forecast_source(
    source: str,
    rows: pd.DataFrame,
    made_for: date,
    zone: ZoneInfo,
    settings: forecast,
) -> SourceForecast:
    """Backtest, choose and forecast one source from its rows of fct_half_hourly_energy."""
    result = SourceForecast(source)
    y, days = half_hour_series(rows, made_for, zone, settings)
    if days < settings.min_history_days:
        result.skipped = (
            f"{source} has {days} day(s) of history up to {made_for}, fewer than the "
            f"{settings.min_history_days} a forecast needs"
        )
        return result
    frame = pd.DataFrame({"unique_id": source, "ds": np.arange(len(y)), "y": y.to_numpy()})
    windows = min(settings.backtest_days, days - settings.min_history_days)
    trained_on = min(settings.fit_days, days - windows)  # days before the first origin
    candidates = [c for c in CANDIDATES if c.min_train_days <= trained_on]
    # ETS divides by zero on the shortest histories while it rules a form out; not news.
    with threadpool_limits(1), np.errstate(divide="ignore", invalid="ignore"):
        if windows:
            result.accuracy = backtest(frame, candidates, windows, settings.fit_days)
            result.chosen = choose(result.accuracy)
            result.accuracy["chosen"] = result.accuracy["model"] == result.chosen
        else:
            result.chosen = BASELINE
            result.notes.append(f"{source}: no day to backtest yet, the baseline is used")
        result.backtest_days = windows
        chosen = next(c for c in CANDIDATES if c.name == result.chosen)
        result.half_hours = forecast_half_hours(frame, chosen, y.index[-1], settings.fit_days)
        result.days = forecast_days(y, made_for, zone)
    return result


def backtest(
    frame: pd.DataFrame, candidates: list[Candidate], windows: int, fit_days: int
) -> pd.DataFrame:
    """MAE, RMSE, MAPE and WAPE of each candidate over `windows` one-day-ahead forecasts."""
    names = [c.name for c in candidates]
    engine = StatsForecast(models=[c.model() for c in candidates], freq=1, n_jobs=1)
    folds = engine.cross_validation(
        h=DAY, df=frame, n_windows=windows, step_size=DAY, input_size=fit_days * DAY
    ).drop(columns="cutoff")  # one figure over all windows, not an average of per-day figures
    scores = [
        fn(folds, models=names).melt(id_vars="unique_id", var_name="model").assign(metric=metric)
        for metric, fn in METRICS.items()
    ]
    return pd.concat(scores, ignore_index=True)[["model", "metric", "value"]]


def choose(accuracy: pd.DataFrame) -> str:
    """The lowest MAE; the baseline wins ties (and is listed first)."""
    mae = accuracy[accuracy["metric"] == "mae"].set_index("model")["value"]
    return str(mae.idxmin())


def forecast_half_hours(
    frame: pd.DataFrame, chosen: Candidate, last_bucket: pd.Timestamp, fit_days: int
) -> pd.DataFrame:
    engine = StatsForecast(models=[chosen.model()], freq=1, n_jobs=1)
    predicted = engine.forecast(df=frame.tail(fit_days * DAY), h=DAY, level=[LEVEL])
    return _bounded(
        predicted,
        chosen.name,
        target_start_utc=last_bucket + pd.Timedelta(minutes=30) * np.arange(1, DAY + 1),
    )


def forecast_days(y: pd.Series, made_for: date, zone: ZoneInfo, horizon: int = 7) -> pd.DataFrame:
    """Daily totals of the next `horizon` local days, from the daily totals so far."""
    assert isinstance(y.index, pd.DatetimeIndex)
    totals = y.groupby(y.index.tz_convert(zone).date).sum()
    frame = pd.DataFrame({"unique_id": "days", "ds": np.arange(len(totals)), "y": totals.values})
    engine = StatsForecast(
        models=[AutoETS(season_length=7, model="ZZZ", alias=DAY_MODEL)], freq=1, n_jobs=1
    )
    predicted = engine.forecast(df=frame, h=horizon, level=[LEVEL])
    targets = [made_for + timedelta(days=k) for k in range(1, horizon + 1)]
    return _bounded(
        predicted,
        DAY_MODEL,
        target_start_utc=pd.DatetimeIndex([local_midnight_utc(d, zone) for d in targets]),
    )


def _bounded(predicted: pd.DataFrame, model: str, target_start_utc) -> pd.DataFrame:
    """Point and interval per step; energy is never negative, so a bound below zero is zero
    (the interval still contains the point, which is clipped the same way)."""
    value = predicted[model].clip(lower=0).to_numpy()
    lower = predicted[f"{model}-lo-{LEVEL}"].clip(lower=0).to_numpy()
    upper = np.maximum(predicted[f"{model}-hi-{LEVEL}"].to_numpy(), value)
    return pd.DataFrame(
        {
            "target_start_utc": target_start_utc,
            "horizon": np.arange(1, len(value) + 1),
            "model": model,
            "value_kwh": value,
            "lower_kwh": np.minimum(lower, value),
            "upper_kwh": upper,
            "level": LEVEL,
        }
    )


def forecast_sources(
    history: pd.DataFrame, made_for: date, zone: ZoneInfo, settings: forecast
) -> list[SourceForecast]:
    """Every source with data on `made_for`, from its rows of fct_half_hourly_energy
    (source, date_jst, bucket_start_utc, energy_kwh), in source order."""
    observed = history[history["energy_kwh"].notna()]
    current = sorted(observed.loc[observed["date_jst"] == made_for, "source"].unique())
    return [
        forecast_source(source, observed[observed["source"] == source], made_for, zone, settings)
        for source in current
    ]
