"""Fixtures of the clients' tests: the fake slow server and the small fitted schema (tests/fake_server.py)."""

from fake_server import schema, slow_server  # noqa: F401 (fixtures)
