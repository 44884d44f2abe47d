"""Shared by the bench scripts that start `cli serve`: a free loopback port, and the wait for /ready."""

from __future__ import annotations

import socket
import subprocess
import time
import urllib.request


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_until_ready(server: subprocess.Popen, port: int, started: float, timeout_s: float = 180) -> float | None:
    """Seconds from ``started`` (a perf_counter reading) to the server's first 200 from /ready; None if the
    server exited or ``timeout_s`` passed first."""
    while server.poll() is None and time.perf_counter() - started < timeout_s:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/ready", timeout=2) as reply:
                if reply.status == 200:
                    return time.perf_counter() - started
        except OSError:
            pass
        time.sleep(0.05)
    return None
