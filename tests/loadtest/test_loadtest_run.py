"""The generator against a fake slow server on 127.0.0.1: open-loop accounting and the files it writes.

No upper bounds on times or rates (shared, noisy machines): a serial server that sleeps `delay` per request cannot
answer faster than that, so what is asserted holds however slow the machine is: counts, errors by kind, the order
scheduled <= sent <= done, and lower bounds that the server's own capacity imposes."""

from __future__ import annotations

import csv
import socket
import threading

import numpy as np
import orjson
import pytest

from scripts.cli import main
from scripts.loadtest.command import run_engine
from scripts.loadtest.latency_report import summarise
from scripts.loadtest.plan import build_schedule
from scripts.loadtest.records import LoadConfig

ENGINES = ["raw", "httpx"]  # raw_engine.open_loop (the default for http://) and httpx_engine.run_load


def run(url: str, rate: float, duration: float, concurrency: int = 1, drain: float = 1.0, engine: str = "httpx"):
    cfg = LoadConfig(url=url, rate=rate, duration=duration, arrivals="constant", concurrency=concurrency, drain=drain)
    schedule = build_schedule(rate, duration, "constant")
    rec = run_engine(cfg, [b'{"instances": [{}]}'], schedule, engine)
    return rec, summarise(rec, cfg)


@pytest.mark.parametrize("engine", ENGINES)
def test_queueing_behind_a_slow_server_counts_in_the_latency(slow_server, engine):
    delay = 0.05  # a serial server: capacity 20 requests/s
    server = slow_server(delay)
    rec, s = run(server.url, rate=50, duration=2.0, drain=0.5, engine=engine)
    ok = np.array([e is None for e in rec.error])
    latency, service = (rec.done - rec.scheduled)[ok], (rec.done - rec.sent)[ok]
    # sent >= scheduled up to the event loop's clock: a timer may fire a clock resolution early, and (t0 + at) - t0
    # need not round back to `at` (one CI run saw latency < service by a rounding step)
    assert (latency >= service - 1e-6).all() and np.median(service) >= 0.9 * delay  # the delay is in every answer
    assert s["service_ms"]["p50"] == pytest.approx(1000 * np.median(service), abs=0.01)
    # latency from the scheduled send grows with the backlog (2.5 requests offered per one served), whatever the speed
    assert s["latency_ms"]["p50"] > 5 * 1000 * delay
    assert s["latency_ms"]["max"] > 15 * 1000 * delay
    third = len(latency) // 3
    assert latency[-third:].mean() > 3 * latency[:third].mean()
    # honest accounting: the achieved rate is at most the server's capacity (20/s), not the target
    assert s["achieved_rate"] <= 1.2 * 20 < s["target_rate"]
    assert s["errors"].get("unsent", 0) > 0 and s["error_fraction"] > 0.3  # the backlog left at the drain deadline
    assert s["requests"] == 100 and len(server.served) < 100
    assert s["ok"] == int(ok.sum()) <= len(server.served)


@pytest.mark.parametrize("engine", ENGINES)
def test_below_capacity_every_request_is_answered_once(slow_server, engine):
    delay = 0.02  # capacity 50/s, offered 10/s
    server = slow_server(delay)
    rec, s = run(server.url, rate=10, duration=1.5, concurrency=4, drain=5.0, engine=engine)
    assert s["errors"] == {} and s["ok"] == s["requests"] == 15 and len(server.served) == 15
    assert list(rec.status) == [200] * 15
    assert (rec.sent >= rec.scheduled - 1e-3).all() and (rec.done - rec.sent >= 0.9 * delay).all()


