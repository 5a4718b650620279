"""The ranking section of `apg bench`: which features are the user's, and the three request shapes carrying the
same user and items (checked with the service's own encoder, which must produce the same arrays for all three)."""

from __future__ import annotations

import numpy as np
import orjson
import pytest

from features import RowSampler
from scripts.bench.ranking import SHAPES, context_features, ranking_requests, same_scores


def test_the_user_side_is_the_user_column_the_user_named_and_the_profile(schema):
    # the tiny schema: user_id, item_id, age, score_hint, zip_code (zip_prefix), genres, user_id (user_activity)
    assert context_features(schema) == (["user_id", "age", "zip_code"], ["item_id", "score_hint", "genres"])
    with_column = {**schema, "user_column": "item_id"}  # the schema's user column counts, whatever its name
    assert context_features(with_column)[0] == ["user_id", "item_id", "age", "zip_code"]


def test_a_schema_without_an_item_side_is_refused():
    with pytest.raises(ValueError, match="user side and an item side"):
        context_features({"fields": [{"name": "user_id"}, {"name": "age"}]})
    with pytest.raises(ValueError, match="user side and an item side"):
        context_features({"fields": [{"name": "item_id"}]})


def _body(raw: bytes) -> dict:
    head, body = raw.split(b"\r\n\r\n", 1)
    assert head.startswith(b"POST /score HTTP/1.1") and f"Content-Length: {len(body)}".encode() in head
    return orjson.loads(body)


def test_the_three_shapes_encode_to_the_same_arrays(schema):
    from features import Encoder

    context, items = context_features(schema)
    reqs = ranking_requests(RowSampler(schema, seed=4), context, 6, pool=3)
    assert len(reqs["rows"]) == 3 and all(len(rows) == 6 for rows in reqs["rows"])
    enc = Encoder(schema)
    for i, rows in enumerate(reqs["rows"]):
        assert len({tuple(r[k] for k in context) for r in rows}) == 1  # one user per request
        bodies = {shape: _body(reqs["bodies"][shape][i]) for shape in SHAPES}
        assert bodies["rows"] == {"instances": rows}
        assert set(bodies["ranking"]["context"]) == set(context) and all(
            set(c) == set(items) for c in bodies["ranking"]["candidates"]
        )
        arrays = [
            enc.encode_rows(bodies["rows"]["instances"]),
            enc.encode_columns(bodies["columns"]["inputs"]),
            enc.encode_ranking(bodies["ranking"]["context"], bodies["ranking"]["candidates"]),
        ]
        for other in arrays[1:]:
            assert other.keys() == arrays[0].keys()
            assert all(np.array_equal(arrays[0][k], other[k]) for k in other)
    sizes = [len(reqs["bodies"][s][0]) for s in SHAPES]
    assert sizes[1] < sizes[0] and sizes[2] < sizes[0]  # neither repeats every feature name in every row


def test_same_scores_refuses_shapes_that_disagree(slow_server):
    server = slow_server(0.0)  # answers {"scores": [0.5]} to every POST
    port = int(server.url.rsplit(":", 1)[1])
    bodies = {s: b"POST /score HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}" for s in SHAPES}
    assert same_scores(port, bodies, np.array([0.5], dtype=np.float32)) == 0.0
    with pytest.raises(RuntimeError, match="scores differ"):
        same_scores(port, bodies, np.array([0.25], dtype=np.float32))
