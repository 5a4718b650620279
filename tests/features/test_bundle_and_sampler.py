"""features/bundle.py's schema reader and features/sampler.py's rows, on the synthetic bundle."""

import json

import pytest
from synthetic_bundle import SCHEMA, build_bundle

from features import Encoder, RowSampler, Schema, example_rows, read_schema


def test_read_schema_from_a_bundle_dir_its_manifest_or_a_bare_schema(tmp_path):
    b = build_bundle(tmp_path / "b", name="tiny")
    expected = Schema.from_dict(SCHEMA)
    assert read_schema(b.path) == (expected, "tiny") == read_schema(b.path / "bundle.json")
    bare = tmp_path / "schema.json"
    bare.write_text(json.dumps(SCHEMA))
    assert read_schema(bare) == (expected, None)
    with pytest.raises(FileNotFoundError):
        read_schema(tmp_path / "nowhere")
    (tmp_path / "odd.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match="no feature schema"):
        read_schema(tmp_path / "odd.json")


def test_sampled_rows_encode_strictly_and_known_values_hit_the_vocabulary():
    enc = Encoder(SCHEMA)
    rows = RowSampler(SCHEMA, seed=1, unseen=0.0).rows(200)
    out = enc.encode_rows(rows)
    assert (out["user_id"] >= 2).all() and (out["genres"][:, 0] >= 2).all()  # known values only
    unseen = enc.encode_rows(RowSampler(SCHEMA, seed=1, unseen=0.5).rows(200))
    assert (unseen["item_id"] == 1).any()
    assert example_rows(SCHEMA, 5) == example_rows(Schema.from_dict(SCHEMA), 5) == enc.example_rows(5)
