"""Bad input never yields a 5xx: arbitrary JSON bodies and valid requests with one subtree replaced by junk."""

from __future__ import annotations

import hypothesis
import hypothesis.strategies as st
import orjson
import pytest
from service_testing import TestClient, make_app
from synthetic_bundle import ROWS

JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=16,
)

VALID = {
    "/score": [
        {"instances": ROWS},
        {"inputs": {"user_id": ["196", "22"], "item_id": ["242", "1"], "genres": ["Drama", ["War"]]}},
        {"context": {"user_id": "196", "age": 30}, "candidates": [{"item_id": "242"}, {"item_id": "51"}]},
    ],
    "/v2/models/synthetic-apg/infer": [
        {
            "id": "x",
            "parameters": {"binary_data_output": False},
            "inputs": [
                {"name": "user_id", "shape": [2], "datatype": "BYTES", "data": ["196", "22"]},
                {"name": "item_id", "shape": [2, 1], "datatype": "BYTES", "data": [["242"], ["51"]]},
                {"name": "age", "shape": [2], "datatype": "FP64", "data": [49.0, 20.5]},
                {"name": "genres", "shape": [2, 2], "datatype": "BYTES", "data": ["Drama", "War", "", "Action"]},
            ],
            "outputs": [{"name": "score", "parameters": {"binary_data": False}}],
        }
    ],
}


@pytest.fixture(scope="module")
def fuzz_client(bundle):
    with TestClient(make_app(bundle.path, max_rows=64), raise_server_exceptions=False) as c:
        yield c


def mutate(data: st.DataObject, value):
    """Replace one randomly chosen subtree of `value` by arbitrary JSON."""
    if isinstance(value, dict | list) and value and data.draw(st.booleans()):
        keys = list(value) if isinstance(value, dict) else list(range(len(value)))
        key = data.draw(st.sampled_from(keys))
        copy = dict(value) if isinstance(value, dict) else list(value)
        copy[key] = mutate(data, value[key])
        return copy
    return data.draw(JSON)


def check(client, path: str, body: bytes) -> None:
    r = client.post(path, content=body, headers={"content-type": "application/json"})
    assert r.status_code < 500, (path, body[:300], r.text)
    assert r.status_code == 200 or "error" in r.json()


SETTINGS = hypothesis.settings(
    max_examples=150,
    deadline=None,
    database=None,
    derandomize=True,
    suppress_health_check=list(hypothesis.HealthCheck),
)


@pytest.mark.parametrize("path", list(VALID))
@SETTINGS
@hypothesis.given(data=st.data())
def test_mutated_requests_never_5xx(fuzz_client, path, data):
    body = mutate(data, data.draw(st.sampled_from(VALID[path])))
    check(fuzz_client, path, orjson.dumps(body))


@pytest.mark.parametrize("path", list(VALID))
@SETTINGS
@hypothesis.given(body=JSON)
def test_arbitrary_json_never_5xx(fuzz_client, path, body):
    check(fuzz_client, path, orjson.dumps(body))


@pytest.mark.parametrize("path", list(VALID))
@SETTINGS
@hypothesis.given(body=st.binary(max_size=200), header=st.none() | st.text(max_size=6))
def test_arbitrary_bytes_never_5xx(fuzz_client, path, body, header):
    headers = {"content-type": "application/json"}
    if header is not None and header.isascii() and header.isprintable():
        headers["Inference-Header-Content-Length"] = header
    r = fuzz_client.post(path, content=body, headers=headers)
    assert r.status_code < 500, (path, body, r.text)
