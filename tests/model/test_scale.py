"""Training on a log of shards: DDP over 2 gloo ranks equals one process, a 2-rank `apg train` end to end (export
and serving included), kill -9 and resume, and bad shards refused before anything is written."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")  # training-side tests: skipped where torch is absent (a serving-only install)

import torch
from log_testing import write_log

from model.shards import open_log
from model.stream import score_split
from model.train import load_run
from scripts.cli import main

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore:This DataLoader will create")]
HERE = Path(__file__).parent
REPO = HERE.parents[1]
SHARDS = {"train": [(3000, 500), (1700, 400), (300, 300)], "valid": [(800, 300)], "test": [(800, 256)]}


def torchrun(*args: str, timeout: int = 120) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout, cwd=REPO)


def test_ddp_over_two_ranks_equals_one_process_with_the_same_global_batch(tmp_path):
    alone, ranks = tmp_path / "alone.pt", tmp_path / "ranks.pt"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    subprocess.run([sys.executable, str(HERE / "ddp_worker.py"), str(alone)], check=True, env=env, timeout=120)
    done = torchrun(str(HERE / "ddp_worker.py"), str(ranks))
    assert done.returncode == 0, done.stderr[-3000:]
    a, b = torch.load(alone), torch.load(ranks)
    for k in a:  # the mean of two half-batch means is the global batch's mean: equal up to float32 rounding
        torch.testing.assert_close(b[k], a[k], rtol=0, atol=2e-5, msg=k)


@pytest.fixture(scope="module")
def log_dir(tmp_path_factory):
    return write_log(tmp_path_factory.mktemp("log"), SHARDS)


def train_argv(log_dir, out, *extra) -> list[str]:
    return [
        "train",
        "--data",
        str(log_dir),
        "--model",
        "deepfm",
        "--apg",
        "self",
        "--rank",
        "4",
        "--hidden",
        "16,8",
        "--epochs",
        "2",
        "--batch-size",
        "64",
        "--threads",
        "1",
        "--window-rows",
        "600",
        "--out",
        str(out),
        "--quiet",
        *extra,
    ]


def test_two_ranks_train_export_and_serve(log_dir, tmp_path):
    run, bundle = tmp_path / "run", tmp_path / "bundle"
    assert main([*train_argv(log_dir, run), "--nproc", "2", "--checkpoint-steps", "10"]) == 0
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["processes"] == 2 and metrics["ranks_agree"] is True
    assert not (run / "checkpoint.pt").exists()
    # the metrics over both ranks' rows are exactly one process's evaluation of the same weights
    model, schema, _ = load_run(run)
    log = open_log(str(log_dir), schema)
    from features.metrics import evaluate

    s = score_split(model, log, schema, "valid")
    assert evaluate(s["y"], s["p"], s["users"]) == metrics["valid"]
    assert main(["export", str(run), "--out", str(bundle), "--no-optimise"]) == 0
    manifest = json.loads((bundle / "bundle.json").read_text())
    assert manifest["format_version"] == 2 and "vocab" not in manifest["schema"]["fields"][0]
    assert manifest["schema"]["fields"][0]["hash_buckets"] == 64
    from service.bundle import load_bundle

    served = load_bundle(bundle)  # raw rows → the service's encoder → onnxruntime = the trainer's scores
    raw = log.read(log.splits["test"][0]).slice(0, 50).to_pylist()
    clean = [{k: None if v != v else v for k, v in r.items() if k in served.encoder.features} for r in raw]  # NaN:
    feeds = served.encoder.encode_rows(clean)  # a client sends null, which training reads as missing too
    import onnxruntime

    session = onnxruntime.InferenceSession(served.graph_path(optimised=False), providers=["CPUExecutionProvider"])
    session_scores = session.run(["score"], feeds)[0]
    torch_scores = score_split(model, log, schema, "test")["p"][:50]
    np.testing.assert_allclose(session_scores, torch_scores, atol=1e-5)


def test_kill_9_then_the_same_command_resumes(log_dir, tmp_path):
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    extra = ("--checkpoint-steps", "5", "--loader-workers", "1", "--epochs", "3", "--sparse-embeddings")
    assert main(train_argv(log_dir, whole, *extra)) == 0
    cmd = [sys.executable, "-m", "scripts.cli", *train_argv(log_dir, killed, *extra)]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, start_new_session=True)
    deadline = time.monotonic() + 120
    while not (killed / "checkpoint.pt").exists() and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.01)
    time.sleep(0.2)  # somewhere after the first checkpoint
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert (killed / "checkpoint.pt").exists() and not (killed / "metrics.json").exists()
    assert subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, timeout=300).returncode == 0
    a, b = (torch.load(p / "model.pt")["state_dict"] for p in (whole, killed))
    for k in a:  # the same weights as the run that was never interrupted
        torch.testing.assert_close(b[k], a[k], rtol=0, atol=0, msg=k)
    history = [json.loads((p / "metrics.json").read_text())["history"] for p in (whole, killed)]
    for h in (*history[0], *history[1]):
        h.pop("train_loop_seconds")  # (time: the one thing that may differ)
    assert history[0] == history[1]


@pytest.mark.parametrize("nproc", ["1", "2"])
def test_a_bad_shard_exits_2_and_writes_nothing(tmp_path, capsys, nproc):
    log = write_log(tmp_path / "log", SHARDS)
    part = log / "train" / "part-00002.parquet"
    part.write_bytes(part.read_bytes()[:200])
    run = tmp_path / "run"
    assert main([*train_argv(log, run), "--nproc", nproc]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        f"apg train: error: {part}: not a readable Parquet file (Parquet magic bytes not found in footer."
        " Either the file is corrupted or this is not a parquet file.)"
    ]
    assert not run.exists()


def test_nproc_needs_a_log_and_dense_gradients(tmp_path, capsys, log_dir):
    assert main(["train", "--data", "ml-100k", "--nproc", "2", "--out", str(tmp_path / "r")]) == 2
    assert "--nproc N trains a log of Parquet shards" in capsys.readouterr().err
    assert main([*train_argv(log_dir, tmp_path / "r"), "--nproc", "2", "--sparse-embeddings"]) == 2
    assert "--sparse-embeddings trains one process only" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()
