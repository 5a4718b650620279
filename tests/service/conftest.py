"""Fixtures for the service tests: a synthetic bundle (no torch) and apps with fresh registries."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi import FastAPI
from service_testing import ADMIN, TestClient, make_app
from synthetic_bundle import SyntheticBundle, build_bundle


@pytest.fixture(scope="session")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> SyntheticBundle:
    """The default bundle (version v1). Read-only: tests that break bundles build their own."""
    return build_bundle(tmp_path_factory.mktemp("bundles") / "v1", version="v1", seed=0)


@pytest.fixture
def make_bundle(tmp_path: Path):
    def make(version: str = "v2", seed: int = 1, **kw) -> SyntheticBundle:
        return build_bundle(tmp_path / version, version=version, seed=seed, **kw)

    return make


@pytest.fixture
def app(bundle: SyntheticBundle) -> FastAPI:
    return make_app(bundle.path)


@pytest.fixture
def client(app: FastAPI) -> Iterator[TestClient]:
    with TestClient(app, raise_server_exceptions=False, headers=ADMIN) as c:
        yield c
