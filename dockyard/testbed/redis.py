"""The test bed's Redis: one server on loopback without persistence (the API's rate limits)."""

from __future__ import annotations

import shutil

from dockyard.testbed.processes import Launcher, TestbedError, accepts, free_port


def start(launcher: Launcher) -> str:
    """Start the server; its URL."""
    home = launcher.dir / "redis"
    home.mkdir()
    server = shutil.which(launcher.config.redis_server)
    if server is None:
        raise TestbedError(
            "redis-server not found; run 'make bootstrap' (apt-get install redis-server)"
        )
    port = free_port()
    launcher.spawn(
        "redis",
        [
            server,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(home),
            "--daemonize",
            "no",
        ],
    )
    launcher.wait_until("redis", lambda: accepts(port), "accepting connections")
    return f"redis://127.0.0.1:{port}/0"
