"""Fixtures of the load generator's tests: the fake slow server and the small fitted schema (tests/fake_server.py)."""

from fake_server import bundle_json, schema, slow_server  # noqa: F401 (fixtures)
