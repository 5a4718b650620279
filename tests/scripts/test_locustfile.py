"""scripts/locustfile.py: a clear message without Locust; a user class that posts to /score with it."""

from __future__ import annotations

import importlib
import sys

import pytest


def test_locustfile_without_locust_says_how_to_get_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "locust", None)  # an import of it now fails, installed or not
    monkeypatch.delitem(sys.modules, "scripts.locustfile", raising=False)
    with pytest.raises(ImportError, match="pip install locust"):
        importlib.import_module("scripts.locustfile")


def test_locustfile_documents_that_locust_is_closed_loop():
    source = importlib.util.find_spec("scripts.locustfile").origin
    doc = open(source).read().split('"""')[1]
    assert "CLOSED-LOOP" in doc and "under-reports latency" in doc and "apg loadtest" in doc


def test_locust_user_posts_to_score():
    pytest.importorskip("locust")
    module = importlib.import_module("scripts.locustfile")
    assert module.ScoreUser.wait_time(None) == 0
