"""POST /score, probes, admin and error mapping through the ASGI app (in-process, TestClient)."""

from __future__ import annotations

import re

import numpy as np
import orjson
import pytest
from fastapi import APIRouter, Depends, FastAPI
from opentelemetry import trace
from pydantic import BaseModel
from service_testing import ADMIN, TestClient, make_app
from synthetic_bundle import ROWS, build_bundle, edit_manifest, reference_scores

from service.bundle import load_bundle
from service.errors import install_error_handlers
from service.http import LeanRoute


def expected(bundle, rows) -> np.ndarray:
    return reference_scores(bundle, load_bundle(bundle.path).encoder.encode_rows(rows))


def assert_error(response, status: int, code: str | None = None, field: str | None = None, row: int | None = None):
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    assert response.headers.get("x-request-id")
    error = response.json()["error"]
    assert set(error) == {"code", "message", "field", "row"} and error["message"]
    if code is not None:
        assert error["code"] == code, error
    if field is not None:
        assert error["field"] == field, error
    if row is not None:
        assert error["row"] == row, error
    return error


def test_score_rows(client, bundle):
    r = client.post("/score", json={"instances": ROWS})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["model"] == {"name": "synthetic-apg", "version": "v1"}
    np.testing.assert_allclose(body["scores"], expected(bundle, ROWS), atol=1e-6)


def test_rows_columns_and_ranking_give_identical_scores(client):
    features = sorted(set().union(*ROWS))
    context = {"user_id": "196", "age": 49, "gender": "M", "zip_code": "55105"}
    candidates = [{"item_id": r["item_id"], "genres": r.get("genres")} for r in ROWS]
    expanded = [{**context, **c} for c in candidates]
    rows = client.post("/score", json={"instances": ROWS}).json()["scores"]
    cols = client.post("/score", json={"inputs": {k: [r.get(k) for r in ROWS] for k in features}}).json()["scores"]
    assert rows == cols
    ranked = client.post("/score", json={"context": context, "candidates": candidates}).json()["scores"]
    assert ranked == client.post("/score", json={"instances": expanded}).json()["scores"]


def test_request_id_echoed_or_generated(client):
    r = client.post("/score", json={"instances": ROWS[:1]}, headers={"X-Request-ID": "abc-123"})
    assert r.headers["x-request-id"] == "abc-123"
    generated = client.post("/score", json={"instances": ROWS[:1]}).headers["x-request-id"]
    assert len(generated) == 32
    bad = client.post("/score", content=b"{", headers={"X-Request-ID": "x" * 500})
    assert bad.status_code == 400 and bad.headers["x-request-id"] != "x" * 500
    assert client.get("/nope", headers={"X-Request-ID": "r1"}).headers["x-request-id"] == "r1"


