"""Live-server helpers shared by the test suites: free ports, HTTP, bounded waits, a real `apg serve` subprocess.

Everything runs on 127.0.0.1, every wait is bounded, and `stop` ends what `start_apg` started.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
READY_TIMEOUT_S = 90.0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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


def stop(process: subprocess.Popen) -> int:
    """SIGTERM, then SIGKILL after 15 s: never leave a server behind. Returns the exit code."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)
    return process.returncode


def log_tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


@dataclass(frozen=True)
class Server:
    url: str
    port: int
    process: subprocess.Popen
    log: Path
    bundle: Path

    def example_row(self) -> dict:
        """One raw row with every source feature of the bundle's schema, values from its vocabularies."""
        schema = json.loads((self.bundle / "bundle.json").read_text())["schema"]
        row: dict = {}
        for f in schema["fields"]:
            source = f.get("source") or f["name"]
            if source in row:
                continue
            if f["kind"] == "numeric":
                edges = f.get("edges") or [1]
                row[source] = edges[len(edges) // 2]
            else:
                vocab = f.get("vocab") or ["x"]
                row[source] = vocab[0] if f["kind"] == "categorical" else vocab[:2]
        return row

    def score(self, rows: int = 4) -> int:
        status, _ = http("POST", f"{self.url}/score", {"instances": [self.example_row()] * rows})
        return status


def start_apg(bundle: Path, log: Path, extra_env: dict[str, str] | None = None) -> Server:
    """`apg serve` (as `python -m scripts.cli serve`, torch-free) on a free port; returns once /readyz is 200."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("APG_") and k != "PROMETHEUS_MULTIPROC_DIR"}
    env |= {"APG_PROVIDERS": "cpu", "APG_LOG_LEVEL": "warning", "APG_WARMUP_BATCH_SIZES": "1,8"}
    env |= {"APG_DRAIN_GRACE_S": "0"}  # stop() would wait the drain grace out
    env |= extra_env or {}
    cmd = [
        sys.executable,
        "-m",
        "scripts.cli",
        "serve",
        "--bundle",
        str(bundle),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]
    with open(log, "wb") as out:
        process = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)
    server = Server(f"http://127.0.0.1:{port}", port, process, log, Path(bundle))

    def ready() -> bool:
        if process.poll() is not None:
            raise AssertionError(f"apg serve exited with {process.returncode}:\n{log_tail(log)}")
        return http("GET", f"{server.url}/readyz", timeout=2)[0] == 200

    try:
        wait_for(ready, READY_TIMEOUT_S, what=f"apg serve on port {port} to be ready")
    except BaseException:
        stop(process)
        raise
    return server
