"""A real Prometheus server scrapes a real `apg serve` with the repo's scrape config, and answers PromQL.

Needs the `prometheus` and `promtool` binaries (scripts/install_debian.sh installs Debian's package;
`make test` runs it). Only the process started here is used, on a free 127.0.0.1 port.
"""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import time
import urllib.parse
from pathlib import Path

import pytest
import yaml
from deploy_files import REPO, dashboard_targets, promql_metric_names
from live_server import free_port, http, log_tail, score, stop, wait_for

PROMETHEUS, PROMTOOL = shutil.which("prometheus"), shutil.which("promtool")
pytestmark = pytest.mark.skipif(
    not (PROMETHEUS and PROMTOOL),
    reason="prometheus/promtool not on PATH: run scripts/install_debian.sh (as root) to install them",
)
CONFIG = REPO / "deploy/prometheus/prometheus.yml"
P99 = "histogram_quantile(0.99, sum(rate(apg_request_duration_seconds_bucket[1m])) by (le))"
UP_TIMEOUT_S = 60.0


def test_promtool_accepts_the_repo_config():
    result = subprocess.run([PROMTOOL, "check", "config", str(CONFIG)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.fixture
def prometheus(apg_server, tmp_path: Path):
    """Prometheus scraping apg_server every second: the repo's `apg` job, target and interval rewritten."""
    config = yaml.safe_load(CONFIG.read_text())
    (job,) = [j for j in config["scrape_configs"] if j["job_name"] == "apg"]
    job["static_configs"][0]["targets"] = [f"127.0.0.1:{apg_server.port}"]
    job["scrape_interval"], job["scrape_timeout"] = "1s", "1s"
    config["global"] |= {"scrape_interval": "1s", "evaluation_interval": "1s"}
    path = tmp_path / "prometheus.yml"
    path.write_text(yaml.safe_dump(config))
    check = subprocess.run([PROMTOOL, "check", "config", str(path)], capture_output=True, text=True, timeout=60)
    assert check.returncode == 0, check.stdout + check.stderr

    port, log = free_port(), tmp_path / "prometheus.log"
    cmd = [
        PROMETHEUS,
        f"--config.file={path}",
        f"--storage.tsdb.path={tmp_path / 'tsdb'}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--log.level=warn",
    ]
    with open(log, "wb") as out:
        process = subprocess.Popen(cmd, cwd=tmp_path, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(
            lambda: _alive(process, log) and http("GET", f"{url}/-/ready", timeout=2)[0] == 200, 30, what="prometheus"
        )
        yield url
    finally:
        stop(process)


def test_prometheus_scrapes_apg_and_answers_the_latency_quantile(apg_server, prometheus):
    assert score(apg_server) == 200
    assert http("POST", f"{apg_server.url}/score", b"{not json")[0] == 400  # one error for the error panels

    def target_up() -> bool:
        score(apg_server)
        targets = _api(prometheus, "targets")["activeTargets"]
        return any(t["labels"].get("job") == "apg" and t["health"] == "up" for t in targets)

    wait_for(target_up, UP_TIMEOUT_S, interval=0.5, what="the apg target to be up")

    def p99() -> float | None:
        score(apg_server)  # keep the counters moving: rate() needs two scrapes with an increase
        result = _query(prometheus, P99)
        values = [float(r["value"][1]) for r in result]
        return values[0] if values and math.isfinite(values[0]) else None

    value = wait_for(p99, UP_TIMEOUT_S, interval=0.5, what=f"a finite value of {P99}")
    assert 0 < value <= 10.0  # seconds, within the histogram's buckets
    assert [float(r["value"][1]) for r in _query(prometheus, 'up{job="apg"}')] == [1.0]


def test_every_dashboard_query_runs_on_prometheus(apg_server, prometheus):
    """Each panel's PromQL (Grafana variables filled in) is valid, and returns data once traffic has flowed."""
    exprs = {
        target["expr"].replace("$__rate_interval", "1m").replace("$job", "apg").replace("$route", ".*")
        for _, target in dashboard_targets(json.loads((REPO / "deploy/grafana/dashboards/apg.json").read_text()))
    }
    _, body = http("GET", f"{apg_server.url}/metrics")
    sampled = {line.split("{")[0].split(" ")[0] for line in body.decode().splitlines() if line and line[0] != "#"}

    def without_data() -> list[str]:
        score(apg_server)
        http("POST", f"{apg_server.url}/score", b"[]")  # a 4xx for the error panels
        return [e for e in sorted(exprs) if not _query(prometheus, e) and _has_samples(e, sampled)]

    deadline = time.monotonic() + UP_TIMEOUT_S
    empty = without_data()
    while empty and time.monotonic() < deadline:
        time.sleep(1)
        empty = without_data()
    assert not empty, f"dashboard queries without data after {UP_TIMEOUT_S:.0f} s of traffic: {empty}"


# ------------------------------------------------------------------------------------------------ helpers
def _alive(process: subprocess.Popen, log: Path) -> bool:
    if process.poll() is not None:
        raise AssertionError(f"prometheus exited with {process.returncode}:\n{log_tail(log)}")
    return True


def _api(url: str, path: str, **params) -> dict:
    query = f"?{urllib.parse.urlencode(params)}" if params else ""
    status, body = http("GET", f"{url}/api/v1/{path}{query}")
    payload = json.loads(body)
    assert status == 200 and payload["status"] == "success", payload
    return payload["data"]


def _query(url: str, expr: str) -> list[dict]:
    return _api(url, "query", query=expr)["result"]


def _has_samples(expr: str, sampled: set[str]) -> bool:
    """False for queries over metrics with no series yet (e.g. reloads before the first reload)."""
    return all(name in sampled or name == "up" for name in promql_metric_names(expr))