BAD_BODIES = [
    # (body bytes, status, code, field, row)
    (b"", 400, "invalid_json", None, None),
    (b"{", 400, "invalid_json", None, None),
    (b'{"instances": [{"user_id": NaN}]}', 400, "invalid_json", None, None),
    (b'{"instances": [{"user_id": "1", "item_id": "2", "age": Infinity}]}', 400, "invalid_json", None, None),
    (b'{"instances": [{"age": 1e999}]}', 400, "invalid_json", None, None),
    (b"\xff\xfe\x00", 400, "invalid_json", None, None),
    (b"[1, 2, 3]", 400, "invalid_shape", None, None),
    (b'"instances"', 400, "invalid_shape", None, None),
    (b"null", 400, "invalid_shape", None, None),
    (b"{}", 400, "invalid_shape", None, None),
    (b'{"instances": [], "inputs": {}}', 400, "invalid_shape", None, None),
    (b'{"instance": []}', 400, "invalid_shape", "instance", None),
    (b'{"instances": {}}', 400, "invalid_shape", "instances", None),
    (b'{"instances": []}', 400, "empty_batch", "instances", None),
    (b'{"instances": [1, 2]}', 400, "invalid_shape", "instances", 0),
    (b'{"instances": [{"user_id": "1", "item_id": "2"}, {"item_id": "2"}]}', 400, "missing_feature", "user_id", 1),
    (b'{"instances": [{"user_id": "1", "item_id": "2", "agee": 3}]}', 400, "unknown_feature", "agee", 0),
    (b'{"instances": [{"user_id": "1", "item_id": "2", "age": "old"}]}', 400, "invalid_type", "age", 0),
    (b'{"instances": [{"user_id": "1", "item_id": "2", "age": true}]}', 400, "invalid_type", "age", 0),
    (b'{"instances": [{"user_id": [1], "item_id": "2"}]}', 400, "invalid_type", "user_id", 0),
    (b'{"instances": [{"user_id": {"a": {"b": []}}, "item_id": "2"}]}', 400, "invalid_type", "user_id", 0),
    (b'{"instances": [{"user_id": "1", "item_id": "2", "genres": [[["x"]]]}]}', 400, "invalid_type", "genres", 0),
    (b'{"inputs": {"user_id": ["1", "2"], "item_id": ["1"]}}', 400, "ragged_columns", "item_id", None),
    (b'{"inputs": {"user_id": "1", "item_id": "1"}}', 400, "invalid_shape", "user_id", None),
    (b'{"inputs": []}', 400, "invalid_shape", "inputs", None),
    (b'{"inputs": {}}', 400, "empty_batch", "inputs", None),
    (b'{"context": {"user_id": "1"}, "candidates": []}', 400, "empty_batch", "candidates", None),
    (b'{"context": [], "candidates": [{"item_id": "1"}]}', 400, "invalid_shape", "context", None),
    (b'{"context": {"user_id": "1", "item_id": "2"}, "candidates": [{"item_id": "1"}]}', 400, "invalid_shape"),
    (b"[" * 5000 + b"]" * 5000, 400, "invalid_json", None, None),
]


@pytest.mark.parametrize("case", BAD_BODIES, ids=range(len(BAD_BODIES)))
def test_bad_input_is_a_4xx_naming_the_problem(client, case):
    body, status, code, *where = case
    field, row = (where + [None, None])[:2]
    r = client.post("/score", content=body, headers={"content-type": "application/json"})
    assert_error(r, status, code, field, row)


def test_odd_but_valid_values_are_scored(client):
    rows = [
        {"user_id": "Ünïcødé ✓ 🚀", "item_id": "\u0000\u202e", "gender": "é"},
        {"user_id": 10**30, "item_id": -(2**63), "age": 1e308, "zip_code": 1e300},
        {"user_id": 1.5, "item_id": True, "age": -1e308, "genres": ["Action", 3, True, None]},
        {"user_id": "196", "item_id": "242", "genres": "|" * 1000},
    ]
    r = client.post("/score", json={"instances": rows})
    assert r.status_code == 200, r.text
    assert len(r.json()["scores"]) == 4


def test_limits_413(bundle):
    with TestClient(make_app(bundle.path, max_rows=3, max_body_bytes=4096)) as c:
        assert_error(c.post("/score", json={"instances": ROWS[:4]}), 413, "too_many_rows")
        assert_error(c.post("/score", json={"inputs": {"user_id": ["1"] * 4, "item_id": ["1"] * 4}}), 413)
        big = orjson.dumps({"instances": [{"user_id": "x" * 5000, "item_id": "1"}]})
        assert_error(c.post("/score", content=big), 413, "payload_too_large")

        def chunks():  # no Content-Length: the limit must hold while streaming
            for _ in range(10):
                yield b" " * 1000

        assert_error(c.post("/score", content=chunks()), 413, "payload_too_large")
        assert c.post("/score", json={"instances": ROWS[:3]}).status_code == 200


def test_compressed_body_is_415(client):
    r = client.post("/score", content=b"\x1f\x8b", headers={"content-encoding": "gzip"})
    assert_error(r, 415, "unsupported_media_type")


V2_BODY = {
    "inputs": [
        {"name": "user_id", "shape": [1], "datatype": "BYTES", "data": ["196"]},
        {"name": "item_id", "shape": [1], "datatype": "BYTES", "data": ["242"]},
    ]
}
POSTS = {"/score": {"instances": ROWS[:1]}, "/v2/models/synthetic-apg/infer": V2_BODY, "/admin/reload": {}}


