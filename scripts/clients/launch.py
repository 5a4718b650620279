"""Servers on 127.0.0.1 as subprocesses: `apg serve` (and the peers, the references, Triton...), each on a free port
with its own log, waited for until ready, always stopped.

    server = start_apg(bundle, log, clean_env(APG_PROVIDERS="cpu"))   # `apg serve` on a free port, once ready
    stop(server.process)
    with Servers(log_dir) as servers:                     # several, stopped together on exit
        servers.start("service", partial(serve_command, bundle), clean_env(APG_BATCHING="false"))
        servers.start("triton", triton_command, env, ready="/v2/health/ready")
        servers.wait_ready()

The readiness wait is scripts/clients/http.py's (GET until 200, NotReady naming the log's tail).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from scripts.clients.http import HOST, wait_ready

REPO = Path(__file__).resolve().parents[2]
READY_TIMEOUT_S = 90.0
STOP_GRACE_S = 15.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def serve_command(bundle: Path, port: int, workers: int = 1, grpc_port: int | None = None) -> list[str]:
    """`apg serve --bundle B --host 127.0.0.1 --port P [--workers W] [--grpc-port G]`, as `python -m service` (the
    same options and code, service/command.py, without the console script)."""
    argv = [sys.executable, "-m", "service", "--bundle", str(bundle), "--host", HOST, "--port", str(port)]
    argv += ["--workers", str(workers)] if workers != 1 else []
    return argv + (["--grpc-port", str(grpc_port)] if grpc_port is not None else [])


def clean_env(base: Mapping[str, str] | None = None, **settings: str) -> dict[str, str]:
    """`base` (this process's environment) without its APG_* settings and Prometheus' multiprocess folder, plus
    `settings`: a server configured by what the caller names, not by what the shell had."""
    base = os.environ if base is None else base
    env = {k: v for k, v in base.items() if not k.startswith("APG_") and "multiproc" not in k.lower()}
    return env | settings


@dataclass
class Server:
    """A started server process: HTTP on 127.0.0.1:port, `ready` answering 200 once it serves."""

    name: str
    port: int
    process: subprocess.Popen
    log: Path
    ready: str = "/readyz"
    bundle: Path | None = None  # what it serves, when it is `apg serve`

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def wait_ready(self, timeout: float = READY_TIMEOUT_S) -> None:
        wait_ready(self.url, timeout, self.ready, process=self.process, log=self.log)


def start(
    name: str,
    argv: list[str],
    port: int,
    env: Mapping[str, str],
    log: Path,
    ready: str = "/readyz",
    cwd: Path = REPO,
    cpu: int | None = None,
) -> Server:
    """Run `argv` (which serves on `port`) in `cwd` with exactly `env`, stdout and stderr to `log`; pinned to `cpu`
    when given. Not waited for: Server.wait_ready."""
    pin = (lambda: os.sched_setaffinity(0, {cpu})) if cpu is not None else None
    with Path(log).open("wb") as fh:
        process = subprocess.Popen(argv, cwd=cwd, env=dict(env), stdout=fh, stderr=subprocess.STDOUT, preexec_fn=pin)
    return Server(name, port, process, Path(log), ready)


def stop(process: subprocess.Popen) -> int:
    """SIGTERM, then SIGKILL after STOP_GRACE_S: never leave a server behind. Returns the exit code."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=STOP_GRACE_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)
    return process.returncode


def start_apg(
    bundle: Path,
    log: Path,
    env: Mapping[str, str],
    port: int | None = None,
    cwd: Path = REPO,
    timeout: float = READY_TIMEOUT_S,
) -> Server:
    """`apg serve` of `bundle` on `port` (a free one by default) with exactly `env`, returned once /readyz answers
    200; stopped again when it does not (NotReady)."""
    port = free_port() if port is None else port
    server = start("apg-serve", serve_command(Path(bundle), port), port, env, log, cwd=cwd)
    server.bundle = Path(bundle)
    try:
        server.wait_ready(timeout)
    except BaseException:
        stop(server.process)
        raise
    return server


class Servers:
    """Several servers, each on a free port logging to log_dir/NAME.log; all stopped on exit."""

    def __init__(self, log_dir: Path, cpu: int | None = None) -> None:
        self.log_dir, self.cpu = Path(log_dir), cpu
        self.servers: dict[str, Server] = {}

    def __enter__(self) -> Servers:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        return self

    def __exit__(self, *exc) -> None:
        for s in self.servers.values():  # all told first, then each waited for
            if s.process.poll() is None:
                s.process.terminate()
        for s in self.servers.values():
            stop(s.process)

    def start(
        self, name: str, command: Callable[[int], list[str]], env: Mapping[str, str], ready="/readyz", cwd=REPO
    ) -> Server:
        """command(port) → argv on a free port, run in `cwd` with exactly `env` (pinned to the group's cpu)."""
        port = free_port()
        log = self.log_dir / f"{name}.log"
        self.servers[name] = start(name, command(port), port, env, log, ready, cwd, self.cpu)
        return self.servers[name]

    def wait_ready(self, timeout: float = 120.0) -> None:
        """Until every server answers its ready path with 200, all within `timeout` s (NotReady, with its log, if one
        exits or is late)."""
        deadline = time.monotonic() + timeout
        for s in self.servers.values():
            s.wait_ready(max(0.0, deadline - time.monotonic()))
