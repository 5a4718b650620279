"""`apg bench --mlserver` without MLServer: the settings files it writes, the pins, the clear error when its virtual
environment is missing. The runtime itself is checked against the service's v2 decoder only where .venv-mlserver
exists (it is never installed in CI); the real run is `apg bench --mlserver`."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
from importlib import metadata

import orjson
import pytest

from scripts.bench import harness
from scripts.bench.peers import mlserver_peer
from scripts.cli import main
from scripts.clients.http import HOST
from scripts.clients.launch import REPO


def test_setup_pins_mlserver_and_uvloop_and_matches_this_environment():
    reqs = mlserver_peer.requirements()
    assert reqs[:2] == ["mlserver==1.7.1", "uvloop==0.21.0"]
    assert f"onnxruntime=={metadata.version('onnxruntime')}" in reqs and f"numpy=={metadata.version('numpy')}" in reqs


def test_the_model_repository_serves_the_bundle_under_its_name(tmp_path):
    bundle = tmp_path / "bundle"
    folder = mlserver_peer.write_repository(tmp_path / "repo", bundle, "deepfm", "v7")
    settings = json.loads((folder / "deepfm" / "model-settings.json").read_text())
    assert (
        settings["name"] == "deepfm"
        and settings["implementation"] == "scripts.bench.peers.mlserver_runtime.BundleRuntime"
    )
    assert settings["parameters"] == {"uri": str(bundle.resolve()), "version": "v7"}
    assert settings["max_batch_size"] == 0  # adaptive batching off
    argv = mlserver_peer.command(tmp_path / "venv", folder, 18080)
    assert argv == [str(tmp_path / "venv" / "bin" / "mlserver"), "start", str(folder.resolve())]
    server = json.loads((folder / "settings.json").read_text())
    assert server["host"] == HOST and server["http_port"] == 18080 and server["parallel_workers"] == 0
    assert server["debug"] is False and len({server["http_port"], server["grpc_port"], server["metrics_port"]}) == 3


def test_the_server_environment_puts_the_repository_on_the_path():
    env = mlserver_peer.server_env({"PYTHONPATH": "/x", "APG_INTRA_OP_THREADS": "1", "MLSERVER_DEBUG": "true"})
    assert env["PYTHONPATH"].split(":") == [str(REPO), "/x"] and env["APG_INTRA_OP_THREADS"] == "1"
    assert "MLSERVER_DEBUG" not in env  # settings.json is the one place MLServer's settings come from


def test_a_missing_environment_names_the_setup_command(tmp_path, bundle_json, capsys):
    with pytest.raises(FileNotFoundError, match="python -m scripts.bench.peers.mlserver_peer setup --venv"):
        mlserver_peer.require_venv(tmp_path / "nowhere")
    argv = ["--bundle", str(bundle_json), "--out", str(tmp_path / "out"), "--mlserver", str(tmp_path / "nowhere")]
    assert main(["bench", *argv]) == 2
    err = capsys.readouterr().err
    assert "MLServer's own virtual environment" in err and "python -m scripts.bench.peers.mlserver_peer setup" in err
    assert not (tmp_path / "out").exists()  # refused before anything ran
    with pytest.raises(RuntimeError, match="python -m scripts.bench.peers.mlserver_peer setup"):
        mlserver_peer.check(_fake_venv(tmp_path, '{"mlserver": "1.7.1", "uvloop": "0.23.0"}'))


def test_check_reads_the_versions_of_the_environment(tmp_path):
    versions = '{"mlserver": "1.7.1", "uvloop": "0.21.0", "onnxruntime": "1"}'
    assert mlserver_peer.check(_fake_venv(tmp_path, versions))["uvloop"] == "0.21.0"


def test_the_flag_defaults_to_the_repository_venv(bundle_json):
    p = argparse.ArgumentParser()
    harness.add_arguments(p)
    args = p.parse_args(["--bundle", str(bundle_json), "--mlserver"])
    assert args.mlserver == str(REPO / ".venv-mlserver")
    assert p.parse_args([]).mlserver is None


def _fake_venv(tmp_path, printed: str):
    """A "virtual environment" whose python prints `printed` whatever it is asked."""
    venv = tmp_path / "fake-venv"
    (venv / "bin").mkdir(parents=True)
    python = venv / "bin" / "python"
    python.write_text(f"#!/bin/sh\necho '{printed}'\n")
    python.chmod(0o755)
    return venv


RUNTIME_CHECK = """
import sys, orjson
from mlserver.types import InferenceRequest
from scripts.bench.peers.mlserver_runtime import tensor_columns
print(orjson.dumps(tensor_columns(InferenceRequest.model_validate_json(sys.stdin.buffer.read()).inputs)).decode())
"""


def test_the_runtime_decodes_v2_json_as_the_service_does(schema):
    """MLServer's side of the comparison does the service's work: its columns equal service.tensors.decode_inputs'."""
    python = mlserver_peer.venv_python(mlserver_peer.DEFAULT_VENV)
    if not python.exists():
        pytest.skip(f"no {mlserver_peer.DEFAULT_VENV.name}/ (python -m scripts.bench.peers.mlserver_peer setup)")
    from features import RowSampler
    from scripts.loadtest.plan import encode_body
    from service.tensors import decode_inputs

    sampler = RowSampler(schema, seed=3)
    rows = sampler.rows(5)
    rows[1]["genres"] = ["Drama", "War"]  # one multi-valued feature sent as [B, K]
    for r in rows:
        r["genres"] = r["genres"] if isinstance(r["genres"], list) else r["genres"].split("|")
    body = encode_body(rows, "v2", sampler.numeric)
    env = mlserver_peer.server_env(os.environ)
    run = subprocess.run([str(python), "-c", RUNTIME_CHECK], input=body, env=env, cwd=REPO, capture_output=True)
    assert run.returncode == 0, run.stderr.decode()[-2000:]
    columns, _ = decode_inputs(orjson.loads(body), b"", 100)
    assert orjson.loads(run.stdout) == {k: list(v) for k, v in columns.items()}
