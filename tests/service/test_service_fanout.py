"""Workers converge on one bundle (issue 25, service/fanout.py): the announcement carries the graph checksum and the
manifest digest, a follower verifies what it loaded, and when the directory was overwritten since, every worker ends
on what it holds now. Two runtimes in one process share one announcement file, as two workers share theirs."""

from __future__ import annotations

import asyncio

import pytest
from prometheus_client import CollectorRegistry
from service_testing import make_settings
from synthetic_bundle import build_bundle

from service import fanout as fanout_module
from service.fanout import ReloadFanout
from service.metrics import Metrics
from service.runtime import Runtime


async def two_workers(tmp_path, bundle_path):
    """Two (runtime, fanout) pairs serving `bundle_path`, announcing to one file."""
    workers = []
    for _ in range(2):
        runtime = Runtime(make_settings(bundle_path, bundle_root=tmp_path), Metrics(CollectorRegistry()))
        await runtime.start()
        workers.append((runtime, ReloadFanout(tmp_path / "reload.json", runtime)))
    return workers


def served(runtime) -> tuple[str, str]:
    return runtime.model.version, runtime.model.bundle.checksum


def test_an_overwrite_right_after_a_reload_leaves_every_worker_on_the_same_bundle(tmp_path):
    path = build_bundle(tmp_path / "bundle", version="v1", seed=0).path

    async def scenario():
        (first, first_fanout), (second, second_fanout) = await two_workers(tmp_path, path)
        build_bundle(path, version="v2", seed=1)
        first_fanout.announce(await first.reload(path))  # POST /admin/reload in the first worker: v2 announced
        build_bundle(path, version="v3", seed=2)  # overwritten before the second worker follows
        await second_fanout.check()  # finds v3, not the announced v2: serves v3 and announces it
        assert served(second)[0] == "v3"
        await first_fanout.check()  # the first worker follows the new announcement
        return served(first), served(second)

    first, second = asyncio.run(scenario())
    assert first == second and first[0] == "v3"


def test_a_re_export_of_the_same_graph_under_a_new_version_is_followed(tmp_path):
    path = build_bundle(tmp_path / "bundle", version="v1", seed=0).path

    async def scenario():
        (first, first_fanout), (second, second_fanout) = await two_workers(tmp_path, path)
        graph = served(first)[1]
        build_bundle(path, version="v1-reexport", seed=0)  # the same graph (checksum), another manifest
        first_fanout.announce(await first.reload(path))
        assert served(first)[1] == graph
        await second_fanout.check()
        return served(first), served(second)

    first, second = asyncio.run(scenario())
    assert first == second and first[0] == "v1-reexport"


def test_a_failed_follow_is_tried_again_without_a_new_announcement(tmp_path, monkeypatch):
    monkeypatch.setattr(fanout_module, "RETRY_S", 0.0)
    path = build_bundle(tmp_path / "bundle", version="v1", seed=0).path
    other = build_bundle(tmp_path / "other", version="o1", seed=3).path

    async def scenario():
        (first, first_fanout), (second, second_fanout) = await two_workers(tmp_path, path)
        first_fanout.announce(await first.reload(other))
        (other / "model.onnx").write_bytes(b"half written")  # the follower finds a bundle still being written
        with pytest.raises(RuntimeError):
            await second_fanout.check()
        assert served(second)[0] == "v1"
        build_bundle(other, version="o1", seed=3)  # the export finishes; the same announcement is retried
        await second_fanout.check()
        return served(first), served(second)

    first, second = asyncio.run(scenario())
    assert first == second and first[0] == "o1"


def test_a_failed_follow_is_retried_by_a_timer_and_nothing_polls_otherwise(tmp_path, monkeypatch):
    # FOLLOW (wake) reads the announcement once; a failed reload arms one timer (RETRY_S), which converges the worker
    # once the bundle is whole, with no further signal; then nothing is left running or armed.
    monkeypatch.setattr(fanout_module, "RETRY_S", 0.05)
    path = build_bundle(tmp_path / "bundle", version="v1", seed=0).path
    other = build_bundle(tmp_path / "other", version="o1", seed=3).path

    async def scenario():
        (first, first_fanout), (second, second_fanout) = await two_workers(tmp_path, path)
        first_fanout.announce(await first.reload(other))
        (other / "model.onnx").write_bytes(b"half written")
        second_fanout.wake()
        second_fanout.wake()  # a second FOLLOW while the first is followed: one more read afterwards, not two tasks
        await second_fanout._task
        assert served(second)[0] == "v1" and second_fanout._timer is not None  # failed: the retry is armed
        build_bundle(other, version="o1", seed=3)  # the export finishes
        for _ in range(100):  # bounded: the timer fires within RETRY_S
            if served(second)[0] == "o1":
                break
            await asyncio.sleep(0.02)
        await second_fanout._task
        idle = second_fanout._task.done() and second_fanout._timer.when() < asyncio.get_running_loop().time()
        second_fanout.stop()
        return served(first), served(second), idle

    first, second, idle = asyncio.run(scenario())
    assert first == second and first[0] == "o1" and idle


def test_a_failed_reload_is_tried_again_even_when_the_same_announcement_wakes_the_worker_first(tmp_path, monkeypatch):
    """A second FOLLOW with the same announcement (the same POST sent twice, or a worker that reads the announcement
    at start and is then passed the FOLLOW) used to cancel the retry timer without retrying: the worker stayed on
    the old bundle."""
    monkeypatch.setattr(fanout_module, "RETRY_S", 0.1)
    path = build_bundle(tmp_path / "bundle", version="v1", seed=0).path

    async def scenario():
        (first, first_fanout), (second, second_fanout) = await two_workers(tmp_path, path)
        build_bundle(path, version="v2", seed=1)
        first_fanout.announce(await first.reload(path))
        (path / "model.onnx").write_bytes(b"being written")  # the second worker's reload fails
        second_fanout.wake()
        await asyncio.sleep(0.02)
        second_fanout.wake()  # the same announcement again, before the retry timer fires
        await asyncio.sleep(0.02)
        build_bundle(path, version="v2", seed=1)  # the bundle is whole again
        await asyncio.sleep(0.5)
        second_fanout.stop()
        return served(first), served(second)

    first, second = asyncio.run(scenario())
    assert second == first and second[0] == "v2"