@pytest.mark.parametrize("path", list(POSTS))
@pytest.mark.parametrize(
    "content_type",
    ["text/plain", "text/plain; charset=utf-8", "application/x-www-form-urlencoded", "Multipart/Form-Data; boundary=x"],
)
def test_bodies_a_browser_may_send_cross_origin_are_415(client, path, content_type):
    # The CORS-simple types need no preflight: refusing them keeps web pages from scoring through a visitor's browser.
    r = client.post(path, content=orjson.dumps(POSTS[path]), headers={"content-type": content_type})
    assert r.status_code == 415, r.text
    error = r.json() if path.startswith("/v2/") else r.json()["error"]
    assert error["code"] == "unsupported_media_type" and "application/json" in str(error)


@pytest.mark.parametrize("path", list(POSTS))
@pytest.mark.parametrize("content_type", [None, "application/json", "application/json; charset=utf-8"])
def test_json_or_no_content_type_is_read(client, path, content_type):
    # No Content-Type is what tritonclient.http sends, and what `curl --data-binary @-` without -H amounts to.
    headers = {"content-type": content_type} if content_type else {}
    r = client.post(path, content=orjson.dumps(POSTS[path]), headers=headers)
    assert r.status_code == 200, r.text


def test_admin_api_is_off_without_a_token_and_needs_its_own_when_set(bundle):
    with TestClient(make_app(bundle.path, admin_token=None)) as c:
        assert_error(c.post("/admin/reload", json={}), 403, "forbidden")
    with TestClient(make_app(bundle.path, admin_token=None, auth_token="s3cret")) as c:  # a scoring token is not enough
        assert_error(c.post("/admin/reload", json={}, headers={"Authorization": "Bearer s3cret"}), 403, "forbidden")
    with TestClient(make_app(bundle.path, admin_token="adm", auth_token="s3cret")) as c:
        assert_error(c.post("/admin/reload", json={}, headers={"Authorization": "Bearer s3cret"}), 401)
        assert c.post("/admin/reload", json={}, headers={"Authorization": "Bearer adm"}).status_code == 200


def test_auth_token(bundle):
    with TestClient(make_app(bundle.path, auth_token="s3cret")) as c:
        body = {"instances": ROWS[:1]}
        assert_error(c.post("/score", json=body), 401, "unauthorized")
        assert c.post("/score", json=body).headers["www-authenticate"] == "Bearer"
        assert_error(c.post("/score", json=body, headers={"Authorization": "Bearer wrong"}), 401)
        assert_error(c.post("/score", json=body, headers={"Authorization": "Basic s3cret"}), 401)
        assert c.post("/score", json=body, headers={"Authorization": "Bearer s3cret"}).status_code == 200
        assert c.post("/score", json=body, headers={"Authorization": "bearer  s3cret "}).status_code == 200
        assert_error(c.post("/score", json=body, headers={"Authorization": "Bearers3cret"}), 401)
        assert_error(c.post("/admin/reload", json={}), 401)
        v2 = c.post("/v2/models/synthetic-apg/infer", json={"inputs": []})
        assert v2.status_code == 401 and v2.json()["code"] == "unauthorized"
        for path in ("/livez", "/readyz", "/metrics", "/v2/health/live", "/v2/health/ready", "/v2"):
            assert c.get(path).status_code == 200, path


def test_probes(client):
    assert client.get("/livez").json() == {"status": "live"}
    ready = client.get("/readyz").json()
    assert ready["status"] == "ready" and ready["model"]["version"] == "v1"
    assert ready["model"]["provider"] == "CPUExecutionProvider"
    assert client.get("/metrics").headers["content-type"].startswith("text/plain")


def test_not_ready_before_startup(app):
    # No lifespan: the model is not loaded, so readiness and scoring say 503, liveness 200.
    c = TestClient(app, raise_server_exceptions=False)  # (no `with`: the lifespan does not run)
    assert c.get("/livez").status_code == 200
    assert_error(c.get("/readyz"), 503, "not_ready")
    assert_error(c.post("/score", json={"instances": ROWS}), 503, "not_ready")
    assert c.get("/readyz").headers["retry-after"] == "1"


def test_not_ready_after_shutdown(app):
    with TestClient(app) as c:
        assert c.get("/readyz").status_code == 200
    assert app.state.services.runtime.ready is False


