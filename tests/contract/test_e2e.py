"""End to end: `apg serve` of a bundle trained and exported in this session, against in-process onnxruntime."""

import json

import numpy as np
import onnxruntime as ort
from live_server import http
from prometheus_client.parser import text_string_to_metric_families

from service.bundle import load_bundle


def real_rows(bundle_dir, n=64):
    """Rows built from the bundle's own vocabularies, as a client would send them."""
    schema = json.loads((bundle_dir / "bundle.json").read_text())["schema"]
    fields = {f["name"]: f for f in schema["fields"]}
    users, items, genres = fields["user_id"]["vocab"], fields["item_id"]["vocab"], fields["genres"]["vocab"]
    return [
        {
            "user_id": users[i % len(users)],
            "item_id": items[(7 * i) % len(items)],
            "age": 18 + i % 50,
            "gender": "MF"[i % 2],
            "occupation": fields["occupation"]["vocab"][i % 5],
            "zip_code": f"{10000 + 97 * i}",
            "release_year": 1960 + i % 40,
            "genres": "|".join(genres[i % 5 : i % 5 + 1 + i % 3]),
        }
        for i in range(n)
    ]


def metrics(url):
    status, body = http("GET", f"{url}/metrics")
    assert status == 200
    return {
        s.name + json.dumps(s.labels, sort_keys=True): s.value
        for fam in text_string_to_metric_families(body.decode())
        for s in fam.samples
    }


def test_served_scores_equal_in_process_onnxruntime(apg_server, bundle_dir):
    rows = real_rows(bundle_dir)
    bundle = load_bundle(bundle_dir)
    session = ort.InferenceSession(str(bundle_dir / "model.onnx"), providers=["CPUExecutionProvider"])
    expected = session.run(["score"], bundle.encoder.encode_rows(rows))[0]
    before = metrics(apg_server.url)

    status, body = http("POST", f"{apg_server.url}/score", {"instances": rows})
    assert status == 200
    reply = json.loads(body)
    assert reply["model"] == {"name": bundle.name, "version": bundle.version}
    assert np.max(np.abs(np.array(reply["scores"], dtype=np.float32) - expected)) <= 1e-6

    columns = {k: [r[k] for r in rows] for k in rows[0]}
    status, body = http("POST", f"{apg_server.url}/score", {"inputs": columns})
    assert status == 200 and np.max(np.abs(np.array(json.loads(body)["scores"]) - expected)) <= 1e-6

    after = metrics(apg_server.url)
    key = 'apg_requests_total{"code": "200", "route": "/score"}'
    assert after[key] - before.get(key, 0) == 2
    scored = f'apg_rows_scored_total{{"arm": "none", "model": "{bundle.name}"}}'
    assert after[scored] - before.get(scored, 0) == 2 * len(rows)
    for le in ("0.0001", "0.00025", "0.0005", "0.00075"):  # sub-millisecond buckets
        assert f'apg_request_duration_seconds_bucket{{"le": "{le}", "route": "/score"}}' in after
    assert after['apg_request_duration_seconds_count{"route": "/score"}'] >= 2
