"""`python -m devstack start|stop|status|env`: the local stack under var/ on the default ports.

influxd on 127.0.0.1:8086, mosquitto on 127.0.0.1:1883 and luigid (with task history) on
127.0.0.1:8082, each with its data and log in var/<name>/. `env` prints the shell exports that
point the pipeline, gateway and edge at them.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from devstack.servers import (
    InfluxServer,
    LocalServer,
    LuigidServer,
    MosquittoServer,
    ensure_packages,
)

VAR = Path(__file__).resolve().parent.parent / "var"


def stack() -> list[LocalServer]:
    return [
        InfluxServer(VAR / "influxd", port=8086),
        MosquittoServer(VAR / "mosquitto", port=1883),
        LuigidServer(VAR / "luigid", port=8082),
    ]


def start() -> int:
    ensure_packages()
    for server in stack():
        if server.running():
            print(f"{server.name}: already running (pid {server.pid()}) on port {server.port}")
            continue
        server.start()
        print(f"{server.name}: started on 127.0.0.1:{server.port}, data in {server.workdir}")
        if isinstance(server, InfluxServer):
            server.query("CREATE DATABASE home_energy")
    return 0


def stop() -> int:
    for server in stack():
        was = server.running()
        server.stop()
        print(f"{server.name}: {'stopped' if was else 'not running'}")
    return 0


def status() -> int:
    down = 0
    for server in stack():
        up = server.running() and server.is_ready()
        down += not up
        state = f"up (pid {server.pid()})" if up else "down"
        print(f"{server.name:10} {state:20} 127.0.0.1:{server.port}")
    return 1 if down else 0


def env() -> int:
    for server in stack():
        for key, value in server.env().items():
            print(f"export {key}={value}")
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="scripts/stack", description=__doc__.split("\n")[0])
    p.add_argument("command", choices=["start", "stop", "status", "env"])
    args = p.parse_args(argv)
    return {"start": start, "stop": stop, "status": status, "env": env}[args.command]()


if __name__ == "__main__":
    sys.exit(main())
