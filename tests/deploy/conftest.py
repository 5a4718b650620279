"""Fixtures for the deployment tests: a real `apg serve` of the real bundle on a free loopback port."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from deploy_live import Server, start_apg, stop


@pytest.fixture(scope="session")
def apg_server(bundle_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A real `apg serve` of the real bundle (trained by tests/conftest.py), shared by the live tests."""
    log = tmp_path_factory.mktemp("apg-serve") / "serve.log"
    server = start_apg(bundle_dir, log)
    try:
        yield server
    finally:
        stop(server.process)
