"""`python -m gateway`: MQTT -> InfluxDB with the HTTP API, until SIGTERM or SIGINT.

The main thread owns the signals; the API runs in a thread of its own (uvicorn would
otherwise take SIGTERM and re-raise it before the buffer is flushed and acknowledged).
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
from dataclasses import replace

import uvicorn

from contracts.influx import make_client
from contracts.settings import Environment
from gateway.api import create_app
from gateway.deadletters import DeadLetters
from gateway.influx_writer import InfluxWriter
from gateway.ingest import Gateway
from gateway.live_power import LivePowerPublisher
from gateway.metrics import GatewayMetrics
from gateway.page import PageSettings
from gateway.queries import ReadingQueries
from gateway.settings import GatewaySettings
from gateway.warehouse_reader import WarehouseReader

log = logging.getLogger("gateway")

WRITE_TIMEOUT_S = 10.0
QUERY_TIMEOUT_S = 10.0


def main() -> int:
    try:
        settings = GatewaySettings.from_env(Environment())
    except ValueError as exc:  # one line, exit 2: the service manager shows why
        print(f"gateway: bad configuration: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    log.info("starting: %r %r %r %r", settings, settings.mqtt, settings.influx, settings.login)
    if not settings.api_token and not settings.login:
        log.warning("no GATEWAY_API_TOKEN or GATEWAY_UI_PASSWORD: the API and page are open")

    metrics = GatewayMetrics()
    deadletters = DeadLetters(
        settings.deadletter_path, settings.deadletter_max_bytes, settings.deadletter_backups
    )
    influx = settings.influx
    writer = InfluxWriter(
        make_client(replace(influx, timeout_s=WRITE_TIMEOUT_S)), influx.measurement, metrics
    )
    gateway = Gateway(
        settings.mqtt, settings, writer, deadletters, metrics, settings.source_default
    )
    if settings.homeassistant:
        gateway.on_stored = LivePowerPublisher(
            gateway.client, settings.homeassistant_power_seconds, settings.homeassistant_prefix
        ).offer
    queries = ReadingQueries(
        make_client(replace(influx, timeout_s=QUERY_TIMEOUT_S)), influx.measurement
    )
    page = PageSettings(
        warehouse=WarehouseReader(settings.duckdb_path, settings.publish_mode),
        reports_dir=settings.reports_dir,
        zone=settings.zone,
        login=settings.login,
    )
    app = create_app(gateway, queries, settings.api_token, page)
    server = uvicorn.Server(
        uvicorn.Config(app, host=settings.api_host, port=settings.api_port, log_level="warning")
    )

    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    gateway.start()
    api = threading.Thread(target=server.run, name="api", daemon=True)
    api.start()
    while not stop.wait(1.0):
        if not api.is_alive():
            log.error("the HTTP API stopped (port %s taken?)", settings.api_port)
            break
    log.info("stopping: flushing the buffer, acknowledging, disconnecting")
    server.should_exit = True
    gateway.stop()
    deadletters.close()
    page.warehouse.close()
    api.join(5)
    log.info("stopped")
    return 0 if stop.is_set() else 1


if __name__ == "__main__":
    sys.exit(main())
