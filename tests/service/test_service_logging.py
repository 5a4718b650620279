"""The JSON access log: one line per request with id, route template, status, rows and duration; feature values
only with APG_LOG_FEATURES; probes only at debug. The fast path (written straight to the service's own handler)
and the logging path (when other handlers are attached) produce the same line."""

from __future__ import annotations

import contextlib
import io
import logging

import orjson
import pytest
from service_testing import TestClient, make_app
from synthetic_bundle import ROWS

from service import observe

ACCESS = logging.getLogger("apg.access")


@pytest.fixture
def captured(bundle):
    """(client factory, lines): apps log at info into a StringIO that replaces the JSON handler's stream."""
    make_app(bundle.path)  # configure_logging: installs the service's JSON handler once per process
    apg = logging.getLogger("apg")
    handler = next(h for h in apg.handlers if getattr(h, "_apg", False))
    buffer = io.StringIO()
    # swapped, not setStream(): that flushes the old stream, which an earlier test's captured stderr may have closed
    old, handler.stream = handler.stream, buffer
    apps = []

    def client(**overrides):
        apps.append(TestClient(make_app(bundle.path, log_level="info", **overrides)))
        return apps[-1].__enter__()

    def lines():
        return [orjson.loads(line) for line in buffer.getvalue().splitlines() if '"apg.access"' in line]

    yield client, lines
    for c in apps:
        c.__exit__(None, None, None)
    handler.setStream(old)
    apg.setLevel("WARNING")


@contextlib.contextmanager
def as_deployed():
    """Only the service's own handler on the `apg` logger, as in a deployment (pytest adds its capture handlers to
    non-propagating loggers while a test runs)."""
    apg = logging.getLogger("apg")
    others = [h for h in apg.handlers if not getattr(h, "_apg", False)]
    for h in others:
        apg.removeHandler(h)
    try:
        yield
    finally:
        for h in others:
            apg.addHandler(h)


def test_one_line_per_request_without_feature_values(captured):
    client, lines = captured
    c = client()
    with as_deployed():
        assert observe._sole_handler() is not None  # the fast path is the one under test here
        assert c.post("/score", json={"instances": ROWS[:3]}, headers={"x-request-id": "abc-1"}).status_code == 200
        assert c.post("/score", json={"instances": []}).status_code == 400
        c.get("/livez")  # a probe: debug only
    ok, bad = lines()
    assert set(ok) == {"ts", "level", "logger", "msg", "request_id", "method", "route", "status", "rows", "duration_s"}
    assert (ok["level"], ok["logger"], ok["msg"], ok["request_id"]) == ("info", "apg.access", "request", "abc-1")
    assert (ok["method"], ok["route"], ok["status"], ok["rows"]) == ("POST", "/score", 200, 3)
    assert 0 < ok["duration_s"] < 60
    assert (bad["status"], bad["rows"], bad["error"], bad["field"]) == (400, None, "empty_batch", "instances")
    assert "196" not in str(ok)  # ROWS[0]'s user id: no feature values by default


def test_feature_values_only_when_asked(captured):
    client, lines = captured
    with as_deployed():
        client(log_features=True).post("/score", json={"instances": ROWS[:1]})
    assert lines()[-1]["features"] == {"instances": ROWS[:1]}


def test_other_handlers_get_the_same_line_through_logging(captured):
    client, lines = captured
    c = client()
    with as_deployed():
        c.post("/score", json={"instances": ROWS[:2]})
    fast = lines()[-1]
    records: list[logging.LogRecord] = []
    extra = logging.Handler()
    extra.emit = records.append
    ACCESS.addHandler(extra)
    try:
        assert observe._sole_handler() is None
        c.post("/score", json={"instances": ROWS[:2]})
    finally:
        ACCESS.removeHandler(extra)
    assert len(records) == 1 and records[0].fields["rows"] == 2  # the user's handler saw the record
    slow = lines()[-1]  # ... and the JSON handler still wrote the line, through logging this time
    drop = {"ts", "request_id", "duration_s"}
    assert {k: v for k, v in slow.items() if k not in drop} == {k: v for k, v in fast.items() if k not in drop}


def test_a_handler_level_or_a_broken_stream_is_respected(captured):
    client, lines = captured
    c = client()
    handler = next(h for h in logging.getLogger("apg").handlers if getattr(h, "_apg", False))
    with as_deployed():
        handler.setLevel(logging.WARNING)  # the handler, not the logger, filters: no access line at all
        try:
            assert observe._sole_handler() is None
            c.post("/score", json={"instances": ROWS[:1]})
        finally:
            handler.setLevel(logging.NOTSET)
        assert lines() == []

        class Broken(io.StringIO):
            def write(self, s):
                raise BrokenPipeError("stderr is gone")

        old = handler.setStream(Broken())
        try:  # the request still succeeds; logging's own error handling deals with the stream
            assert c.post("/score", json={"instances": ROWS[:1]}).status_code == 200
        finally:
            handler.setStream(old)
