"""The HTTP side of `apg bench`: servers on 127.0.0.1 started as subprocesses, request bodies for each path,
a minimal keep-alive client, and the service's own stage metrics.

    with Servers(log_dir) as servers:
        svc = servers.start("service", service_command(bundle), env={"APG_INTRA_OP_THREADS": "1"})
        servers.wait_ready()
        with Connection(svc.port) as conn:
            status, headers, body = conn.request(build_request(path, body))

The client sends prebuilt request bytes and reads Content-Length framed answers on one connection: far less
client work per request than httpx or http.client, so batch-1 latencies measure the server, not the client.
"""

from __future__ import annotations

import os
import signal
import socket
import struct
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import orjson

from scripts.loadtest.plan import encode_body
from scripts.loadtest.raw_engine import build_request

HOST = "127.0.0.1"
REPO = Path(__file__).resolve().parents[2]
V2_HEADER = "Inference-Header-Content-Length"


# ---------------------------------------------------------------- request bodies


@dataclass(frozen=True)
class HttpPath:
    """One measured HTTP path: which server, which route, how rows become a body."""

    name: str
    server: str  # "service", "thin" or "mlserver"
    route: str  # "score" or "v2"
    fmt: str  # rows | columns | v2 | v2-binary

    @property
    def template(self) -> str:
        """The route as the service's metrics label it."""
        return "/v2/models/{name}/infer" if self.route == "v2" else "/score"


PATHS = (
    HttpPath("score-rows", "service", "score", "rows"),
    HttpPath("score-columns", "service", "score", "columns"),
    HttpPath("v2-json", "service", "v2", "v2"),
    HttpPath("v2-binary", "service", "v2", "v2-binary"),
    HttpPath("thin-columns", "thin", "score", "columns"),
)
# apg bench --mlserver: MLServer's v2 endpoint, sent the very bytes of "v2-json" (same model name, same rows)
MLSERVER_PATH = HttpPath("mlserver-v2-json", "mlserver", "v2", "v2")


def request_bytes(path: HttpPath, rows: list[dict], numeric: set[str], model: str) -> bytes:
    """A whole HTTP/1.1 request (head + body) for `rows` on `path`."""
    url = path.template.replace("{name}", model)
    if path.fmt == "v2-binary":
        body, header_len = v2_binary_body(rows, numeric)
        return build_request(url, body, "application/octet-stream", {V2_HEADER: str(header_len)})
    return build_request(url, encode_body(rows, path.fmt, numeric))


def v2_binary_body(rows: list[dict], numeric: set[str]) -> tuple[bytes, int]:
    """KServe v2 binary tensor extension: a JSON header, then the raw tensors; the score comes back binary too.
    Numeric features are FP64, the others BYTES (4-byte little-endian length + UTF-8 per element)."""
    inputs, blobs = [], []
    for name in rows[0]:
        col = [r[name] for r in rows]
        if name in numeric:
            raw, datatype, shape = struct.pack(f"<{len(col)}d", *map(float, col)), "FP64", [len(col)]
        else:
            if any(isinstance(v, list) for v in col):  # multi-valued without a separator: [B, K], padded
                k = max(len(v) for v in col)
                flat, shape = [s for v in col for s in [*v, *[""] * (k - len(v))]], [len(col), k]
            else:
                flat, shape = col, [len(col)]
            raw, datatype = b"".join(struct.pack("<I", len(b)) + b for b in (str(s).encode() for s in flat)), "BYTES"
        inputs.append(
            {"name": name, "shape": shape, "datatype": datatype, "parameters": {"binary_data_size": len(raw)}}
        )
        blobs.append(raw)
    head = orjson.dumps({"inputs": inputs, "outputs": [{"name": "score", "parameters": {"binary_data": True}}]})
    return head + b"".join(blobs), len(head)


def count_scores(headers: dict[str, str], body: bytes) -> int:
    """How many scores an answer carries (/score JSON, v2 JSON or v2 binary)."""
    if V2_HEADER.lower() in headers:
        return (len(body) - int(headers[V2_HEADER.lower()])) // 4
    doc = orjson.loads(body)
    return len(doc["scores"]) if "scores" in doc else len(doc["outputs"][0]["data"])


# ---------------------------------------------------------------- the client