@pytest.mark.parametrize("engine", ENGINES)
def test_http_errors_and_connection_errors_are_counted_by_kind(slow_server, engine):
    _, s = run(slow_server(0.0, status=503).url, rate=20, duration=0.5, engine=engine)
    assert s["errors"] == {"http_503": 10} and s["ok"] == 0 and s["latency_ms"]["p50"] is None
    if engine == "httpx":
        _, s = run("http://127.0.0.1:9", rate=20, duration=0.5)  # nothing listens on port 9 (discard)
        assert set(s["errors"]) == {"connect"} and s["error_fraction"] == 1.0
    else:  # the raw engine opens its connections first: no server is one clear error, before any request
        with pytest.raises(RuntimeError, match="cannot connect to http://127.0.0.1:9"):
            run("http://127.0.0.1:9", rate=20, duration=0.5, engine=engine)


def test_raw_engine_times_out_a_stuck_request_and_carries_on(slow_server):
    # The server takes 0.3 s a request; with a 0.1 s timeout every request is a timeout, each on a fresh connection.
    cfg = LoadConfig(url=slow_server(0.3).url, rate=10, duration=0.3, arrivals="constant", timeout=0.1, drain=0.5)
    rec = run_engine(cfg, [b"{}"], build_schedule(10, 0.3, "constant"), "raw")
    assert rec.error == ["timeout"] * 3 and np.isnan(rec.done).all()


def serve_then_shut_down(answers: int) -> tuple[str, threading.Thread]:
    """A server on 127.0.0.1 that answers `answers` requests on its first connection, then stops listening and
    closes that connection: a shutdown or a crash, seen from the client."""
    listener = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        conn, _ = listener.accept()
        reader = conn.makefile("rb")
        for _ in range(answers):
            head = b"".join(iter(reader.readline, b"\r\n")).lower()
            reader.read(int(head.split(b"content-length:")[1].split(b"\r\n")[0]))
            conn.sendall(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}")
        listener.close()  # refused from here on
        conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return f"http://127.0.0.1:{listener.getsockname()[1]}", thread


def test_raw_engine_counts_refused_reconnects_and_finishes_the_run():
    # The server answers 3 requests, then goes away: the rest cannot reconnect. The run must still end with its
    # records (so a summary and a CSV), the refused ones counted as errors of their own kind.
    url, thread = serve_then_shut_down(answers=3)
    rec, s = run(url, rate=20, duration=0.5, drain=2.0, engine="raw")
    thread.join(5)
    assert s["requests"] == 10 and s["ok"] == 3 and list(rec.status[:3]) == [200] * 3
    assert s["errors"].get("connect_refused", 0) >= 6  # the 4th may have gone out on the closing connection
    assert sum(s["errors"].values()) == 7 and set(s["errors"]) <= {"connect_refused", "connection"}


