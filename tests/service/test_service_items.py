"""Ranking by item id against a file snapshot (APG_ITEM_STORE=file://...), in-process: the scores by id equal the
scores with the features in full, for /score, KServe v2 over HTTP and gRPC; misses, overrides, a newly published
version, a hot reload to another contract, a required item feature the store supplies, and the metrics.
The same against a real redis-server, and its faults: test_service_items_redis.py; processes: ..._items_live.py.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import numpy as np
import pytest
import tritonclient.grpc as triton
from item_store_testing import CONTEXT, draw, expected, full_candidates, metric, scores, sync_store
from live_server import uvicorn_thread
from service_testing import ADMIN, TestClient, make_app
from synthetic_bundle import SCHEMA, build_bundle, edit_manifest

from service.server import uvicorn_options

MODEL = "synthetic-apg"


@pytest.fixture
def store(bundle, tmp_path) -> str:
    url = f"file://{tmp_path}/store"
    sync_store(bundle.path, url, tmp_path)
    return url


def open_client(bundle_path, **settings) -> TestClient:
    app = make_app(bundle_path, item_store_refresh_s=0.2, **settings)
    return TestClient(app, raise_server_exceptions=False, headers=ADMIN)


@pytest.fixture
def client(bundle, store) -> Iterator[TestClient]:
    with open_client(bundle.path, item_store=store) as c:
        yield c


def rank(client, candidates, context=CONTEXT, **extra):
    return client.post("/score", json={"context": context, "candidates": candidates, **extra})


@pytest.mark.parametrize("n", [1, 100, 1000])
def test_scores_by_id_equal_scores_with_the_features_in_full(client, bundle, n):
    ids = draw(n, seed=n)
    full = scores(rank(client, full_candidates(ids)))
    for candidates in (ids, [{"item_id": i} for i in ids], [int(i) if i.isdigit() else i for i in ids]):
        np.testing.assert_allclose(scores(rank(client, candidates)), full, rtol=0, atol=1e-6)
    np.testing.assert_allclose(full, expected(bundle, ids), rtol=0, atol=1e-6)
    text = client.get("/metrics").text
    assert metric(text, "apg_item_store_lookup_seconds_count", model=MODEL) == 3  # full rows are not looked up
    assert metric(text, "apg_item_store_misses_total", model=MODEL) == 0


def test_features_a_candidate_carries_override_the_stores_row_by_row(client, bundle):
    ids = draw(6, seed=1)
    candidates = [ids[0], {"item_id": ids[1], "genres": "War|Drama"}, {"item_id": ids[2], "genres": None}, *ids[3:]]
    by_id = scores(rank(client, candidates))
    full = full_candidates(ids)
    full[1]["genres"], full[2]["genres"] = "War|Drama", None
    np.testing.assert_allclose(by_id, scores(rank(client, full)), rtol=0, atol=1e-6)
    # an item feature in the context holds for every candidate, the store's aside
    context = {**CONTEXT, "genres": "Comedy"}
    np.testing.assert_allclose(
        scores(rank(client, ids, context)),
        scores(rank(client, [{**c, "genres": "Comedy"} for c in full_candidates(ids)])),
        rtol=0,
        atol=1e-6,
    )


def test_a_miss_scores_with_its_item_features_missing_and_is_counted(client, bundle):
    ids = draw(20, seed=2, misses=3)
    np.testing.assert_allclose(scores(rank(client, ids)), expected(bundle, ids), rtol=0, atol=1e-6)
    assert metric(client.get("/metrics").text, "apg_item_store_misses_total", model=MODEL) == 3
    answer = rank(client, ["242", None])  # an id is required (item_id is): null is not a miss but a 400
    assert answer.status_code == 400 and answer.json()["error"]["code"] == "missing_feature"


def test_with_item_miss_error_unknown_ids_are_a_400_naming_them(bundle, store):
    with open_client(bundle.path, item_store=store, item_miss="error") as client:
        answer = rank(client, ["242", "nope-1", "302", "nope-2"])
        error = answer.json()["error"]
        assert answer.status_code == 400 and error["code"] == "unknown_items"
        assert error["field"] == "item_id" and error["row"] == 1
        assert "'nope-1', 'nope-2'" in error["message"] and "APG_ITEM_MISS=error" in error["message"]
        assert scores(rank(client, ["242", "302"])).shape == (2,)
        assert metric(client.get("/metrics").text, "apg_item_store_misses_total", model=MODEL) == 2


def test_kserve_v2_with_the_id_tensor_alone_looks_the_rest_up(client, bundle):
    ids = draw(50, seed=3)

    def infer(with_genres: bool) -> np.ndarray:
        tensors = [
            {"name": k, "shape": [len(ids)], "datatype": "BYTES", "data": [str(v)] * len(ids)}
            for k, v in CONTEXT.items()
            if k != "age"
        ]
        tensors += [{"name": "age", "shape": [len(ids)], "datatype": "FP64", "data": [49.0] * len(ids)}]
        tensors += [{"name": "item_id", "shape": [len(ids)], "datatype": "BYTES", "data": ids}]
        if with_genres:
            genres = [c["genres"] or "" for c in full_candidates(ids)]
            tensors += [{"name": "genres", "shape": [len(ids)], "datatype": "BYTES", "data": genres}]
        answer = client.post(f"/v2/models/{MODEL}/infer", json={"inputs": tensors})
        assert answer.status_code == 200, answer.text
        return np.asarray(answer.json()["outputs"][0]["data"])

    np.testing.assert_allclose(infer(False), infer(True), rtol=0, atol=1e-6)
    np.testing.assert_allclose(infer(False), expected(bundle, ids), rtol=0, atol=1e-6)


def test_grpc_model_infer_with_the_id_tensor_alone(bundle, store):
    app = make_app(bundle.path, item_store=store, grpc_port=0)
    ids = draw(30, seed=4)
    with (
        uvicorn_thread(app, **uvicorn_options(app.state.services.settings)),
        triton.InferenceServerClient(f"127.0.0.1:{app.state.grpc_port}") as c,
    ):
        tensors = []
        for name, value in CONTEXT.items():
            t = triton.InferInput(name, [len(ids)], "FP64" if name == "age" else "BYTES")
            t.set_data_from_numpy(np.array([value] * len(ids), dtype=np.float64 if name == "age" else object))
            tensors.append(t)
        t = triton.InferInput("item_id", [len(ids)], "BYTES")
        t.set_data_from_numpy(np.array(ids, dtype=object))
        assert c.is_server_ready() and c.is_model_ready(MODEL)
        got = c.infer(MODEL, [*tensors, t]).as_numpy("score")
    np.testing.assert_allclose(got, expected(bundle, ids), rtol=0, atol=1e-6)


def test_a_newly_published_version_is_followed(client, bundle, store, tmp_path):
    ids = draw(40, seed=5)
    before = client.get("/readyz").json()["item_store"]["version"]
    summary = sync_store(bundle.path, store, tmp_path, changed=True)
    assert summary["version"] != before

    def followed() -> bool:
        return client.get("/readyz").json()["item_store"]["version"] == summary["version"]

    wait(followed, "the new version to be read")
    np.testing.assert_allclose(scores(rank(client, ids)), expected(bundle, ids, changed=True), rtol=0, atol=1e-6)
    text = client.get("/metrics").text
    assert (
        metric(
            text,
            "apg_item_store_info",
            model=MODEL,
            backend="file",
            version=summary["version"],
            checksum=summary["checksum"][:16],
        )
        == summary["items"]
    )
    assert (
        metric(
            text, "apg_item_store_info", model=MODEL, backend="file", version=before, checksum=summary["checksum"][:16]
        )
        == 0
    )


def test_a_hot_reload_to_another_contract_never_reads_the_old_rows(client, bundle, store, make_bundle, tmp_path):
    other = make_bundle("v2", seed=1)
    edit_manifest(other.path, schema={**SCHEMA, "name": "synthetic-b"})  # same tensors, another contract checksum
    ids = draw(10, seed=6)
    assert client.post("/admin/reload", json={"bundle": str(other.path)}).status_code == 200
    ready = client.get("/readyz")
    error = ready.json()["error"]
    assert ready.status_code == 503 and error["code"] == "item_store_mismatch"
    assert f"apg items sync --bundle {other.path}" in error["message"] and store in error["message"]
    answer = rank(client, ids)
    assert answer.status_code == 503 and answer.json()["error"]["code"] == "item_store_mismatch"
    assert client.get("/v2/health/ready").status_code == 503
    assert scores(rank(client, full_candidates(ids))).shape == (10,)  # features in full still score
    assert (
        metric(client.get("/metrics").text, "apg_item_store_errors_total", model=MODEL, code="item_store_mismatch") == 1
    )
    sync_store(other.path, store, tmp_path / "other")  # the sync readiness named: then ready again, by itself
    wait(lambda: client.get("/readyz").status_code == 200, "readiness after the sync")
    np.testing.assert_allclose(scores(rank(client, ids)), expected(other, ids), rtol=0, atol=1e-6)


def test_a_required_item_feature_may_come_from_the_store(bundle, make_bundle, tmp_path):
    required = make_bundle("req", seed=0)
    fields = [{**f, "required": True} if f["name"] == "genres" else f for f in SCHEMA["fields"]]
    edit_manifest(required.path, schema={**SCHEMA, "fields": fields})
    url = f"file://{tmp_path}/store"
    sync_store(required.path, url, tmp_path)
    ids = [i for i in draw(30, seed=7) if next(iter(full_candidates([i])))["genres"]]  # items that have genres
    with open_client(required.path, item_store=url) as client:
        np.testing.assert_allclose(scores(rank(client, ids)), expected(required, ids), rtol=0, atol=1e-6)
        answer = rank(client, [{"item_id": ids[0], "genres": None}])  # carried, so the request's own: missing
        assert answer.status_code == 400 and answer.json()["error"]["code"] == "missing_feature"


def test_without_a_store_candidates_by_id_are_a_400(bundle):
    with open_client(bundle.path) as client:
        answer = rank(client, ["242"])
        assert answer.status_code == 400 and answer.json()["error"]["code"] == "invalid_shape"
        assert "item_store" not in client.get("/readyz").json()


def test_openapi_documents_candidates_by_id(client):
    body = client.get("/openapi.json").json()["paths"]["/score"]["post"]["requestBody"]["content"]["application/json"]
    assert all(isinstance(i, str) for i in body["examples"]["by_id"]["value"]["candidates"])
    ranking = body["schema"]["oneOf"][2]
    assert "item store" in ranking["description"] and "anyOf" in ranking["properties"]["candidates"]["items"]


def wait(check, what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def test_a_repository_reads_a_store_per_model_and_a_shadow_of_another_contract_looks_up_its_own(tmp_path):
    base = build_bundle(tmp_path / "models" / "base", seed=0)
    other = build_bundle(tmp_path / "models" / "other", seed=1)
    edit_manifest(other.path, schema={**SCHEMA, "name": "synthetic-b"})  # another contract checksum
    url = f"file://{tmp_path}/store"
    for b in (base, other):  # one store, each bundle's rows under its own checksum
        sync_store(b.path, url, tmp_path / b.path.name)
    ids = draw(25, seed=8)
    one = f'{{"base": "{url}"}}'  # a JSON object: only "base" has a store
    with open_client(base.path, models=tmp_path / "models", item_store=one) as client:
        np.testing.assert_allclose(scores(rank(client, ids, model="base")), expected(base, ids), rtol=0, atol=1e-6)
        answer = rank(client, ids, model="other")
        assert answer.status_code == 400 and answer.json()["error"]["code"] == "invalid_shape"
    with open_client(
        base.path, models=tmp_path / "models", item_store=url, default_model="base", shadow=["other"]
    ) as client:
        np.testing.assert_allclose(scores(rank(client, ids)), expected(base, ids), rtol=0, atol=1e-6)
        np.testing.assert_allclose(scores(rank(client, ids, model="other")), expected(other, ids), atol=1e-6, rtol=0)

        def shadowed() -> bool:
            text = client.get("/metrics").text
            return metric(text, "apg_shadow_requests_total", shadow="other", result="scored") == 1

        wait(shadowed, "the shadow to score the request by id")
        text = client.get("/metrics").text
        assert metric(text, "apg_shadow_requests_total", shadow="other", result="error") == 0
        ready = client.get("/readyz").json()["models"]
        assert {name: m["item_store"]["items"] for name, m in ready.items()} == {"base": 1505, "other": 1505}
