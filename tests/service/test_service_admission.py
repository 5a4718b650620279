"""service/admission.py: the one back-pressure rule. Each place an admitted request can wait (the inference queue,
inline inference, the micro-batcher) is filled until the answer is 503, and every time it is the same gate: exactly
MAX_CONCURRENCY + MAX_QUEUE requests get in, and the others the same answer. A body still on its way holds no place."""

from __future__ import annotations

import asyncio
import threading

import pytest
from service_testing import make_app, make_settings, run, serving
from synthetic_bundle import ROWS

from service.admission import Admission
from service.errors import Overloaded
from service.metrics import Metrics
from service.runtime import Model, Runtime

LIMITS = {"max_concurrency": 1, "max_queue": 2}  # the gate takes 3
SENT = 6
MODEL = "synthetic-apg"
V2_BODY = {
    "inputs": [
        {"name": "user_id", "shape": [1], "datatype": "BYTES", "data": ["196"]},
        {"name": "item_id", "shape": [1], "datatype": "BYTES", "data": ["242"]},
    ]
}
REFUSAL = {
    "code": "overloaded",
    "message": "3 scoring requests in progress, the most this worker takes (APG_MAX_CONCURRENCY + APG_MAX_QUEUE = 3)",
    "field": None,
    "row": None,
}


def hold_model_run(monkeypatch) -> threading.Event:
    """Model.run blocks (in its pool thread) until the returned event is set."""
    release, original = threading.Event(), Model.run

    def held(self, feeds):
        release.wait(10)
        return original(self, feeds)

    monkeypatch.setattr(Model, "run", held)
    return release


async def fill(app, path: str, post, hold=lambda: lambda: None) -> list:
    """Once the app has started, `hold()` (which returns a release function) and send SENT concurrent requests
    (`post(client, path)`); once the refusals are in, release the admitted ones."""
    async with serving(app) as c:
        release = hold()
        tasks = [asyncio.create_task(post(c, path)) for _ in range(SENT)]
        done: set = set()
        limit = app.state.services.admission.limit
        while len(done) < SENT - limit:  # the refused answer at once, the admitted are held
            finished, _ = await asyncio.wait(tasks, timeout=10, return_when=asyncio.FIRST_COMPLETED)
            assert finished, "nothing answered"
            done |= finished
        release()
        responses = await asyncio.gather(*tasks)
        assert app.state.services.admission.in_progress == 0
        return responses


def assert_one_gate(app, responses, route: str = "/score") -> None:
    codes = sorted(r.status_code for r in responses)
    assert codes == [200] * 3 + [503] * 3, codes
    for r in responses:
        if r.status_code == 503:
            assert r.headers["retry-after"] == "1"
            body = r.json()
            if route.startswith("/v2/"):  # the KServe shape: the message in `error`, the details beside it
                body = {"error": {**body, "message": body["error"]}}
                del body["error"]["error"]
            assert body == {"error": REFUSAL}
    registry = app.state.services.metrics.registry
    assert registry.get_sample_value("apg_requests_total", {"route": route, "code": "503"}) == 3
    assert registry.get_sample_value("apg_requests_total", {"route": route, "code": "200"}) == 3


def post_rows(c, path):
    return c.post(path, json={"instances": ROWS[:1]})


def post_v2(c, path):
    return c.post(path, json=V2_BODY)


@pytest.mark.parametrize(("path", "post"), [("/score", post_rows), (f"/v2/models/{MODEL}/infer", post_v2)])
def test_full_queue_for_inference_is_503(bundle, monkeypatch, path, post):
    # One call runs (held) in the pool, two wait for its slot: the fourth request is refused at the door.
    app = make_app(bundle.path, **LIMITS, inline_max_rows=0)

    async def main():
        return await fill(app, path, post, lambda: hold_model_run(monkeypatch).set)

    assert_one_gate(app, run(main()), route=path.replace(MODEL, "{name}"))


def test_requests_still_reading_their_bodies_hold_no_place(bundle):
    # Twice as many slow uploads as the gate takes, held mid-body: none is counted, and a normal request is scored.
    app = make_app(bundle.path, **LIMITS)
    body = b'{"instances": [{"user_id": "196", "item_id": "242"}]}'

    async def main():
        arrived, reading = asyncio.Event(), []

        async def upload():
            yield body[:10]
            reading.append(1)  # the route asked for the rest: it is reading this body
            await arrived.wait()
            yield body[10:]

        async with serving(app) as c:
            headers = {"content-type": "application/json"}
            slow = [asyncio.create_task(c.post("/score", content=upload(), headers=headers)) for _ in range(SENT)]
            async with asyncio.timeout(10):
                while len(reading) < SENT:
                    await asyncio.sleep(0.01)
            normal = await post_rows(c, "/score")
            in_progress = app.state.services.admission.in_progress
            arrived.set()
            return normal, in_progress, await asyncio.gather(*slow)

    normal, in_progress, slow = run(main())
    assert (normal.status_code, in_progress) == (200, 0)
    assert {r.status_code for r in slow} <= {200, 503}  # admitted once their bodies are in, by the same rule


def test_inline_inference_cannot_bypass_the_gate(bundle, monkeypatch):
    # An inline call never yields to the loop: the gate counts every accepted request before any of them runs.
    app = make_app(bundle.path, **LIMITS, inline_max_rows=1024)
    original = Model.run

    def slow(self, feeds):
        threading.Event().wait(0.2)  # blocks the event loop, as a long inline call does
        return original(self, feeds)

    def hold():
        monkeypatch.setattr(Model, "run", slow)
        return lambda: None

    assert_one_gate(app, run(fill(app, "/score", post_rows, hold)))


def test_full_micro_batcher_is_503(bundle):
    # The batch neither fills (64 rows) nor closes (1 s) while the refusals come in: the admitted wait in the
    # batcher, which refuses nothing itself, and then run as one batch.
    app = make_app(bundle.path, **LIMITS, batching=True, batch_max_rows=64, batch_max_delay_ms=1000)
    responses = run(fill(app, "/score", post_rows))
    assert_one_gate(app, responses)
    registry = app.state.services.metrics.registry
    assert registry.get_sample_value("apg_inference_batch_rows_count") == 1
    assert registry.get_sample_value("apg_inference_batch_rows_sum") == 3


def test_the_gate_frees_its_place_when_a_request_is_cancelled(bundle):
    gate = Admission(make_settings(bundle.path, max_concurrency=1, max_queue=0))

    async def main():
        async def enter():
            async with gate:
                await asyncio.sleep(10)

        task = asyncio.create_task(enter())
        await asyncio.sleep(0)  # counted; now in its yield
        assert gate.in_progress == 1
        with pytest.raises(Overloaded) as refused:
            async with gate:
                pass
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        assert gate.in_progress == 0
        async with gate:  # room again
            assert gate.in_progress == 1
        return refused.value

    refused = run(main())
    assert (refused.status, refused.headers) == (503, {"Retry-After": "1"})


def test_inference_slots_wait_and_never_refuse(bundle):
    # The runtime is not a second gate: with one slot and no queue, ten concurrent calls all run, one at a time.
    settings = make_settings(bundle.path, max_concurrency=1, max_queue=0)

    async def main():
        runtime = Runtime(settings, Metrics())
        await runtime.start()
        model = runtime.current
        feeds = model.encoder.encode_rows(ROWS[:2])
        try:
            return await asyncio.gather(*[runtime.infer(model, feeds, 2) for _ in range(10)])
        finally:
            await runtime.drain()

    results = run(main())
    assert len(results) == 10 and all(r.scores.shape == (2,) for r in results)