class Connection:
    """One keep-alive HTTP/1.1 connection to 127.0.0.1; answers must be Content-Length framed."""

    def __init__(self, port: int, timeout: float = 30.0) -> None:
        self.sock = socket.create_connection((HOST, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = bytearray()

    def __enter__(self) -> Connection:
        return self

    def __exit__(self, *exc) -> None:
        self.sock.close()

    def request(self, raw: bytes) -> tuple[int, dict[str, str], bytes]:
        """(status, lower-cased headers, body)."""
        self.sock.sendall(raw)
        return self.receive()

    def receive(self) -> tuple[int, dict[str, str], bytes]:
        """The next answer on the connection (after a request sent with `sock.sendall`)."""
        buf = self.buf
        while (end := buf.find(b"\r\n\r\n")) < 0:
            self._recv()
        head = buf[:end].decode("latin-1").split("\r\n")
        headers = {k.strip().lower(): v.strip() for k, v in (h.split(":", 1) for h in head[1:] if ":" in h)}
        if "content-length" not in headers:
            raise RuntimeError(f"answer without Content-Length: {head[0]}")
        start, n = end + 4, int(headers["content-length"])
        while len(buf) < start + n:
            self._recv()
        body = bytes(buf[start : start + n])
        del buf[: start + n]
        return int(head[0].split(" ", 2)[1]), headers, body

    def get(self, path: str) -> tuple[int, dict[str, str], bytes]:
        return self.request(f"GET {path} HTTP/1.1\r\nHost: {HOST}\r\n\r\n".encode())

    def _recv(self) -> None:
        chunk = self.sock.recv(1 << 18)
        if not chunk:
            raise ConnectionError("the server closed the connection")
        self.buf += chunk


# ---------------------------------------------------------------- servers


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def service_command(bundle: Path, port: int, workers: int = 1) -> list[str]:
    """What `apg serve --bundle B --port P --workers W` runs (service.server.serve), without the console script."""
    argv = [sys.executable, "-m", "service", "--bundle", str(bundle), "--host", HOST, "--port", str(port)]
    return argv + (["--workers", str(workers)] if workers != 1 else [])


def thin_command(bundle: Path, port: int) -> list[str]:
    return [sys.executable, "-m", "scripts.bench.thin", "--bundle", str(bundle), "--host", HOST, "--port", str(port)]


@dataclass
class Server:
    name: str
    port: int
    proc: subprocess.Popen
    log: Path
    ready: str = "/readyz"  # GET path that answers 200 once it serves


class Servers:
    """Subprocesses on free loopback ports, each logging to log_dir/NAME.log; all stopped on exit."""

    def __init__(self, log_dir: Path, cpu: int | None = None) -> None:
        self.log_dir, self.cpu = log_dir, cpu
        self.servers: dict[str, Server] = {}

    def __enter__(self) -> Servers:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        return self

    def __exit__(self, *exc) -> None:
        for s in self.servers.values():
            if s.proc.poll() is None:
                s.proc.send_signal(signal.SIGTERM)
        for s in self.servers.values():
            try:
                s.proc.wait(15)
            except subprocess.TimeoutExpired:
                s.proc.kill()
                s.proc.wait(5)

    def start(self, name: str, command, env: dict[str, str], ready: str = "/readyz", cwd: Path = REPO) -> Server:
        """command(port) → argv, run in `cwd` with exactly `env`; `ready` answers 200 once it serves."""
        port = free_port()
        log = self.log_dir / f"{name}.log"
        cpu = self.cpu
        pin = (lambda: os.sched_setaffinity(0, {cpu})) if cpu is not None else None
        with log.open("wb") as fh:
            proc = subprocess.Popen(
                command(port), cwd=cwd, env=env, stdout=fh, stderr=subprocess.STDOUT, preexec_fn=pin
            )
        self.servers[name] = Server(name, port, proc, log, ready)
        return self.servers[name]

    def wait_ready(self, timeout: float = 120.0) -> None:
        """Until every server answers its ready path with 200; RuntimeError (with its log) if one dies or times out."""
        deadline = time.monotonic() + timeout
        for s in self.servers.values():
            while not _ready(s):
                if s.proc.poll() is not None or time.monotonic() > deadline:
                    why = (
                        f"exited with {s.proc.returncode}"
                        if s.proc.poll() is not None
                        else f"not ready in {timeout:g} s"
                    )
                    tail = s.log.read_text(errors="replace")[-2000:]
                    raise RuntimeError(f"bench server {s.name!r} {why}; its log ({s.log}):\n{tail}")
                time.sleep(0.2)


def _ready(server: Server) -> bool:
    try:
        with Connection(server.port, timeout=2.0) as conn:
            return conn.get(server.ready)[0] == 200
    except OSError:
        return False


# ---------------------------------------------------------------- the service's own metrics


SCRAPED = {  # family → (kind, the label that names the series)
    "apg_stage_duration_seconds": ("stage", "stage"),
    "apg_request_duration_seconds": ("route", "route"),
    "apg_item_store_lookup_seconds": ("lookup", "model"),
}


def scrape(port: int) -> dict[tuple[str, str], tuple[float, float]]:
    """(("stage", parse|preprocess|...), ("route", template) or ("lookup", model)) → (sum seconds, count) from
    GET /metrics."""
    from prometheus_client.parser import text_string_to_metric_families

    with Connection(port) as conn:
        status, _, body = conn.get("/metrics")
    if status != 200:
        raise RuntimeError(f"GET /metrics answered {status}")
    out: dict[tuple[str, str], list[float]] = {}
    for family in text_string_to_metric_families(body.decode()):
        kind, label = SCRAPED.get(family.name, (None, None))
        for sample in family.samples if kind else ():
            slot = 0 if sample.name.endswith("_sum") else 1 if sample.name.endswith("_count") else None
            if slot is not None:
                out.setdefault((kind, sample.labels[label]), [0.0, 0.0])[slot] = sample.value
    return {k: (v[0], v[1]) for k, v in out.items()}


def stage_means(before: dict, after: dict, route: str) -> dict[str, float]:
    """Mean ms per request of each stage observed between two scrapes, and of the whole request on `route`
    (key "request"; the route template, e.g. "/score"): other routes, such as the scrape itself, are left out; and
    the item store's mean ms per lookup (key "lookup", when there were lookups: one per request that needed it)."""
    out = {}
    for (kind, name), (s1, c1) in after.items():
        s0, c0 = before.get((kind, name), (0.0, 0.0))
        if c1 > c0 and (kind in ("stage", "lookup") or name == route):
            key = {"stage": name, "lookup": "lookup"}.get(kind, "request")
            out[key] = round(1000 * (s1 - s0) / (c1 - c0), 4)
    return out
