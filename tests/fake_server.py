"""A tiny slow HTTP/1.1 server on 127.0.0.1 and a small fitted schema: fixtures of the load tester's and the bench's
tests (tests/loadtest/conftest.py and tests/bench/conftest.py import them)."""

from __future__ import annotations

import asyncio
import threading
import time

import orjson
import pytest


class SlowServer:
    """Answers every POST after `delay` seconds, strictly one at a time across all connections (so its capacity is
    1/delay requests/s); GET answers at once (readiness). Keep-alive; records (method, path, headers, body)."""

    def __init__(self, delay: float, status: int = 200) -> None:
        self.delay, self.status = delay, status
        self.requests: list[tuple[str, str, dict[str, str], bytes]] = []
        self.served: list[float] = []  # monotonic times at which POST answers went out
        self._ready = threading.Event()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> SlowServer:
        self._thread = threading.Thread(target=asyncio.run, args=(self._main(),), daemon=True)
        self._thread.start()
        assert self._ready.wait(5), "fake server did not start"
        return self

    def stop(self) -> None:
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(5)

    async def _main(self) -> None:
        self._loop, self._stop, self._lock = asyncio.get_running_loop(), asyncio.Event(), asyncio.Lock()
        server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        async with server:
            await self._stop.wait()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
                method, path, _ = head[0].split(" ", 2)
                headers = {k.strip().lower(): v.strip() for k, v in (h.split(":", 1) for h in head[1:] if ":" in h)}
                body = await reader.readexactly(int(headers.get("content-length", 0)))
                self.requests.append((method, path, headers, body))
                status = 200
                if method == "POST":
                    async with self._lock:  # serial: one request in service at a time
                        await asyncio.sleep(self.delay)
                        self.served.append(time.monotonic())
                    status = self.status
                out = orjson.dumps({"scores": [0.5]})
                head = f"HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {len(out)}\r\n\r\n"
                writer.write(head.encode() + out)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


@pytest.fixture
def slow_server():
    """slow_server(delay, status=200) → a started SlowServer, stopped after the test."""
    servers: list[SlowServer] = []

    def start(delay: float, status: int = 200) -> SlowServer:
        servers.append(SlowServer(delay, status).start())
        return servers[-1]

    yield start
    for s in servers:
        s.stop()


@pytest.fixture
def schema() -> dict:
    """A fitted schema in the shape of bundle.json's "schema" (docs/BUNDLE.md), with a prefix, a multi-valued and
    a derived field."""
    return {
        "name": "tiny",
        "fields": [
            {"name": "user_id", "kind": "categorical", "source": "user_id", "required": True, "vocab": ["7", "8", "9"]},
            {"name": "item_id", "kind": "categorical", "source": "item_id", "required": True, "vocab": ["a", "b"]},
            {"name": "age", "kind": "numeric", "source": "age", "edges": [18, 25, 35, 45]},
            {"name": "score_hint", "kind": "numeric", "source": "score_hint", "edges": [0.1, 0.5, 0.9]},
            {"name": "zip_prefix", "kind": "categorical", "source": "zip_code", "prefix": 2, "vocab": ["55", "60"]},
            {
                "name": "genres",
                "kind": "multi",
                "source": "genres",
                "sep": "|",
                "max_len": 6,
                "vocab": ["Drama", "Comedy", "Action", "War"],
            },
            {
                "name": "user_activity",
                "kind": "categorical",
                "source": "user_id",
                "vocab": ["0", "1"],
                "mapping": {"7": "1", "8": "0"},
                "mapping_default": "0",
            },
        ],
    }


@pytest.fixture
def bundle_json(tmp_path, schema):
    """A bundle.json holding the schema and a model name (no graph: the load generator reads only these)."""
    path = tmp_path / "bundle" / "bundle.json"
    path.parent.mkdir()
    path.write_bytes(orjson.dumps({"format_version": 1, "model": {"name": "tiny", "version": "1"}, "schema": schema}))
    return path.parent
