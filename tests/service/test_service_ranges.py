"""Out-of-range numbers and numbers for string fields over HTTP: a field that refuses answers 400 naming feature and
row; one that clips scores and counts apg_clipped_values_total{feature}; a number for a string field is a 400."""

from __future__ import annotations

import json
import shutil

import pytest
from service_testing import ADMIN, TestClient, make_app


@pytest.fixture
def client(bundle, tmp_path):
    path = shutil.copytree(bundle.path, tmp_path / "ranged")
    manifest = json.loads((path / "bundle.json").read_text())
    for f in manifest["schema"]["fields"]:
        if f["name"] == "age":
            f.update(range=[0, 120], out_of_range="clip")
        if f["name"] in ("gender", "genres"):
            f["strings"] = True
    (path / "bundle.json").write_text(json.dumps(manifest))
    with TestClient(make_app(path), raise_server_exceptions=False, headers=ADMIN) as c:
        yield c


def clipped(c, feature: str) -> float:
    registry = c.app.state.services.metrics.registry
    return registry.get_sample_value("apg_clipped_values_total", {"feature": feature}) or 0.0


def test_a_clipped_number_scores_as_the_bound_and_is_counted(client):
    rows = [{"user_id": "196", "item_id": "242", "age": age} for age in (1e308, 120, 35)]
    scores = client.post("/score", json={"instances": rows}).json()["scores"]
    assert scores[0] == scores[1] != scores[2] and clipped(client, "age") == 1
    assert "apg_clipped_values_total" in client.get("/metrics").text


@pytest.mark.parametrize(
    ("row", "field", "message"),
    [
        ({"gender": 1}, "gender", "feature 'gender', row 0: expected a string, got int"),
        ({"genres": 5}, "genres", "feature 'genres', row 0: expected a string, got int"),
    ],
)
def test_a_number_for_a_string_field_is_a_400(client, row, field, message):
    r = client.post("/score", json={"instances": [{"user_id": "196", "item_id": "242", **row}]})
    assert r.status_code == 400
    assert r.json()["error"] == {"code": "invalid_type", "message": message, "field": field, "row": 0}


def test_a_refused_number_is_a_400_naming_feature_and_row(bundle, tmp_path):
    path = shutil.copytree(bundle.path, tmp_path / "refusing")
    manifest = json.loads((path / "bundle.json").read_text())
    next(f for f in manifest["schema"]["fields"] if f["name"] == "age").update(range=[0, 120], out_of_range="refuse")
    (path / "bundle.json").write_text(json.dumps(manifest))
    with TestClient(make_app(path), raise_server_exceptions=False, headers=ADMIN) as c:
        r = c.post("/score", json={"inputs": {"user_id": ["196", "22"], "item_id": ["242", "51"], "age": [30, 1e308]}})
    assert r.status_code == 400
    assert r.json()["error"] == {
        "code": "out_of_range",
        "message": "feature 'age', row 1: 1e+308 is outside [0, 120]",
        "field": "age",
        "row": 1,
    }
