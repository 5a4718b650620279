"""Concurrency: micro-batching, hot reload under load, inline vs pool calls. Real concurrency on one event loop
(overload: test_service_admission.py)."""

from __future__ import annotations

import asyncio
import dataclasses
import shutil
import threading
import time

import numpy as np
from service_testing import make_app, run, serving
from synthetic_bundle import ROWS, reference_scores

from service.bundle import load_bundle
from service.runtime import Model


def scores_for(bundle, rows) -> np.ndarray:
    return reference_scores(bundle, load_bundle(bundle.path).encoder.encode_rows(rows))


def varied_rows(n: int) -> list[dict]:
    users, items = ["196", "186", "22", "244", "166", "7"], ["242", "302", "377", "51", "346", "9"]
    genres = ["Comedy|Drama", "Action", "", "War|Sci-Fi|Action", "Thriller"]
    return [
        {"user_id": users[i % 6], "item_id": items[(i * 5) % 6], "age": 15 + i % 50, "genres": genres[i % 5]}
        for i in range(n)
    ]


def slow_model_run(monkeypatch, seconds: float, rows: int | None = None) -> threading.Event:
    """Make Model.run sleep first (only for batches of `rows` rows, if given); the event says it started."""
    started = threading.Event()
    original = Model.run

    def slow(self, feeds):
        if rows is None or len(feeds["user_id"]) == rows:
            started.set()
            time.sleep(seconds)
        return original(self, feeds)

    monkeypatch.setattr(Model, "run", slow)
    return started


def test_micro_batching_returns_each_caller_its_own_scores(bundle):
    # The batch closes when full (40 rows), long before its 5 s delay: one onnxruntime call, deterministically.
    app = make_app(bundle.path, batching=True, batch_max_rows=40, batch_max_delay_ms=5000)
    rows = varied_rows(40)

    async def main():
        async with serving(app) as c:
            return await asyncio.gather(*[c.post("/score", json={"instances": [r]}) for r in rows])

    responses = run(main())
    got = np.array([r.json()["scores"][0] for r in responses])
    np.testing.assert_allclose(got, scores_for(bundle, rows), atol=1e-6)
    registry = app.state.services.metrics.registry
    assert registry.get_sample_value("apg_inference_batch_rows_count") == 1
    assert registry.get_sample_value("apg_inference_batch_rows_sum") == 40
    assert registry.get_sample_value("apg_request_rows_count") == 40


def test_micro_batching_with_mixed_request_sizes(bundle):
    app = make_app(bundle.path, batching=True, batch_max_rows=16, batch_max_delay_ms=20)
    rows = varied_rows(120)
    requests, start = [], 0
    for i in range(40):  # sizes 1..5, and one request larger than a batch
        size = 20 if i == 7 else 1 + i % 5
        requests.append(rows[start : start + size] or rows[:size])
        start = (start + size) % len(rows)

    async def main():
        async with serving(app) as c:
            return await asyncio.gather(*[c.post("/score", json={"instances": req}) for req in requests])

    responses = run(main())
    for req, r in zip(requests, responses, strict=True):
        assert r.status_code == 200, r.text
        np.testing.assert_allclose(r.json()["scores"], scores_for(bundle, req), atol=1e-6)
    registry = app.state.services.metrics.registry
    assert registry.get_sample_value("apg_inference_batch_rows_sum") == sum(map(len, requests))


