"""Fixtures of the feedback store tests: one real redis-server per session, and stores of either backend.

    def test_x(make_store): store = make_store(max_rows=10)     # the test runs once per backend (BACKENDS)

The Redis tests need Debian's redis-server (scripts/install_debian.sh, which `make test` runs); they are skipped, with
that reason, only where the binary is absent. Every store gets its own SQLite file or Redis key prefix.
"""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Iterator

import pytest

from scripts.bench.feedback import redis_server
from service.feedback import FeedbackConfig, FeedbackStore, open_store

# the Redis runs start a process: slow, like every test here that does
BACKENDS = ["sqlite", pytest.param("redis", marks=pytest.mark.slow)]
NO_AUTO_PRUNE = 10**6  # seconds: tests prune explicitly, at the `now` they choose


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed: bash scripts/install_debian.sh (make test runs it)")
    with redis_server(tmp_path_factory.mktemp("redis")) as url:
        yield url


@pytest.fixture(params=BACKENDS)
def backend_url(request: pytest.FixtureRequest, tmp_path) -> str:
    """A store URL of the backend under test: a fresh SQLite file, or the session's redis-server."""
    if request.param == "sqlite":
        return f"sqlite://{tmp_path}/feedback.db"
    return request.getfixturevalue("redis_url")


@pytest.fixture
def make_store(backend_url: str) -> Iterator:
    """make_store(**config) -> an open store; every store made shares this test's storage (one file or prefix)."""
    prefix, stores = f"test-{uuid.uuid4().hex}", []

    def make(**config) -> FeedbackStore:
        config.setdefault("prune_interval_s", NO_AUTO_PRUNE)
        stores.append(open_store(FeedbackConfig(backend_url, key_prefix=prefix, **config)))
        return stores[-1]

    yield make
    for store in stores:
        store.close()
