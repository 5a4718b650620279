"""Helpers for the service tests (imported by name: `conftest` is ambiguous when tests/ has one too)."""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
import warnings
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
from fastapi import FastAPI
from prometheus_client import CollectorRegistry

from service.app import create_app
from service.settings import Settings

with warnings.catch_warnings():  # starlette's TestClient nags about httpx vs httpx2; both work here
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient

__all__ = ["ADMIN", "TestClient", "make_app", "make_settings", "run", "serving"]


ADMIN = {"Authorization": "Bearer admin-test"}  # every test client sends it; /score ignores it without auth_token
# Each app's state directory (an experiment's SQLite feedback store) lives in one folder removed when the test
# process exits (tests/conftest.py fails a run that leaves apg-* folders in the temp dir)
VAR = tempfile.TemporaryDirectory(prefix="apg-test-var-")


def make_settings(bundle_path: Path, **overrides) -> Settings:
    values = {"bundle": bundle_path, "providers": "cpu", "warmup_batch_sizes": [1, 8], "log_level": "warning"}
    values["admin_token"] = "admin-test"
    values["bundle_root"] = Path(tempfile.gettempdir())  # tests reload bundles from their own tmp_path
    values["data_dir"] = Path(tempfile.mkdtemp(prefix="var-", dir=VAR.name))  # an experiment's SQLite feedback store
    values["inline_max_rows"] = 0  # the thread-pool path, so that a slowed Model.run cannot block the loop
    return Settings(**(values | overrides))


def make_app(bundle_path: Path, **overrides) -> FastAPI:
    return create_app(make_settings(bundle_path, **overrides), registry=CollectorRegistry())


@contextlib.asynccontextmanager
async def serving(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """The app's lifespan plus an in-process async client (for tests that need real concurrency)."""
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://apg.test", timeout=30, headers=ADMIN) as c:
            yield c


def run(coro):
    return asyncio.run(coro)
