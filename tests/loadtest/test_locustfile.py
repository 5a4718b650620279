"""scripts/loadtest/locustfile.py: a clear message without Locust; with it (the dev extra installs it), a real
headless Locust run against the fake server posts bodies sampled from the bundle to /score.

Locust runs in a process of its own: importing it monkey-patches the standard library (gevent), which must not
happen inside the test process."""

from __future__ import annotations

import csv
import importlib
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

LOCUSTFILE = Path(__file__).resolve().parents[2] / "scripts" / "loadtest" / "locustfile.py"


def test_locustfile_without_locust_says_how_to_get_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "locust", None)  # an import of it now fails, installed or not
    monkeypatch.delitem(sys.modules, "scripts.loadtest.locustfile", raising=False)
    with pytest.raises(ImportError, match="pip install locust"):
        importlib.import_module("scripts.loadtest.locustfile")


def _locust(host: str, bundle: Path, out: Path, **env: str) -> subprocess.CompletedProcess:
    if importlib.util.find_spec("locust") is None:  # (not importorskip: importing Locust here would patch this process)
        pytest.skip("Locust is not installed (it is in the dev extra)")
    argv = [
        sys.executable,
        "-m",
        "locust",
        "-f",
        str(LOCUSTFILE),
        "--headless",
        "--host",
        host,
        "--users",
        "2",
        "--spawn-rate",
        "2",
        "--run-time",
        "3s",
        "--csv",
        str(out / "locust"),
        "--only-summary",
    ]
    env = {**os.environ, "APG_LOCUST_BUNDLE": str(bundle), "APG_LOCUST_ROWS": "3", **env}
    return subprocess.run(
        argv, env=env, cwd=LOCUSTFILE.parents[2], stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60
    )


@pytest.mark.slow  # starts a Locust process
def test_locust_users_post_sampled_rows_to_score(slow_server, bundle_json, tmp_path):
    server = slow_server(0.0)
    run = _locust(server.url, bundle_json, tmp_path)
    assert run.returncode == 0, run.stderr[-2000:]
    posts = [r for r in server.requests if r[0] == "POST"]
    assert posts and {r[1] for r in posts} == {"/score"}
    body = orjson.loads(posts[0][3])
    assert len(body["instances"]) == 3 and set(body["instances"][0]) >= {"user_id", "item_id", "genres"}
    with (tmp_path / "locust_stats.csv").open() as fh:
        stats = {row["Name"]: row for row in csv.DictReader(fh)}
    # Locust's stats, written as the run time ends, count the requests until then: no failure among them
    assert 0 < int(stats["/score"]["Request Count"]) <= len(posts) and int(stats["/score"]["Failure Count"]) == 0


@pytest.mark.slow  # starts a Locust process
def test_locust_refuses_a_remote_host(bundle_json, tmp_path):
    run = _locust("http://example.invalid:8000", bundle_json, tmp_path)
    assert "refusing to load non-loopback host 'example.invalid'" in run.stderr + run.stdout
    assert "APG_LOCUST_ALLOW_REMOTE=1" in run.stderr + run.stdout
