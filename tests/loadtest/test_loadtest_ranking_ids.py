"""`apg loadtest --format ranking-ids`: bodies of one user's features against candidate ids drawn from the bundle's
vocabulary (run against a real `apg serve --item-store` in tests/service/test_service_items_live.py)."""

from __future__ import annotations

import orjson
import pytest

from features import RowSampler
from scripts.cli import main
from scripts.loadtest import plan
from scripts.loadtest.plan import context_features, encode_body


def test_ranking_ids_bodies_name_candidates_by_id(schema):
    context, items = context_features(schema)
    assert context == ["user_id", "age", "zip_code"] and items == ["item_id", "score_hint", "genres"]
    rows = RowSampler(schema, seed=0, unseen=0.0).rows(8)
    body = orjson.loads(encode_body(rows, "ranking-ids", context=tuple(context), model="m"))
    assert body == {
        "context": {k: rows[0][k] for k in context},
        "candidates": [r["item_id"] for r in rows],
        "model": "m",
    }
    bodies = plan.build_bodies(RowSampler(schema, unseen=0.0), "ranking-ids", rows=5, pool=20, context=("user_id",))
    ids = {i for b in bodies for i in orjson.loads(b)["candidates"]}
    assert ids <= {"a", "b"} and len(ids) == 2  # drawn from item_id's vocabulary
    with pytest.raises(ValueError, match="'sku' is not a feature of the bundle"):
        plan.build_bodies(RowSampler(schema), "ranking-ids", rows=2, pool=1, id_column="sku")


def test_the_format_is_offered_on_the_command_line(capsys):
    with pytest.raises(SystemExit):
        main(["loadtest", "--help"])
    text = capsys.readouterr().out
    assert "ranking-ids" in text and "--id-column" in text
