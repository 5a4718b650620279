"""Several models in one service (APG_MODELS), the sticky split (APG_EXPERIMENT) and shadow scoring (APG_SHADOW)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import numpy as np
import pytest
from service_testing import ADMIN, TestClient, make_app, run, serving
from synthetic_bundle import ROWS, build_bundle, reference_scores

from features import Encoder
from service.errors import ConfigError, InvalidShape
from service.experiment import Experiment, key_value, repository_entries
from service.metrics import Metrics
from service.shadow import Shadow

SPLIT = {"name": "apg-vs-base", "control": "base", "treatment": "apg", "share": 0.5, "key": "user_id"}


@pytest.fixture
def repo(tmp_path: Path) -> dict:
    """models/base (seed 0), models/apg (seed 1): same contract, different weights."""
    root = tmp_path / "models"
    return {"root": root, "base": build_bundle(root / "base", seed=0), "apg": build_bundle(root / "apg", seed=1)}


def expected(bundle, rows) -> np.ndarray:
    from synthetic_bundle import SCHEMA

    return reference_scores(bundle, Encoder(SCHEMA).encode_rows(rows))


def client_for(root: Path, **settings) -> TestClient:
    return TestClient(make_app(root, models=root, **settings), raise_server_exceptions=False, headers=ADMIN)


def metric(client, name, labels):
    return client.app.state.services.metrics.registry.get_sample_value(name, labels)


def test_every_bundle_is_served_under_its_directory_name(repo):
    with client_for(repo["root"]) as c:
        listed = c.get("/v2/models").json()
        assert [m["name"] for m in listed["models"]] == ["apg", "base"] and listed["default"] == "apg"
        assert all(m["state"] == "READY" for m in listed["models"])
        for name in ("apg", "base"):
            assert c.get(f"/v2/models/{name}").json()["name"] == name
            assert c.get(f"/v2/models/{name}/ready").status_code == 200
            inputs = [
                {"name": k, "shape": [len(ROWS)], "datatype": "BYTES", "data": [str(r.get(k, "")) for r in ROWS]}
                for k in ("user_id", "item_id")
            ]
            answer = c.post(f"/v2/models/{name}/infer", json={"inputs": inputs})
            assert answer.status_code == 200 and answer.json()["model_name"] == name
        assert c.get("/v2/models/nope/ready").status_code == 404
        assert "'apg' version 'v1'" in c.get("/v2/models/nope").json()["error"]  # names the served ones
        ready = c.get("/readyz").json()
        assert ready["model"]["name"] == "apg" and sorted(ready["models"]) == ["apg", "base"]


def test_score_picks_the_model_by_field_or_header(repo):
    with client_for(repo["root"], default_model="base") as c:
        default = c.post("/score", json={"instances": ROWS}).json()
        assert default["model"]["name"] == "base" and default["arm"] is None
        np.testing.assert_allclose(default["scores"], expected(repo["base"], ROWS), atol=1e-6)
        by_field = c.post("/score", json={"instances": ROWS, "model": "apg"}).json()
        by_header = c.post("/score", json={"instances": ROWS}, headers={"X-APG-Model": "apg"}).json()
        assert by_field["model"]["name"] == by_header["model"]["name"] == "apg"
        np.testing.assert_allclose(by_field["scores"], expected(repo["apg"], ROWS), atol=1e-6)
        assert by_field["scores"] == by_header["scores"] != default["scores"]
        assert c.post("/score", json={"instances": ROWS, "model": "nope"}).status_code == 404
        clash = c.post("/score", json={"instances": ROWS, "model": "apg"}, headers={"X-APG-Model": "base"})
        assert clash.status_code == 400 and clash.json()["error"]["field"] == "model"
        assert c.post("/score", json={"instances": ROWS, "model": 3}).status_code == 400
        for name in ("apg", "base"):
            assert metric(c, "apg_model_requests_total", {"model": name, "arm": "none", "code": "200"}) >= 1
        schema = c.get("/openapi.json").json()["paths"]["/score"]["post"]["requestBody"]["content"]
        assert schema["application/json"]["schema"]["oneOf"][0]["properties"]["model"]["enum"] == ["apg", "base"]


def test_a_broken_bundle_never_takes_down_the_others(repo):
    (repo["root"] / "apg" / "model.onnx").write_bytes(b"not a graph")
    with client_for(repo["root"]) as c:
        listed = {m["name"]: m for m in c.get("/v2/models").json()["models"]}
        assert listed["base"]["state"] == "READY" and listed["apg"]["state"] == "UNAVAILABLE"
        assert "sha256" in listed["apg"]["reason"]
        assert c.post("/score", json={"instances": ROWS}).json()["model"]["name"] == "base"  # the one left: default
        assert c.post("/score", json={"instances": ROWS, "model": "apg"}).status_code == 404
        # fixed on disk, then reloaded alone: it joins without a restart
        build_bundle(repo["root"] / "apg", seed=1)
        reloaded = c.post("/admin/reload", json={"model": "apg"})
        assert reloaded.status_code == 200 and reloaded.json()["model"]["name"] == "apg"
        assert c.post("/score", json={"instances": ROWS, "model": "apg"}).status_code == 200


def test_reload_touches_one_model(repo):
    with client_for(repo["root"]) as c:
        base_before = c.post("/score", json={"instances": ROWS, "model": "base"}).json()
        build_bundle(repo["root"] / "apg", version="v2", seed=2)
        assert c.post("/admin/reload", json={"model": "apg"}).json()["model"]["version"] == "v2"
        assert c.post("/score", json={"instances": ROWS, "model": "apg"}).json()["model"]["version"] == "v2"
        assert c.post("/score", json={"instances": ROWS, "model": "base"}).json() | {"request_id": ""} == (
            base_before | {"request_id": ""}
        )
        info = {"name": "apg", "version": "v2", "provider": "CPUExecutionProvider"}
        assert metric(c, "apg_model_info", {**info, "checksum": c.get("/readyz").json()["models"]["apg"]["checksum"]})
        assert c.post("/admin/reload", json={"model": "../etc"}).status_code == 422


def test_a_repository_without_bundles_or_a_wrong_default_does_not_start(tmp_path, repo):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="holds no bundle"):
        repository_entries(tmp_path / "empty")
    with pytest.raises(ConfigError, match="not a directory"):
        repository_entries(tmp_path / "missing")
    with pytest.raises(ConfigError, match="APG_DEFAULT_MODEL 'nope'"), client_for(repo["root"], default_model="nope"):
        pass


def test_the_split_is_sticky_and_answers_with_the_arm(repo):
    with client_for(repo["root"], experiment=json.dumps(SPLIT)) as c:
        arms = {}
        for user in ["196", "186", "22", "244", "166", "7", "8", "9", "10", "11"]:
            rows = [{**r, "user_id": user} for r in ROWS]
            answers = [c.post("/score", json={"instances": rows}).json() for _ in range(3)]
            assert len({a["arm"] for a in answers}) == 1  # sticky
            arm = answers[0]["arm"]
            assert answers[0]["model"]["name"] == ("apg" if arm == "treatment" else "base")
            assert arm == Experiment.parse(json.dumps(SPLIT)).arm_of(int(user))  # 196 and "196" are one user
            arms[user] = arm
        assert set(arms.values()) == {"control", "treatment"}
        mixed = c.post("/score", json={"instances": ROWS})  # ROWS carry several user ids
        assert mixed.status_code == 400 and mixed.json()["error"]["field"] == "user_id"
        pinned = c.post("/score", json={"instances": ROWS, "model": "apg"}).json()  # pinning leaves the experiment
        assert pinned["arm"] is None and pinned["model"]["name"] == "apg"
        ranked = c.post("/score", json={"context": {"user_id": "196"}, "candidates": [{"item_id": "242"}]})
        assert ranked.json()["arm"] == arms["196"]
        for arm in set(arms.values()):
            model = "apg" if arm == "treatment" else "base"
            assert metric(c, "apg_rows_scored_total", {"model": model, "arm": arm}) > 0


def test_the_split_is_a_pure_function_of_name_share_and_key():
    split = Experiment.parse(json.dumps(SPLIT))
    users = [str(u) for u in range(4000)]
    treated = [u for u in users if split.arm_of(u) == "treatment"]
    assert 0.46 < len(treated) / len(users) < 0.54
    wider = Experiment.parse(json.dumps({**SPLIT, "share": 0.7}))
    assert all(wider.arm_of(u) == "treatment" for u in treated)  # raising the share only moves control users over
    renamed = Experiment.parse(json.dumps({**SPLIT, "name": "another"}))
    assert [renamed.arm_of(u) for u in users] != [split.arm_of(u) for u in users]  # a new experiment reshuffles
    assert {Experiment.parse(json.dumps({**SPLIT, "share": s})).arm_of(u) for s in (0, 1) for u in users[:50]} == {
        "control",
        "treatment",
    }
    assert all(Experiment.parse(json.dumps({**SPLIT, "share": 0})).arm_of(u) == "control" for u in users[:200])
    assert split.arm_of(None) == "control"


@pytest.mark.parametrize(
    "spec, message",
    [
        ({**SPLIT, "share": 1.5}, "share"),
        ({**SPLIT, "treatment": "base"}, "two different"),
        ({k: v for k, v in SPLIT.items() if k != "key"}, "missing"),
        ({**SPLIT, "colour": "red"}, "unknown keys"),
        ({**SPLIT, "control": "../x"}, "control must be a model name"),
    ],
)
def test_a_bad_experiment_is_refused_with_its_reason(spec, message):
    with pytest.raises(ConfigError, match=message):
        Experiment.parse(json.dumps(spec))


def test_an_experiment_from_a_file_and_one_naming_an_unknown_model(tmp_path, repo):
    path = tmp_path / "split.json"
    path.write_text(json.dumps(SPLIT))
    assert Experiment.parse(str(path)).treatment == "apg"
    with pytest.raises(ConfigError, match="not a JSON object and not a readable file"):
        Experiment.parse(str(tmp_path / "nope.json"))
    bad = json.dumps({**SPLIT, "treatment": "ghost"})
    with (
        pytest.raises(ConfigError, match="treatment 'ghost' is not a served model"),
        client_for(repo["root"], experiment=bad),
    ):
        pass


def test_key_value_reads_every_shape():
    assert key_value({"instances": [{"user_id": 7}, {"user_id": "7"}]}, "user_id") == "7"
    assert key_value({"inputs": {"user_id": ["7", 7.0]}}, "user_id") == "7"
    assert key_value({"context": {"user_id": "7"}, "candidates": [{}]}, "user_id") == "7"
    assert key_value({"context": {}, "candidates": [{"user_id": "7"}]}, "user_id") == "7"
    assert key_value({"instances": [{"item_id": 1}]}, "user_id") is None
    with pytest.raises(InvalidShape):
        key_value({"instances": [{"user_id": 7}, {"user_id": 8}]}, "user_id")


def test_shadow_scores_every_request_off_the_answer(repo):
    with client_for(repo["root"], default_model="base", shadow=["apg"]) as c:
        for _ in range(4):
            assert c.post("/score", json={"instances": ROWS}).status_code == 200
        assert c.post("/score", json={"instances": ROWS, "model": "apg"}).status_code == 200  # itself: skipped

        async def settle():
            for _ in range(200):
                if metric(c, "apg_shadow_requests_total", {"shadow": "apg", "result": "scored"}) == 4:
                    return
                await asyncio.sleep(0.01)

        c.portal.call(settle)
        assert metric(c, "apg_shadow_requests_total", {"shadow": "apg", "result": "scored"}) == 4
        assert metric(c, "apg_shadow_requests_total", {"shadow": "apg", "result": "dropped"}) == 0
        gap = np.abs(expected(repo["apg"], ROWS) - expected(repo["base"], ROWS))
        assert metric(c, "apg_shadow_abs_diff_count", {"shadow": "apg"}) == 4 * len(ROWS)
        assert metric(c, "apg_shadow_abs_diff_sum", {"shadow": "apg"}) == pytest.approx(4 * gap.sum(), abs=1e-4)


def test_a_full_shadow_queue_drops_and_counts_and_the_answer_goes_on(repo):
    async def main():
        app = make_app(repo["root"], models=repo["root"], default_model="base", shadow=["apg"], shadow_queue=1)
        async with serving(app) as client:
            shadow = app.state.services.shadow
            shadow._task.cancel()  # a consumer that never catches up: the one place fills, the rest is dropped
            answers = [await client.post("/score", json={"instances": ROWS}) for _ in range(5)]
            assert all(a.status_code == 200 for a in answers)
            assert shadow._queue.qsize() == 1
            return app.state.services.metrics.registry.get_sample_value

    sample = run(main())
    assert sample("apg_shadow_requests_total", {"shadow": "apg", "result": "dropped"}) == 4
    assert sample("apg_shadow_requests_total", {"shadow": "apg", "result": "scored"}) == 0


def test_a_shadow_that_is_not_served_is_refused(repo):
    with pytest.raises(ConfigError, match="APG_SHADOW names models that are not served"):
        with client_for(repo["root"], shadow=["ghost"]):
            pass


def test_a_failing_shadow_is_counted_and_never_fails_the_answer(repo):
    class Broken:
        name = "apg"

        def __getattr__(self, _):
            raise RuntimeError("broken shadow")

    async def main():
        app = make_app(repo["root"], models=repo["root"], default_model="base", shadow=["apg"])
        async with serving(app) as client:
            app.state.services.runtime.models = {**app.state.services.runtime.models, "apg": Broken()}
            assert (await client.post("/score", json={"instances": ROWS})).status_code == 200
            for _ in range(200):
                if app.state.services.metrics.registry.get_sample_value(
                    "apg_shadow_requests_total", {"shadow": "apg", "result": "error"}
                ):
                    break
                await asyncio.sleep(0.01)
            return app.state.services.metrics.registry.get_sample_value

    assert run(main())("apg_shadow_requests_total", {"shadow": "apg", "result": "error"}) == 1


def test_shadow_unit_submit_never_raises_before_start(repo):
    shadow = Shadow(runtime=None, metrics=Metrics(), names=["apg"], max_queue=1)
    shadow.submit(model=None, encode=None, feeds={}, scores=np.zeros(1))  # not started: a no-op


def test_serve_checks_the_repository_before_any_worker_starts(repo):
    from service.server import check_bundle
    from service.settings import Settings

    ok = Settings(models=repo["root"], experiment=json.dumps(SPLIT), shadow=["apg"], providers="cpu")
    check_bundle(ok)
    (repo["root"] / "apg" / "model.onnx").write_bytes(b"broken")
    check_bundle(Settings(models=repo["root"], providers="cpu"))  # one broken bundle: served without it
    with pytest.raises(ConfigError, match="APG_DEFAULT_MODEL 'apg' is not served"):
        check_bundle(Settings(models=repo["root"], default_model="apg", providers="cpu"))
    with pytest.raises(ConfigError, match="APG_SHADOW"):
        check_bundle(Settings(models=repo["root"], shadow=["apg"], providers="cpu"))
    with pytest.raises(ConfigError, match="treatment 'apg' is not a served model"):
        check_bundle(Settings(models=repo["root"], experiment=json.dumps(SPLIT), providers="cpu"))


def test_apg_serve_refuses_a_bad_experiment_with_one_line(repo, capsys, monkeypatch):
    from scripts.cli import main

    for name in ("APG_MODELS", "APG_EXPERIMENT"):  # serve() sets them: put them back as they were afterwards
        monkeypatch.setenv(name, "")

    bad = json.dumps({**SPLIT, "share": 2})
    assert main(["serve", "--models", str(repo["root"]), "--experiment", bad]) == 2
    assert "apg serve: error: APG_EXPERIMENT: share must be a number in [0, 1]" in capsys.readouterr().err


def test_an_experiment_key_that_no_arm_reads_is_refused(repo):
    bad = json.dumps({**SPLIT, "key": "userid"})  # misspelled: every user would silently go to control
    with pytest.raises(ConfigError, match="key 'userid' is not a feature of control 'base'"):
        with client_for(repo["root"], experiment=bad):
            pass
    from service.server import check_bundle
    from service.settings import Settings

    with pytest.raises(ConfigError, match="key 'userid'"):
        check_bundle(Settings(models=repo["root"], experiment=bad, providers="cpu"))


def test_a_shadow_reading_the_same_contract_keeps_only_the_tensors(repo):
    async def main():
        app = make_app(repo["root"], models=repo["root"], default_model="base", shadow=["apg"])
        async with serving(app) as client:
            shadow = app.state.services.shadow
            shadow._task.cancel()
            assert (await client.post("/score", json={"instances": ROWS})).status_code == 200
            (_, encode, feeds, _) = shadow._queue.get_nowait()
            return encode, feeds

    encode, feeds = run(main())
    assert encode is None and set(feeds) >= {"user_id", "item_id"}


class _Model:
    def __init__(self, entry, path, checksum):
        manifest = {"path": path, "checksum": checksum}
        self.entry, self.bundle = entry, type("B", (), {"path": path, "checksum": checksum, "manifest": manifest})()


def test_the_fanout_keeps_every_model_announced_and_one_failure_blocks_no_other(tmp_path):
    from service.fanout import ReloadFanout

    class Runtime:
        def __init__(self):
            self.models, self.model, self.reloaded = {}, None, []

        async def reload(self, path, name):
            if name == "broken":
                raise RuntimeError("gone")
            self.reloaded.append((name, path))
            return _Model(name, path, {"/models/apg": "c1"}[path])  # what was announced (verified by the fanout)

    a, b = ReloadFanout(tmp_path / "reload.json", Runtime()), ReloadFanout(tmp_path / "reload.json", Runtime())
    a.announce(_Model("broken", "/nowhere", "c0"))
    b.announce(_Model("apg", "/models/apg", "c1"))  # another worker, another model: both kept
    assert set(json.loads((tmp_path / "reload.json").read_text())) == {"broken", "apg"}
    follower = Runtime()
    fanout = ReloadFanout(tmp_path / "reload.json", follower)
    with pytest.raises(RuntimeError, match="broken: gone"):
        run(fanout.check())
    assert follower.reloaded == [("apg", "/models/apg")]  # the failing entry did not stop it
    with pytest.raises(RuntimeError, match="broken: gone"):  # after a failure every wake-up tries again
        run(fanout.check())
