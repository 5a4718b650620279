"""The service as processes: `python -m service` (help, errors, SIGHUP reload, SIGTERM), several workers,
and the import boundary (no torch, no model/ in a fresh interpreter)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from live_server import free_port, stop
from synthetic_bundle import ROWS, SyntheticBundle, build_bundle
from test_service_bundle import unparsable_graphs

ROOT = Path(__file__).resolve().parents[2]


def wait_for(predicate, what: str, timeout: float = 60.0, proc: subprocess.Popen | None = None):
    """Poll `predicate` until it returns a truthy value (bounded); fail early if the process died."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            pytest.fail(f"server exited with {proc.returncode} while waiting for {what}: {proc.stderr.read()[-2000:]}")
        try:
            result = predicate()
            if result:
                return result
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    pytest.fail(f"timed out waiting for {what}")


def start(args: list[str], env: dict | None = None) -> subprocess.Popen:
    """The service as a process; no drain grace unless `env` asks for one (stop() would wait it out)."""
    inherited = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
    return subprocess.Popen(
        [sys.executable, *args],
        cwd=ROOT,
        env={**inherited, "APG_DRAIN_GRACE_S": "0", **(env or {})},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def serve_v1(tmp_path: Path, env: dict) -> tuple[SyntheticBundle, str, subprocess.Popen]:
    """`python -m service` of a fresh v1 synthetic bundle on a free port, once ready: (bundle, url, process)."""
    bundle = build_bundle(tmp_path / "bundle", version="v1")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = start(
        ["-m", "service", "--bundle", str(bundle.path), "--port", str(port)], {"APG_WARMUP_BATCH_SIZES": "1", **env}
    )
    try:
        wait_for(lambda: httpx.get(f"{url}/readyz").status_code == 200, "readiness", proc=proc)
    except BaseException:
        stop(proc)
        raise
    return bundle, url, proc


def test_help():
    out = subprocess.run([sys.executable, "-m", "service", "--help"], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0 and "--bundle" in out.stdout and "--workers" in out.stdout


def test_bad_bundle_fails_fast(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "service", "--bundle", str(tmp_path / "none")], cwd=ROOT, capture_output=True, text=True
    )
    assert out.returncode == 2 and "does not exist" in out.stderr


def test_unparsable_graph_fails_fast_in_one_line(tmp_path):
    bundle = build_bundle(tmp_path / "bundle")
    unparsable_graphs(bundle.path)
    out = subprocess.run(
        [sys.executable, "-m", "service", "--bundle", str(bundle.path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2, out.stderr
    lines = out.stderr.splitlines()  # the fallback's warning (a JSON log line), then the one error
    assert [line for line in lines if line.startswith("python -m service: error:")] == lines[-1:]
    assert "onnxruntime cannot load" in lines[-1] and "model.onnx" in lines[-1] and "Traceback" not in out.stderr


def test_import_boundary():
    code = "import sys, service.app, service.server, service.__main__; print(sorted(m for m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    modules = set(json.loads(out.stdout.replace("'", '"')))
    assert not {m for m in modules if m == "torch" or m.startswith("torch.")}
    assert not {m for m in modules if m == "model" or m.startswith("model.")}
    assert "onnxruntime" in modules  # (sanity: the probe did import the service)


@pytest.mark.slow
def test_serve_sighup_reloads_the_served_bundle_and_stops_gracefully(tmp_path):
    bundle, url, proc = serve_v1(tmp_path, {"APG_ADMIN_TOKEN": "adm"})
    version = lambda want: httpx.get(f"{url}/readyz").json()["model"]["version"] == want  # noqa: E731
    try:
        scored = httpx.post(f"{url}/score", json={"instances": ROWS}).json()
        assert scored["model"]["version"] == "v1"
        build_bundle(bundle.path, version="v2", seed=9)  # new files in place, then SIGHUP
        proc.send_signal(signal.SIGHUP)
        wait_for(lambda: version("v2"), "the SIGHUP reload", proc=proc)
        assert httpx.post(f"{url}/score", json={"instances": ROWS}).json()["model"]["version"] == "v2"
        # After an admin reload to another bundle, SIGHUP reloads that one (it switched back to the first).
        other = build_bundle(tmp_path / "other", version="o1", name="other-apg")
        admin = {"Authorization": "Bearer adm"}
        assert httpx.post(f"{url}/admin/reload", json={"bundle": str(other.path)}, headers=admin).status_code == 200
        build_bundle(other.path, version="o2", seed=3, name="other-apg")
        proc.send_signal(signal.SIGHUP)
        wait_for(lambda: version("o2"), "the SIGHUP reload of the served bundle", proc=proc)
    finally:
        code = stop(proc)
    assert code == 0
    log = proc.stderr.read()
    assert f"SIGHUP: reloading {other.path.resolve()}, the bundle being served" in log
    assert f"reloaded {other.path.resolve()}: other-apg o1 → other-apg o2" in log


@pytest.mark.slow
def test_sigterm_turns_readiness_off_while_requests_are_still_served(tmp_path):
    _, url, proc = serve_v1(tmp_path, {"APG_DRAIN_GRACE_S": "4"})
    try:
        proc.send_signal(signal.SIGTERM)
        draining = wait_for(lambda: (r := httpx.get(f"{url}/readyz")).status_code == 503 and r, "503", proc=proc)
        assert draining.json()["error"]["code"] == "not_ready" and "draining" in draining.text
        assert draining.headers["retry-after"] == "1"
        assert httpx.get(f"{url}/v2/health/ready").status_code == 503
        scored = httpx.post(f"{url}/score", json={"instances": ROWS})  # still served during the grace
        assert scored.status_code == 200 and httpx.get(f"{url}/livez").status_code == 200
        assert proc.wait(timeout=30) == 0  # then it shuts down by itself
    finally:
        stop(proc)


@pytest.mark.slow
def test_two_workers_share_metrics(tmp_path, bundle):
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    code = f"from service.server import serve; serve({str(bundle.path)!r}, '127.0.0.1', {port}, 2)"
    proc = start(["-c", code], {"TMPDIR": str(tmp), "APG_WARMUP_BATCH_SIZES": "1"})
    try:

        def both_workers_serving():
            text = httpx.get(f"{url}/metrics").text
            return any(line.startswith("apg_model_info{") and line.endswith(" 2.0") for line in text.splitlines())

        wait_for(both_workers_serving, "two workers in apg_model_info", proc=proc)
        assert list(tmp.glob("apg-prometheus-*")), "serve() should create its multiprocess directory"
        for _ in range(10):
            assert httpx.post(f"{url}/score", json={"instances": ROWS}).status_code == 200
        text = httpx.get(f"{url}/metrics").text
        assert 'apg_requests_total{code="200",route="/score"} 10.0' in text
        assert f'apg_rows_scored_total{{arm="none",model="synthetic-apg"}} {10.0 * len(ROWS)}' in text
        assert 'apg_request_duration_seconds_bucket{le="0.00025",route="/score"}' in text
    finally:
        code = stop(proc)
    assert code == 0
    assert not list(tmp.glob("apg-prometheus-*")), "the multiprocess directory should be removed on exit"


def test_an_admin_reload_reaches_every_worker(tmp_path):
    # POST /admin/reload lands in one of two workers; the other must follow (service/fanout.py), so that every
    # answer after a short while names the new version and apg_model_info counts two workers serving it.
    v1, v2 = (build_bundle(tmp_path / v, version=v, seed=i) for i, v in enumerate(("v1", "v2")))
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    code = f"from service.server import serve; serve({str(v1.path)!r}, '127.0.0.1', {port}, 2)"
    env = {"APG_WARMUP_BATCH_SIZES": "1", "APG_ADMIN_TOKEN": "admin-t", "APG_BUNDLE_ROOT": str(tmp_path)}
    proc = start(["-c", code], {"TMPDIR": str(tmp_path), **env})
    try:

        def info() -> dict[str, float]:  # version → workers serving it
            lines = [
                line for line in httpx.get(f"{url}/metrics").text.splitlines() if line.startswith("apg_model_info{")
            ]
            return {line.split('version="')[1].split('"')[0]: float(line.rsplit(" ", 1)[1]) for line in lines}

        wait_for(lambda: info().get("v1") == 2.0, "two workers serving v1", proc=proc)
        auth = {"Authorization": "Bearer admin-t"}
        answer = httpx.post(f"{url}/admin/reload", json={"bundle": str(v2.path)}, headers=auth, timeout=60)
        assert answer.status_code == 200 and answer.json()["model"]["version"] == "v2"
        wait_for(lambda: info().get("v2") == 2.0 and not info().get("v1"), "both workers on v2", proc=proc)
        versions = {httpx.post(f"{url}/score", json={"instances": ROWS}).json()["model"]["version"] for _ in range(20)}
        assert versions == {"v2"}  # a new connection each: both workers answered
    finally:
        code = stop(proc)
    assert code == 0