def test_a_run_writes_json_csv_png(slow_server, bundle_json, tmp_path, capsys):
    server = slow_server(0.002)
    out = tmp_path / "out"
    argv = [
        "--url",
        server.url,
        "--bundle",
        str(bundle_json),
        "--rate",
        "40",
        "--duration",
        "1",
        "--warmup",
        "0.25",
        "--rows",
        "3",
        "--arrivals",
        "constant",
        "--format",
        "v2",
        "--token",
        "s3cret",
        "--out",
        str(out),
    ]
    assert main(["loadtest", *argv]) == 0
    printed = capsys.readouterr().out
    assert "p99.9" in printed and "achieved" in printed
    doc = orjson.loads((out / "summary.json").read_bytes())
    (s,) = doc["runs"]
    assert doc["path"] == "/v2/models/tiny/infer" and doc["sweep"] is False
    assert s["target_rate"] == 40 and s["requests"] == 40 and s["errors"] == {}
    assert s["ok"] == 40 and s["rows_per_s"] == pytest.approx(3 * s["achieved_rate"])
    assert set(s["latency_ms"]) == {"p50", "p90", "p95", "p99", "p99.9", "mean", "max"}
    assert 0 < s["service_ms"]["p50"] <= s["latency_ms"]["p50"] + 1e-3
    with (out / "requests.csv").open() as fh:
        lines = list(csv.DictReader(fh))
    assert len(lines) == 50 and {line["status"] for line in lines} == {"200"}
    assert all(float(line["done_s"]) >= float(line["sent_s"]) >= float(line["scheduled_s"]) for line in lines)
    assert (out / "latency.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    posts = [r for r in server.requests if r[0] == "POST"]
    assert {r[1] for r in posts} == {"/v2/models/tiny/infer"}
    assert all(r[2]["authorization"] == "Bearer s3cret" for r in posts)
    body = orjson.loads(posts[0][3])
    assert {t["name"] for t in body["inputs"]} == {"user_id", "item_id", "age", "score_hint", "zip_code", "genres"}


def test_a_sweep_finds_the_knee_and_stops_past_it(slow_server, bundle_json, tmp_path, capsys):
    # capacity 25/s: 80/s for 1 s leaves most requests unsent at the drain deadline (errors, whatever the machine's
    # speed); 5/s and 10/s meet an SLO of 2 s, which only a stalled machine could miss
    server = slow_server(0.04)
    out = tmp_path / "sweep"
    argv = [
        "--url",
        server.url,
        "--bundle",
        str(bundle_json),
        "--sweep",
        "5,10,80,160",
        "--duration",
        "1",
        "--warmup",
        "0",
        "--slo-ms",
        "2000",
        "--concurrency",
        "2",
        "--drain",
        "0.3",
        "--out",
        str(out),
    ]
    assert main(["loadtest", *argv]) == 0
    assert "knee: 10 req/s" in capsys.readouterr().out
    doc = orjson.loads((out / "summary.json").read_bytes())
    assert doc["knee_rate"] == 10 and doc["sweep"] is True
    assert [s["target_rate"] for s in doc["runs"]] == [5, 10, 80]  # 160 skipped: 80 already missed the SLO
    assert doc["runs"][2]["achieved_rate"] < 40
    posts = [r for r in server.requests if r[0] == "POST"]
    assert all("instances" in orjson.loads(r[3]) for r in posts) and {r[1] for r in posts} == {"/score"}
    with (out / "requests.csv").open() as fh:
        assert {line["target_rate"] for line in csv.DictReader(fh)} == {"5.0", "10.0", "80.0"}
    assert (out / "latency.png").stat().st_size > 1000


def test_no_server_is_a_clear_error(bundle_json, tmp_path, capsys):
    argv = [
        "--url",
        "http://127.0.0.1:9",
        "--bundle",
        str(bundle_json),
        "--ready-timeout",
        "0.3",
        "--out",
        str(tmp_path),
    ]
    assert main(["loadtest", *argv]) == 2
    assert "/readyz not ready" in capsys.readouterr().err


@pytest.mark.slow  # starts a uvicorn process
def test_raw_engine_survives_a_server_closing_idle_connections(tmp_path):
    # uvicorn closes keep-alive connections idle for longer than its timeout (5 s by default, 0.2 s here): the next
    # request on such a connection must go out on a fresh one, not crash the run or fail.
    import os
    import sys

    from scripts.clients.launch import Servers

    def bare(port: int) -> list[str]:  # scripts/bench/saturate.py's bare app: 200 to anything
        options = f"factory=True, port={port}, timeout_keep_alive=0.2, log_level='warning'"
        return [sys.executable, "-c", f"import uvicorn; uvicorn.run('scripts.bench.saturate:bare_app', {options})"]

    with Servers(tmp_path / "logs") as servers:
        server = servers.start("bare", bare, dict(os.environ), ready="/")
        servers.wait_ready(30)
        cfg = LoadConfig(url=server.url, rate=1, duration=1, concurrency=2, timeout=2.0, drain=2.0)
        schedule = np.array([0.0, 0.05, 0.6, 0.65, 1.3])  # gaps longer than the keep-alive timeout
        rec = run_engine(cfg, [b"{}"], schedule, "raw")
        assert list(rec.status) == [200] * 5 and rec.error == [None] * 5