def test_admin_reload(client, make_bundle):
    v2 = make_bundle("v2", seed=5)
    r = client.post("/admin/reload", json={"bundle": str(v2.path)})
    assert r.status_code == 200, r.text
    assert r.json()["model"]["version"] == "v2" and r.json()["previous"]["version"] == "v1"
    scored = client.post("/score", json={"instances": ROWS}).json()
    assert scored["model"]["version"] == "v2"
    np.testing.assert_allclose(scored["scores"], expected(v2, ROWS), atol=1e-6)
    edit_manifest(v2.path, format_version=99)
    assert_error(client.post("/admin/reload", json={"bundle": str(v2.path)}), 422, "invalid_bundle")
    assert_error(client.post("/admin/reload", json={"bundle": str(v2.path) + "/no/such\u0000"}), 403, "forbidden")
    assert_error(client.post("/admin/reload", json={"bundle": 5}), 422, "validation_error", "bundle")
    malformed = client.post("/admin/reload", content=b'{"bundle": ', headers={"content-type": "application/json"})
    assert_error(malformed, 400, "invalid_json", row=None)  # not the character offset
    assert client.post("/score", json={"instances": ROWS}).json()["model"]["version"] == "v2"
    reloaded = client.post("/admin/reload")  # no body: the configured bundle again
    assert reloaded.status_code == 200 and reloaded.json()["model"]["version"] == "v1"


class BundleBody(BaseModel):
    bundle: str | None = None


def test_fastapi_parsed_malformed_json_names_no_row():
    # A route whose body FastAPI parses reports a character offset in `loc`: it is not a row.
    app = FastAPI()
    install_error_handlers(app)

    @app.post("/x")
    async def endpoint(body: BundleBody) -> dict:
        return {}

    r = TestClient(app).post("/x", content=b'{"bundle": ', headers={"content-type": "application/json"})
    error = r.json()["error"]
    assert (r.status_code, error["code"], error["row"]) == (400, "invalid_json", None)
    assert error["message"] == "malformed JSON at character 11: Expecting value"


def test_reload_is_confined_to_the_bundle_root(tmp_path):
    # Default APG_BUNDLE_ROOT: the served bundle's parent. Outside it, existing or not, through a symlink or not,
    # the answer is the same 403, and nothing of the file system shows in it.
    served, inside = build_bundle(tmp_path / "root" / "v1"), build_bundle(tmp_path / "root" / "v2", version="v2")
    outside = build_bundle(tmp_path / "elsewhere" / "v3", version="v3")
    (tmp_path / "root" / "link").symlink_to(outside.path)
    with TestClient(make_app(served.path, bundle_root=None), headers=ADMIN) as c:
        answers = []
        for target in [outside.path, tmp_path / "root" / "link", "/etc", "/no/such/dir", tmp_path / "root" / ".."]:
            error = assert_error(c.post("/admin/reload", json={"bundle": str(target)}), 403, "forbidden", "bundle")
            answers.append(error["message"].replace(repr(str(target)), "X"))
        assert set(answers) == {"bundle X is not inside APG_BUNDLE_ROOT"}
        assert c.post("/admin/reload", json={"bundle": str(inside.path)}).json()["model"]["version"] == "v2"


def test_unknown_routes_and_methods_are_json(client):
    assert_error(client.get("/nope"), 404, "not_found")
    assert_error(client.get("/score"), 405, "method_not_allowed")


def test_lean_routes_refuse_dependencies():
    # LeanRoute does not run dependencies; declaring one must fail loudly rather than skip a check.
    router = APIRouter(route_class=LeanRoute)
    with pytest.raises(TypeError, match="authorize"):
        router.add_api_route("/x", lambda request: None, methods=["POST"], dependencies=[Depends(lambda: None)])


