"""The Makefile's quick start, read with `make -n` (prints the commands, runs none): what `make serve` trains with."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from scripts.cli import build_parser

REPO = Path(__file__).resolve().parents[2]


def make_dry_run(tmp_path: Path, *assignments: str) -> list[str]:
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    argv = ["make", "-n", "bundle", f"BUNDLE={tmp_path}/bundle", f"RUN={tmp_path}/run", *assignments]
    out = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=30, check=True).stdout
    return out.splitlines()


def test_make_serve_trains_the_default_model_with_one_thread(tmp_path):
    pytest.importorskip("torch")  # `apg train`'s options come from model/'s TrainConfig
    # Two torch threads on two cores took 35 s quiet and 685 s with the other core busy (docs/TRAINING.md).
    (train,) = [line for line in make_dry_run(tmp_path) if " train " in line]
    args = build_parser().parse_args(train.split(maxsplit=1)[1].split())
    assert args.threads == 1 and args.model == "deepfm" and args.condition == "self"
    (train,) = [line for line in make_dry_run(tmp_path, "TRAIN_THREADS=2") if " train " in line]
    assert build_parser().parse_args(train.split(maxsplit=1)[1].split()).threads == 2