def test_hot_reload_under_load(bundle, make_bundle, tmp_path):
    v2 = make_bundle("v2", seed=7)
    corrupt = shutil.copytree(v2.path, tmp_path / "corrupt")
    (corrupt / "model.onnx").write_bytes((corrupt / "model.onnx").read_bytes()[:-1] + b"\x00")
    expected = {"v1": scores_for(bundle, ROWS), "v2": scores_for(v2, ROWS)}
    app = make_app(bundle.path, max_concurrency=2)

    async def main():
        results, stop = [], asyncio.Event()
        async with serving(app) as c:

            async def client():
                while not stop.is_set():
                    results.append(await c.post("/score", json={"instances": ROWS}))

            async def until(n):  # wait for n more responses: progress, not time
                target = len(results) + n
                while len(results) < target:
                    await asyncio.sleep(0.001)

            tasks = [asyncio.create_task(client()) for _ in range(6)]
            await until(20)
            swapped = await c.post("/admin/reload", json={"bundle": str(v2.path)})
            await until(20)
            refused = await c.post("/admin/reload", json={"bundle": str(corrupt)})
            await until(20)
            stop.set()
            await asyncio.gather(*tasks)
            ready = await c.get("/readyz")
        return results, swapped, refused, ready

    results, swapped, refused, ready = run(main())
    assert swapped.status_code == 200, swapped.text
    assert refused.status_code == 422 and "sha256 mismatch" in refused.json()["error"]["message"]
    assert ready.json()["model"]["version"] == "v2"
    assert all(r.status_code == 200 for r in results), [r.text for r in results if r.status_code != 200][:3]
    versions = [r.json()["model"]["version"] for r in results]
    assert set(versions) == {"v1", "v2"} and versions[-1] == "v2"
    for r in results:  # every answer is wholly one model's
        body = r.json()
        np.testing.assert_allclose(body["scores"], expected[body["model"]["version"]], atol=1e-6)
    registry = app.state.services.metrics.registry
    assert registry.get_sample_value("apg_model_reloads_total", {"result": "ok"}) == 1
    assert registry.get_sample_value("apg_model_reloads_total", {"result": "error"}) == 1


def test_in_flight_request_finishes_on_its_model(bundle, make_bundle, monkeypatch):
    v2 = make_bundle("v2", seed=3)
    app = make_app(bundle.path)

    async def main():
        async with serving(app) as c:
            started = slow_model_run(monkeypatch, 0.3, rows=len(ROWS))  # warm-up batches (1, 8) stay fast
            slow = asyncio.create_task(c.post("/score", json={"instances": ROWS}))
            while not started.is_set():
                await asyncio.sleep(0.001)
            reloaded = await c.post("/admin/reload", json={"bundle": str(v2.path)})
            return await slow, reloaded

    slow, reloaded = run(main())
    assert reloaded.json()["model"]["version"] == "v2"
    assert slow.json()["model"]["version"] == "v1"
    np.testing.assert_allclose(slow.json()["scores"], scores_for(bundle, ROWS), atol=1e-6)


def test_small_calls_run_inline_and_larger_ones_in_the_pool(bundle):
    app = make_app(bundle.path, inline_max_rows=16)

    async def main():
        async with serving(app) as c:
            pool, submitted = app.state.services.runtime._pool, []
            original = pool.submit
            pool.submit = lambda *a, **k: (submitted.append(1), original(*a, **k))[1]
            small = await c.post("/score", json={"instances": varied_rows(16)})
            large = await c.post("/score", json={"instances": varied_rows(17)})
            return small, large, len(submitted)

    small, large, pool_calls = run(main())
    assert pool_calls == 1  # only the 17-row call went to a pool thread
    np.testing.assert_allclose(small.json()["scores"], scores_for(bundle, varied_rows(16)), atol=1e-6)
    np.testing.assert_allclose(large.json()["scores"], scores_for(bundle, varied_rows(17)), atol=1e-6)


def test_cuda_calls_always_go_to_the_pool(bundle):
    # A device call waits on the GPU with the GIL released: in the pool the loop parses the next requests meanwhile
    # (twice the batch-1 knee on an H200, docs/GPU.md). The provider is faked: the session underneath is the CPU's.
    app = make_app(bundle.path, inline_max_rows=1024)

    async def main():
        async with serving(app) as c:
            runtime = app.state.services.runtime
            runtime.model = dataclasses.replace(runtime.model, provider="CUDAExecutionProvider")
            pool, submitted = runtime._pool, []
            original = pool.submit
            pool.submit = lambda *a, **k: (submitted.append(1), original(*a, **k))[1]
            answer = await c.post("/score", json={"instances": varied_rows(1)})
            return answer, len(submitted)

    answer, pool_calls = run(main())
    assert pool_calls == 1  # one row, under the inline limit, and still in the pool
    np.testing.assert_allclose(answer.json()["scores"], scores_for(bundle, varied_rows(1)), atol=1e-6)
