"""The tools' one raw HTTP/1.1 client: prebuilt request bytes, Content-Length framed answers, keep-alive sockets,
and the readiness wait.

    raw = build_request("/score", body)                  # a whole request (head + body), built before any timing
    with Connection(port) as conn:                       # one blocking keep-alive connection
        status, headers, body = conn.request(raw)
    sock = connect(HOST, port); ...; status = read_answer(key)   # the same framing in a selector loop
    wait_ready("http://127.0.0.1:8000", 30)              # GET /readyz until 200, or NotReady

No HTTP library and no parsing beyond the framing, so a client core keeps up with thousands of requests/s and
batch-1 latencies measure the server. No chunked answers (the service always sends Content-Length); TLS only for
the readiness wait of an https:// URL.
"""

from __future__ import annotations

import socket
import ssl
import subprocess
import time
from pathlib import Path
from urllib.parse import urlsplit

HOST = "127.0.0.1"
READY_POLL_S = 0.2


def build_request(
    path: str, body: bytes, content_type: str = "application/json", headers: dict | None = None, host: str = HOST
) -> bytes:
    """A whole HTTP/1.1 POST (head + body)."""
    lines = [f"POST {path} HTTP/1.1", f"Host: {host}", f"Content-Type: {content_type}", f"Content-Length: {len(body)}"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def take_answer(buf: bytearray) -> tuple[int, bytes, bytes] | None:
    """(status, head, body) of the first whole answer in `buf`, removed from it; None until it is all there.
    ConnectionError for an answer without Content-Length."""
    end = buf.find(b"\r\n\r\n")
    if end < 0:
        return None
    head = bytes(buf[:end])
    at = head.lower().find(b"\r\ncontent-length:")  # (not inference-header-content-length)
    if at < 0:
        raise ConnectionError(f"answer without Content-Length: {head[:80]!r}")
    n = int(head[at + 17 :].split(b"\r\n", 1)[0])
    if len(buf) < end + 4 + n:
        return None
    body = bytes(buf[end + 4 : end + 4 + n])
    del buf[: end + 4 + n]
    return int(head[9:12]), head, body


# ---------------------------------------------------------------- one blocking connection


class Connection:
    """One keep-alive HTTP/1.1 connection (TCP_NODELAY); answers must be Content-Length framed."""

    def __init__(self, port: int, host: str = HOST, timeout: float = 30.0, tls: bool = False) -> None:
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if tls:
            self.sock = ssl.create_default_context().wrap_socket(self.sock, server_hostname=host)
        self.host, self.buf = host, bytearray()

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
        while (answer := take_answer(self.buf)) is None:
            chunk = self.sock.recv(1 << 18)
            if not chunk:
                raise ConnectionError("the server closed the connection")
            self.buf += chunk
        status, head, body = answer
        lines = head.decode("latin-1").split("\r\n")[1:]
        return status, {k.strip().lower(): v.strip() for k, v in (h.split(":", 1) for h in lines if ":" in h)}, body

    def get(self, path: str, headers: dict | None = None) -> tuple[int, dict[str, str], bytes]:
        extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
        return self.request(f"GET {path} HTTP/1.1\r\nHost: {self.host}\r\n{extra}\r\n".encode("latin-1"))


# ---------------------------------------------------------------- non-blocking sockets, for selector loops


def connect(host: str, port: int, timeout: float = 30.0) -> socket.socket:
    """A non-blocking TCP_NODELAY socket (register it with data {"buf": bytearray(), ...})."""
    s = socket.create_connection((host, port), timeout=timeout)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    s.setblocking(False)
    return s


def send(key, raw: bytes, timeout: float = 30.0) -> None:
    """One sendall on a selector key's socket (requests are small), then back to non-blocking reads."""
    key.fileobj.settimeout(timeout)
    try:
        key.fileobj.sendall(raw)
    finally:
        key.fileobj.setblocking(False)


def read_answer(key) -> int | None:
    """Reads what arrived on the key's socket; the HTTP status once a whole answer is in (one is in flight), else
    None. The answer's body is left in key.data["last"]."""
    chunk = key.fileobj.recv(1 << 18)
    if not chunk:
        raise ConnectionError("the server closed a connection")
    key.data["buf"] += chunk
    answer = take_answer(key.data["buf"])
    if answer is None:
        return None
    key.data["last"] = answer[2]
    return answer[0]


# ---------------------------------------------------------------- readiness


LOOPBACK = ("127.0.0.1", "localhost", "::1")


class NotReady(RuntimeError):
    """A server that did not answer 200 in time, or exited first."""


def wait_ready(
    url: str,
    timeout: float,
    path: str = "/readyz",
    token: str | None = None,
    process: subprocess.Popen | None = None,
    log: Path | None = None,
) -> None:
    """GET url + path every READY_POLL_S s until it answers 200. NotReady after `timeout` s, or as soon as `process`
    (the server, when this side started it) has exited; the message names the last answer and ends with `log`'s
    tail."""
    parts = urlsplit(url)
    headers = {"Authorization": f"Bearer {token}"} if token else None
    deadline, last = time.monotonic() + timeout, "no answer"
    while True:
        if process is not None and process.poll() is not None:
            raise NotReady(f"{url}{path}: the server exited with {process.returncode} ({last}){_with_log(log)}")
        try:
            status = _status(parts, path, headers)
            if status == 200:
                return
            last = f"HTTP {status}"
        except (OSError, ValueError) as exc:
            last = type(exc).__name__
        if time.monotonic() > deadline:
            raise NotReady(f"{url}{path} not ready after {timeout:g} s ({last}){_with_log(log)}")
        time.sleep(READY_POLL_S)


def _status(parts, path: str, headers: dict | None) -> int:
    """The status of GET path under the URL's own path: over the raw client on a loopback http:// server (what the
    tools start), over httpx (proxies, chunked answers, the port in Host) for anything else."""
    target = parts.path.rstrip("/") + path
    if parts.scheme == "http" and parts.hostname in LOOPBACK:
        with Connection(parts.port or 80, parts.hostname, timeout=2.0) as conn:
            return conn.get(target, headers)[0]
    import httpx

    try:
        return httpx.get(f"{parts.scheme}://{parts.netloc}{target}", headers=headers, timeout=2.0).status_code
    except httpx.HTTPError as exc:  # (no answer yet: the same as a refused raw connection)
        raise ConnectionError(type(exc).__name__) from exc


def log_tail(path: Path, lines: int = 30) -> str:
    """The last `lines` lines of a server's log, or "(no log)"."""
    try:
        return "\n".join(Path(path).read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _with_log(path: Path | None) -> str:
    return f"; its log ({path}):\n{log_tail(path)}" if path is not None else ""
