"""Fixtures shared by both halves' tests. Real MovieLens-100K rows are fetched once into the git-ignored cache."""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import pytest

# A test that uses one of these trains models (once per session) or starts `apg serve`: it is `slow` whether or not
# it says so. Tests that train or start processes otherwise carry @pytest.mark.slow themselves.
SLOW_FIXTURES = {"trained_runs", "bundle_dir", "apg_server"}


LEFT_BEHIND = "apg-"  # the prefix of every temporary folder or file the project's code and tests make


def _ours_in_tmp() -> set[str]:
    return {p.name for p in Path(tempfile.gettempdir()).iterdir() if p.name.startswith(LEFT_BEHIND)}


def pytest_sessionstart(session):
    session.config.stash[_BEFORE] = _ours_in_tmp()


def pytest_sessionfinish(session, exitstatus):
    """The run fails if it left apg-* folders or files in the system temp dir (`make test` used to leave hundreds)."""
    testing = sys.modules.get("service_testing")  # tests/service: the apps' state folders, gone with the run
    if testing is not None:
        testing.VAR.cleanup()
    left = sorted(_ours_in_tmp() - session.config.stash.get(_BEFORE, set()))
    if left:
        print(f"\nthe tests left {len(left)} apg-* entries in {tempfile.gettempdir()}: {', '.join(left[:5])}")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


_BEFORE = pytest.StashKey[set]()


def pytest_collection_modifyitems(items):
    for item in items:
        if SLOW_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def ml100k_small():
    """The first 20,000 real ML-100K ratings, split and encoded (schema fitted on their training split)."""
    pytest.importorskip("torch")
    from model.data import load_dataset

    return load_dataset("ml-100k", limit=20_000, seed=0)


@pytest.fixture(scope="session")
def trained_runs(tmp_path_factory):
    """Small DeepFM runs on real ML-100K rows, one per APG condition (1 epoch each): condition -> run dir."""
    pytest.importorskip("torch")
    from model.apg import APGConfig
    from model.train import TrainConfig, train_run
    from model.zoo import ModelConfig

    root = tmp_path_factory.mktemp("runs")
    cfg = TrainConfig(limit=20_000, epochs=1, batch_size=256)
    runs = {}
    for cond in ("none", "group", "mix", "self"):
        mc = ModelConfig("deepfm", hidden=(64, 32), apg=APGConfig(cond, rank=8, overparam=16 if cond == "self" else 0))
        train_run(mc, cfg, root / cond, progress=False)
        runs[cond] = root / cond
    return runs


@pytest.fixture(scope="session")
def bundle_dir(trained_runs, tmp_path_factory):
    """A real bundle exported from the self-wise APG run (over-parameterised factors merged at export)."""
    from model.bundle import write_bundle

    out = tmp_path_factory.mktemp("bundles") / "deepfm-self"
    write_bundle(trained_runs["self"], out)
    return out


@pytest.fixture(scope="session")
def apg_server(bundle_dir, tmp_path_factory):
    """A real `apg serve` subprocess of the real bundle on a free 127.0.0.1 port (torch-free), shared by live tests."""
    from live_server import start_apg, stop

    server = start_apg(bundle_dir, tmp_path_factory.mktemp("apg-serve") / "serve.log")
    try:
        yield server
    finally:
        stop(server.process)
