"""The exported Triton repositories on a real `tritonserver` (scripts/install_triton.sh: the PyPI wheel
nvidia-pytriton 0.7.0, Triton 2.51.0 with the Python backend and no onnxruntime backend), against `apg serve`.

Run for real here:
  - layout "python" (encoder + onnxruntime in one Python-backend model): raw features over `tritonclient.http` score
    as the service's /score does (≤ 1e-6), with optional features left out, a multi-valued feature as [B, K], and
    concurrent requests (dynamic batching on); a broken row answers 400 naming the feature; the model config has
    dynamic batching; Triton's /metrics counts the inferences.
  - the ensemble with its graph step on the Python backend (graph_backend="python", the same ensemble config text):
    raw features → NAME-preprocess (the bundle's encoder) → NAME-onnx → score, equal to /score.
Only read, not run: the ensemble's NAME-onnx on the onnxruntime backend, which this binary lacks. Triton parses its
config and passes the checks it makes when it reads a repository (a control config that breaks one of them, a
preferred batch size above max_batch_size, is refused there and never gets a version), then fails to find the
backend library, the only reason it gives. The checks an onnxruntime backend makes when it loads the graph (dims
against the ONNX inputs) are not run here; the same encoded tensor specs do load and score on the Python backend.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
from live_server import free_port, http, start_apg, stop, wait_for
from synthetic_bundle import ROWS, build_bundle

from features import RowSampler, read_schema
from scripts.clients.http import wait_ready
from scripts.triton import server as triton
from scripts.triton import write_triton_repo

pytestmark = pytest.mark.slow
httpclient = pytest.importorskip("tritonclient.http")
NAME = "synthetic-apg"


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return build_bundle(tmp_path_factory.mktemp("triton-bundle") / "v1")


@pytest.fixture(scope="module")
def service(bundle, tmp_path_factory):
    server = start_apg(bundle.path, tmp_path_factory.mktemp("apg") / "serve.log")
    try:
        yield server
    finally:
        stop(server.process)


class Triton:
    def __init__(self, repo: Path, log: Path, *extra: str) -> None:
        try:
            triton.binary()
        except FileNotFoundError as exc:
            pytest.fail(str(exc))  # `make test` installs it first; a missing server is a failure, not a skip
        self.http, self.metrics, self.log = free_port(), free_port(), log
        cmd = triton.command(repo, self.http, free_port(), self.metrics, "--exit-timeout-secs=5", *extra)
        with open(log, "wb") as out:
            self.process = subprocess.Popen(cmd, env=triton.environment(os.environ), stdout=out, stderr=out)
        self.url = f"http://127.0.0.1:{self.http}"

    def wait_ready(self) -> None:
        wait_ready(self.url, 120, "/v2/health/ready", process=self.process, log=self.log)

    def client(self):
        return httpclient.InferenceServerClient(f"127.0.0.1:{self.http}", concurrency=8)


@pytest.fixture
def start(tmp_path):
    started = []

    def start_triton(repo: Path, *extra: str, ready: bool = True) -> Triton:
        server = Triton(repo, tmp_path / f"triton-{len(started)}.log", *extra)
        started.append(server)
        if ready:
            server.wait_ready()
        return server

    yield start_triton
    for server in started:
        stop(server.process)


def as_sent(rows: list[dict]) -> list[dict]:
    """Rows as a v2 client sends them: string-like features as text, multi-valued ones '|'-joined, numbers float."""
    out = []
    for row in rows:
        sent = {k: "|".join(v) if isinstance(v, list) else str(v) for k, v in row.items() if k != "age"}
        out.append(sent | ({"age": float(row["age"])} if "age" in row else {}))
    return out


def inputs(rows: list[dict], multi_k: int | None = None) -> list:
    """One tritonclient input per feature the rows have: BYTES [B, 1] (or [B, K] lists), FP64 [B, 1]."""
    tensors = []
    for name in rows[0]:
        if name == "age":
            values = np.array([[r["age"]] for r in rows], dtype=np.float64)
            dtype = "FP64"
        elif name == "genres" and multi_k:
            parts = [r["genres"].split("|") for r in rows]
            values = np.array([(p + [""] * multi_k)[:multi_k] for p in parts], dtype=object)
            dtype = "BYTES"
        else:
            values = np.array([[r[name].encode()] for r in rows], dtype=object)
            dtype = "BYTES"
        tensor = httpclient.InferInput(name, list(values.shape), dtype)
        tensor.set_data_from_numpy(values, binary_data=True)
        tensors.append(tensor)
    return tensors


def triton_scores(client, rows: list[dict], multi_k: int | None = None) -> np.ndarray:
    result = client.infer(NAME, inputs(rows, multi_k))
    scores = result.as_numpy("score")
    assert scores.shape == (len(rows), 1)
    return scores.reshape(-1).astype(np.float64)


def service_scores(service, rows: list[dict]) -> np.ndarray:
    status, body = http("POST", f"{service.url}/score", {"instances": rows})
    assert status == 200, body
    return np.asarray(json.loads(body)["scores"], dtype=np.float64)


def sampled_rows(bundle, n: int) -> list[dict]:
    schema, _ = read_schema(bundle.path)
    return as_sent(RowSampler(schema, seed=3, unseen=0.1).rows(n))  # every feature, 10% unseen values


def assert_scores_equal(client, service, rows, multi_k=None):
    ours, theirs = service_scores(service, rows), triton_scores(client, rows, multi_k)
    np.testing.assert_allclose(theirs, ours, rtol=0, atol=1e-6)


def test_python_model_scores_raw_features_like_the_service(bundle, service, start, tmp_path):
    write_triton_repo(bundle.path, tmp_path / "repo", layout="python")
    server = start(tmp_path / "repo")
    client = server.client()
    rows = sampled_rows(bundle, 64)
    assert_scores_equal(client, service, rows)
    assert_scores_equal(client, service, rows[:1])
    assert_scores_equal(client, service, rows, multi_k=3)  # genres as [B, 3] values, "" padding = missing
    # optional features left out of the request entirely (age, gender, zip_code, genres are optional)
    assert_scores_equal(client, service, [{"user_id": r["user_id"], "item_id": r["item_id"]} for r in rows])
    known = as_sent([r for r in ROWS if "age" in r and "genres" in r and r.get("age") is not None])
    assert_scores_equal(client, service, known)
    # concurrent requests of different sizes and feature sets: the dynamic batcher may put them in one execute()
    batches = [rows[i : i + 1 + i % 7] for i in range(0, 48, 3)]
    batches += [[{"user_id": r["user_id"], "item_id": r["item_id"]} for r in rows[:5]]] * 4
    pending = [client.async_infer(NAME, inputs(b)) for b in batches]  # in flight together (client concurrency 8)
    for b, request in zip(batches, pending, strict=True):
        scores = request.get_result().as_numpy("score").reshape(-1)
        np.testing.assert_allclose(scores, service_scores(service, b), rtol=0, atol=1e-6)

    config = client.get_model_config(NAME)
    assert config["backend"] == "python" and "dynamic_batching" in config
    assert config["parameters"]["apg_step"]["string_value"] == "encode+score"
    assert {i["name"]: i["data_type"] for i in config["input"]} == {
        "user_id": "TYPE_STRING",
        "item_id": "TYPE_STRING",
        "age": "TYPE_FP64",
        "gender": "TYPE_STRING",
        "zip_code": "TYPE_STRING",
        "genres": "TYPE_STRING",
    }
    status, text = http("GET", f"http://127.0.0.1:{server.metrics}/metrics")
    assert status == 200
    count = [ln for ln in text.decode().splitlines() if ln.startswith(f'nv_inference_count{{model="{NAME}"')]
    assert count and float(count[0].split()[-1]) >= 64 * 3 + 1  # rows, not requests


def test_python_model_refuses_a_broken_row_like_the_service(bundle, start, tmp_path):
    write_triton_repo(bundle.path, tmp_path / "repo", layout="python")
    client = start(tmp_path / "repo").client()
    with pytest.raises(httpclient.InferenceServerException) as err:  # required user_id missing in row 1
        client.infer(NAME, inputs([{"user_id": "196", "item_id": "242"}, {"user_id": " ", "item_id": "242"}]))
    assert err.value.status() == "400" and "missing required feature 'user_id', row 1" in err.value.message()
    with pytest.raises(httpclient.InferenceServerException) as err:  # a required input left out altogether
        client.infer(NAME, inputs([{"item_id": "242"}]))
    assert err.value.status() == "400"
    # in flight together, so the dynamic batcher may hand them to one execute(): only the broken one fails
    good, bad = [{"user_id": "196", "item_id": "242"}] * 3, [{"user_id": "", "item_id": "242"}]
    pending = [client.async_infer(NAME, inputs(bad if i == 5 else good)) for i in range(12)]
    for i, request in enumerate(pending):
        if i == 5:
            with pytest.raises(httpclient.InferenceServerException, match="missing required feature 'user_id'"):
                request.get_result()
        else:
            assert request.get_result().as_numpy("score").shape == (3, 1)


def test_ensemble_runs_preprocess_then_graph_like_the_service(bundle, service, start, tmp_path):
    write_triton_repo(bundle.path, tmp_path / "repo", graph_backend="python")
    write_triton_repo(bundle.path, tmp_path / "full")  # what a Triton with the onnxruntime backend serves
    ensemble = (tmp_path / "repo" / NAME / "config.pbtxt").read_text()
    assert ensemble == (tmp_path / "full" / NAME / "config.pbtxt").read_text()
    server = start(tmp_path / "repo")
    client = server.client()
    rows = sampled_rows(bundle, 32)
    assert_scores_equal(client, service, rows)
    assert_scores_equal(client, service, [{"user_id": r["user_id"], "item_id": r["item_id"]} for r in rows])
    config = client.get_model_config(NAME)
    steps = [s["model_name"] for s in config["ensemble_scheduling"]["step"]]
    assert config["platform"] == "ensemble" and steps == [f"{NAME}-preprocess", f"{NAME}-onnx"]
    assert "dynamic_batching" in client.get_model_config(f"{NAME}-preprocess")


def test_onnxruntime_step_config_is_accepted_and_only_its_backend_is_missing(bundle, start, tmp_path):
    repo = tmp_path / "full"
    write_triton_repo(bundle.path, repo)
    control = repo / "control"  # the graph model with one rule broken: a preferred batch size above max_batch_size
    (control / "1").mkdir(parents=True)
    (control / "1" / "model.onnx").write_bytes((repo / f"{NAME}-onnx" / "1" / "model.onnx").read_bytes())
    text = (repo / f"{NAME}-onnx" / "config.pbtxt").read_text().replace(f"{NAME}-onnx", control.name)
    (control / "config.pbtxt").write_text(
        text.replace("preferred_batch_size: [ 64, 256 ]", "preferred_batch_size: [ 8192 ]")
    )
    server = start(repo, "--exit-on-error=false", "--strict-readiness=false")
    states = wait_for(lambda: _settled(server), 60, what="models to finish loading")
    # Triton parsed and validated both configs (a model only gets a version once its config passes), loaded the
    # encoder step, and refused the graph step for the one reason that it has no onnxruntime backend
    assert set(states) == {f"{NAME}-preprocess", f"{NAME}-onnx"}
    assert states[f"{NAME}-preprocess"] == ("READY", "")
    state, reason = states[f"{NAME}-onnx"]
    assert state == "UNAVAILABLE" and reason == (
        "Invalid argument: unable to find backend library for backend 'onnxruntime', "
        "try specifying runtime on the model configuration."
    )
    # the control never got that far: its config was refused when Triton read the repository
    assert "Poll failed for model directory 'control': dynamic batching preferred size must be <= max batch size" in (
        server.log.read_text(errors="replace")
    )


def _settled(server: Triton) -> dict[str, tuple[str, str]] | None:
    """{model: (state, reason)} for every model with a version, once none is loading any more."""
    status, body = http("POST", f"{server.url}/v2/repository/index")
    assert status == 200
    models = {m["name"]: (m.get("state", ""), m.get("reason", "")) for m in json.loads(body) if "version" in m}
    return models if len(models) >= 2 and all(s in ("READY", "UNAVAILABLE") for s, _ in models.values()) else None