@pytest.mark.parametrize("token", [None, "s3cret"])
def test_openapi_declares_the_token_on_scoring_routes_only_when_one_is_set(bundle, token):
    with TestClient(make_app(bundle.path, auth_token=token)) as c:
        spec = c.get("/openapi.json").json()
    assert spec["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"  # /admin always needs one
    assert spec["paths"]["/admin/reload"]["post"]["security"] == [{"HTTPBearer": []}]
    for path in ("/score", "/v2/models/{name}/infer", "/v2/models/{name}/versions/{version}/infer"):
        declared = spec["paths"][path]["post"].get("security")
        assert declared == ([{"HTTPBearer": []}] if token else None), path


def test_openapi_documents_v2_errors_as_sent(client):
    spec = client.get("/openapi.json").json()
    v2 = spec["paths"]["/v2/models/{name}/infer"]["post"]["responses"]["400"]["content"]["application/json"]
    assert v2["schema"]["properties"]["error"] == {"type": "string"}
    body = client.post("/v2/models/synthetic-apg/infer", json={"inputs": []}).json()
    assert isinstance(body["error"], str) and set(body) <= set(v2["schema"]["properties"])
    score = spec["paths"]["/score"]["post"]["responses"]["400"]["content"]["application/json"]
    assert score["schema"]["properties"]["error"]["type"] == "object"


def test_opentelemetry_spans_only_when_asked(bundle, monkeypatch):
    # A process may have a tracer provider for other reasons: FastAPI's request spans go to it only with APG_OTEL.
    spans = []

    class Tracer(trace.NoOpTracer):
        def start_span(self, name, *args, **kwargs):
            spans.append(name)
            return super().start_span(name, *args, **kwargs)

    class Provider(trace.TracerProvider):
        def get_tracer(self, *args, **kwargs):
            return Tracer()

    monkeypatch.setattr(trace, "get_tracer_provider", Provider)
    with TestClient(make_app(bundle.path)) as c:
        assert c.post("/score", json={"instances": ROWS[:1]}).status_code == 200
    assert spans == []
    with TestClient(make_app(bundle.path, otel=True)) as c:
        assert c.post("/score", json={"instances": ROWS[:1]}).status_code == 200
    assert "POST" in spans


def test_openapi_documents_score_with_examples(client):
    spec = client.get("/openapi.json").json()
    body = spec["paths"]["/score"]["post"]["requestBody"]["content"]["application/json"]
    assert set(body["examples"]) == {"rows", "lists", "columns", "ranking"}
    assert len(body["schema"]["oneOf"]) == 3
    for example in body["examples"].values():  # the examples score
        assert client.post("/score", json=example["value"]).status_code == 200
    assert "/v2/models/{name}/infer" in spec["paths"]


def test_a_bug_is_a_500_json_with_request_id(client, monkeypatch):
    async def broken(payload):
        raise RuntimeError("bug")

    monkeypatch.setattr(client.app.state.services.scorer, "score_payload", broken)
    r = client.post("/score", json={"instances": ROWS}, headers={"X-Request-ID": "bug-1"})
    assert_error(r, 500, "internal")
    assert r.headers["x-request-id"] == "bug-1"
    assert client.get("/livez").status_code == 200  # and the process serves on


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_docs_pages_load_only_local_assets(client, page):
    # Offline, a page that loads Swagger UI or ReDoc from a CDN is blank: every asset must come from this server.
    html = client.get(page)
    assert html.status_code == 200 and html.headers["content-type"].startswith("text/html")
    urls = re.findall(r"""(?:src|href|url)\s*[=:]\s*['"]([^'"]+)['"]""", html.text)
    assets = [u for u in urls if u != "/openapi.json"]
    assert assets, html.text
    for url in assets:
        assert url.startswith("/") and not url.startswith("//"), f"{page} loads {url} from elsewhere"
        answer = client.get(url)
        assert answer.status_code == 200 and answer.content, url
    assert not re.search(r"https?://(?!127\.0\.0\.1|localhost)[^'\"]*\.(?:js|css)", html.text)


def test_openapi_documents_the_multi_valued_separator_and_both_forms_score_alike(client):
    spec = client.get("/openapi.json").json()
    body = spec["paths"]["/score"]["post"]["requestBody"]["content"]["application/json"]
    genres = body["schema"]["oneOf"][0]["properties"]["instances"]["items"]["properties"]["genres"]
    assert "'|'" in genres["description"] and "apg_oov_values_total" in genres["description"]
    joined, listed = body["examples"]["rows"]["value"], body["examples"]["lists"]["value"]
    assert all(isinstance(r["genres"], str) for r in joined["instances"])
    assert [r["genres"] for r in listed["instances"]] == [r["genres"].split("|") for r in joined["instances"]]
    assert client.post("/score", json=listed).json()["scores"] == client.post("/score", json=joined).json()["scores"]
