"""Fixtures of the item store tests: a schema file, its catalogue, and a store URL per backend.

    def test_x(store_url, catalogue): ...     # runs once with file://tmp, once with a real redis-server (slow)

The Redis runs need Debian's redis-server (scripts/install_debian.sh, which `make test` runs); they are skipped, with
that reason, only where the binary is absent.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from items_testing import RedisProcess, make_schema, make_table, write_csv

BACKENDS = ["file", pytest.param("redis", marks=pytest.mark.slow)]  # redis starts a process


@pytest.fixture
def schema_path(tmp_path: Path) -> Path:
    path = tmp_path / "schema.json"  # --bundle accepts a bare schema.json (features.read_schema)
    make_schema().save(path)
    return path


@pytest.fixture
def catalogue(tmp_path: Path) -> Path:
    return write_csv(tmp_path / "items.csv", make_table())


@pytest.fixture(scope="session")
def redis_session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisProcess]:
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed: bash scripts/install_debian.sh redis-server redis-server")
    server = RedisProcess(tmp_path_factory.mktemp("redis")).start()
    yield server
    server.stop()


@pytest.fixture
def redis_process(tmp_path: Path) -> Iterator[RedisProcess]:
    """A redis-server of this test's own, which it may stop, pause and restart."""
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed: bash scripts/install_debian.sh redis-server redis-server")
    server = RedisProcess(tmp_path).start()
    yield server
    server.stop()


@pytest.fixture(params=BACKENDS)
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh store of the backend under test: a new folder, or the session's redis-server, flushed."""
    if request.param == "file":
        return f"file://{tmp_path}/store"
    import redis

    url = request.getfixturevalue("redis_session").url
    with redis.Redis.from_url(url) as client:
        client.flushdb()
    return url
