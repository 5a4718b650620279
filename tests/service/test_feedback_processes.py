"""Two processes share one store, as `--workers 2` share the SQLite file and replicas share Redis: both record at
the same time, then both send feedback for every row of both; each row is accepted exactly once."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid

import pytest
from live_server import REPO

from service.feedback import FeedbackConfig, open_store

pytest_plugins = ["feedback_testing"]  # backend_url: once per backend
pytestmark = pytest.mark.slow  # starts processes
REQUESTS, ROWS = 200, 3

WORKER = """
import json, random, sys, time
from pathlib import Path
from service.feedback import FeedbackConfig, open_store

url, prefix, me, other, folder, n = sys.argv[1:]
n, folder = int(n), Path(folder)
store = open_store(FeedbackConfig(url, key_prefix=prefix, prune_interval_s=3600))
for i in range(n):
    store.record(f"{me}-{i}", me, "deepfm", "v1", [(i % 10) / 10, 0.5, 0.25])
assert store.flush(60)
(folder / f"{me}.ready").touch()
deadline = time.monotonic() + 60
while not (folder / f"{other}.ready").exists():
    assert time.monotonic() < deadline, "the other process never got ready"
    time.sleep(0.01)
items = [
    {"request_id": f"{who}-{i}", "row": row, "clicked": (i + row) % 3 == 0}
    for who in (me, other) for i in range(n) for row in range(3)
]
random.Random(me).shuffle(items)
counts = {}
for k in range(0, len(items), 25):
    for o in store.feedback(items[k : k + 25]):
        counts[o.outcome] = counts.get(o.outcome, 0) + 1
store.close()
print(json.dumps(counts))
"""


def test_two_processes_record_and_feed_back_concurrently_with_exact_counts(backend_url, tmp_path):
    prefix, env = f"test-{uuid.uuid4().hex}", {**os.environ, "PYTHONPATH": str(REPO)}
    names = ("a", "b")
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, backend_url, prefix, me, other, str(tmp_path), str(REQUESTS)],
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for me, other in (names, names[::-1])
    ]
    results = []
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
        results.append(json.loads(out))
    rows = 2 * REQUESTS * ROWS
    assert sum(r.get("accepted", 0) for r in results) == rows
    assert sum(r.get("duplicate", 0) for r in results) == rows
    assert all(set(r) <= {"accepted", "duplicate"} for r in results)
    clicks = sum((i + row) % 3 == 0 for i in range(REQUESTS) for row in range(ROWS))
    with open_store(FeedbackConfig(backend_url, key_prefix=prefix)) as store:
        window = store.window(3600, now=time.time())
    assert sorted(window) == ["a", "b"]
    for s in window.values():
        assert (s.impressions, s.labelled, s.clicks) == (REQUESTS * ROWS, REQUESTS * ROWS, clicks)
