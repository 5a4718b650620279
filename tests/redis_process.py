"""A redis-server of a test's own, on a fixed free 127.0.0.1 port, without persistence, that the test may stop, pause
(SIGSTOP) and start again on the same port: the item store tests (tests/items, tests/service) share it.

    server = RedisProcess(tmp_path).start()    # Debian's redis-server (scripts/install_debian.sh)
    server.url                                  # redis://127.0.0.1:PORT/0
    server.pause(); server.resume(); server.stop(); server.start()
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

from scripts.clients.launch import free_port


class RedisProcess:
    """A redis-server on a fixed free 127.0.0.1 port, without persistence: start, stop, pause (SIGSTOP), resume."""

    def __init__(self, directory: Path) -> None:
        self.directory, self.process = directory, None
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisProcess:
        argv = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        log = open(self.directory / "redis.log", "ab")  # noqa: SIM115 (the child holds it)
        self.process = subprocess.Popen([*argv, "--dir", str(self.directory)], stdout=log, stderr=subprocess.STDOUT)
        log.close()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and self.process.poll() is None:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                s.sendall(b"PING\r\n")
                if s.recv(16).startswith(b"+PONG"):
                    return self
            time.sleep(0.05)
        raise RuntimeError(f"redis-server on port {self.port} did not start (exit code {self.process.poll()})")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.resume()
            self.process.terminate()
            self.process.wait(10)

    def pause(self) -> None:
        os.kill(self.process.pid, signal.SIGSTOP)

    def resume(self) -> None:
        os.kill(self.process.pid, signal.SIGCONT)
