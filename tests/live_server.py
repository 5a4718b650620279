"""Live-server helpers shared by the test suites: free ports, HTTP, bounded waits, a real `apg serve` subprocess.

Everything runs on 127.0.0.1, every wait is bounded, and `stop` ends what `start_apg` started. Starting, waiting for
and stopping servers is the tools' own launcher (scripts/clients/launch.py); this adds the tests' settings.
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

from features import example_rows, read_schema
from scripts.clients import launch
from scripts.clients.http import log_tail  # noqa: F401 (for the tests that start servers)
from scripts.clients.launch import READY_TIMEOUT_S, REPO, Server, clean_env, free_port, stop  # noqa: F401 (same)


def http(method: str, url: str, body: dict | bytes | None = None, timeout: float = 5.0) -> tuple[int, bytes]:
    """(status, body) of one request; HTTP errors are returned, not raised. Connection errors raise OSError."""
    data = json.dumps(body).encode() if isinstance(body, dict) else body
    headers = {"Content-Type": "application/json"} if data is not None else {}
    request = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


@contextlib.contextmanager
def uvicorn_thread(app, **config) -> Iterator[str]:
    """A real uvicorn server of `app` in a thread on 127.0.0.1, `config` passed to uvicorn.Config; yields host:port.
    The socket is bound before uvicorn starts (no port race)."""
    import uvicorn

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, **{"log_level": "warning", "lifespan": "on", **config}))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        wait_for(lambda: server.started or not thread.is_alive(), 60, interval=0.02, what="uvicorn to start")
        assert server.started, "uvicorn did not start"
        yield f"127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(15)
        sock.close()


def wait_for(check: Callable[[], object], timeout: float, interval: float = 0.25, what: str = "condition"):
    """Poll `check` until it returns something truthy (returned) or `timeout` seconds pass (AssertionError)."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = check()
            if value:
                return value
        except (OSError, ValueError, KeyError) as exc:
            last_error = exc
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what} (last error: {last_error})")


def start_apg(bundle: Path, log: Path, extra_env: dict[str, str] | None = None) -> Server:
    """`apg serve` of `bundle` on a free port with the tests' settings (CPU, quick warm-up, no drain grace: stop()
    would wait it out) and `extra_env`; returns once /readyz is 200."""
    env = clean_env(APG_PROVIDERS="cpu", APG_LOG_LEVEL="warning", APG_WARMUP_BATCH_SIZES="1,8", APG_DRAIN_GRACE_S="0")
    return launch.start_apg(bundle, log, env | (extra_env or {}))


def score(server: Server, rows: int = 4) -> int:
    """The status of a POST /score of `rows` known rows of the served bundle (features.example_rows)."""
    schema, _ = read_schema(server.bundle)
    return http("POST", f"{server.url}/score", {"instances": example_rows(schema, rows)})[0]
