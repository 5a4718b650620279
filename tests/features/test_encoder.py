"""features/encoder.py against hand-computed indices (docs/BUNDLE.md, "Encoding rules")."""

from __future__ import annotations

import math

import numpy as np
import pytest
from synthetic_bundle import ROWS, SCHEMA

from features import Encoder, errors, normalise

# Indices in SCHEMA: 0 missing, 1 unseen, 2 + vocab position.
USER = {"196": 2, "186": 3, "22": 4, "244": 5, "166": 6}
GENRE = {"Action": 2, "Comedy": 3, "Drama": 4, "Romance": 5, "Thriller": 6, "Sci-Fi": 7, "War": 8}


@pytest.fixture(scope="module")
def enc() -> Encoder:
    return Encoder(SCHEMA)


def optional(schema: dict = SCHEMA) -> Encoder:
    """The schema with nothing required, to test missing values of every field."""
    return Encoder({**schema, "fields": [{**f, "required": False} for f in schema["fields"]]})


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (196, "196"),
        (196.0, "196"),
        ("196", "196"),
        ("  196\t", "196"),
        (True, "true"),
        (False, "false"),
        (1.5, "1.5"),
        (-0.0, "0"),
        (1e20, "100000000000000000000"),
        (np.int64(7), "7"),
        (np.float64(2.5), "2.5"),
        ("", None),
        ("   ", None),
        (None, None),
        ("Ünïcødé ✓", "Ünïcødé ✓"),
    ],
)
def test_normalise(value, expected):
    assert normalise(value) == expected


@pytest.mark.parametrize(
    ("value", "error"),
    [
        (math.nan, errors.NonFinite),
        (math.inf, errors.NonFinite),
        ([1], errors.InvalidType),
        ({"a": 1}, errors.InvalidType),
    ],
)
def test_normalise_refuses(value, error):
    with pytest.raises(error):
        normalise(value)


def test_categorical_indices():
    col = [196, 196.0, "196", " 196 ", "999", None, "", 166]
    out = optional().encode_columns({"user_id": col})
    assert out["user_id"].tolist() == [2, 2, 2, 2, 1, 0, 0, 6]
    assert out["user_id"].dtype == np.int64


def test_bools_and_numbers_never_share_a_memo_entry():
    # True == 1 in Python: a cache keyed by raw values must not conflate them (rule 1: "true" vs "1").
    e = Encoder({"fields": [{"name": "flag", "kind": "categorical", "vocab": ["1", "true", "false", "0"]}]})
    assert e.encode_columns({"flag": [1, 1.0, "1", 0]})["flag"].tolist() == [2, 2, 2, 5]
    assert e.encode_columns({"flag": [True, False]})["flag"].tolist() == [3, 4]
    assert e.encode_columns({"flag": [True, 1, False, 0]})["flag"].tolist() == [3, 2, 4, 5]


def test_prefix_and_mapping():
    out = optional().encode_columns(
        {
            "zip_code": ["55105", 55105, "94043", "32067", "00000", "", None],
            "user_id": ["196", "186", 22, "999", None, "244", "166"],
        }
    )
    assert out["zip_prefix"].tolist() == [2, 2, 3, 4, 1, 0, 0]
    # mapping: 196/22 → high (4), 186 → low (3), any other known or unseen user → cold (2), missing → 0
    assert out["user_activity"].tolist() == [4, 3, 4, 2, 0, 2, 2]


def test_mapping_without_default_is_out_of_vocabulary():
    field = {"name": "bucket", "kind": "categorical", "source": "u", "mapping": {"a": "x"}, "vocab": ["x"]}
    assert Encoder({"fields": [field]}).encode_columns({"u": ["a", "b", None]})["bucket"].tolist() == [2, 1, 0]


def test_multi_padding_truncation_and_missing_elements():
    values = [
        "Comedy|Drama",
        ["Action"],
        " Action | Unknown ",
        "Action||Drama",
        "",
        None,
        [],
        "|||Action|Comedy|Drama|Romance|Thriller|Sci-Fi|War",  # empties dropped before keeping max_len
        ["War", None, "", 5],
    ]
    out = optional().encode_columns({"genres": values})["genres"]
    g = GENRE
    assert out.shape == (len(values), 6)
    assert out.tolist() == [
        [g["Comedy"], g["Drama"], 0, 0, 0, 0],
        [g["Action"], 0, 0, 0, 0, 0],
        [g["Action"], 1, 0, 0, 0, 0],
        [g["Action"], g["Drama"], 0, 0, 0, 0],
        [0] * 6,
        [0] * 6,
        [0] * 6,
        [g["Action"], g["Comedy"], g["Drama"], g["Romance"], g["Thriller"], g["Sci-Fi"]],
        [g["War"], 1, 0, 0, 0, 0],
    ]


def test_numeric_buckets():
    # edges [18, 25, 35, 45, 50, 56]: index = 1 + bisect_right(edges, x); missing → 0
    col = [17, 18, 24.9, 25, 49, 56, 80, None, "49", " 35 ", "", -1e300, 1e300]
    assert optional().encode_columns({"age": col})["age"].tolist() == [1, 2, 2, 3, 5, 7, 7, 0, 5, 4, 0, 1, 7]


@pytest.mark.parametrize("dtype", ["<f8", "<f4", "<f2", "<i8", "<i4", "<u1"])
def test_array_columns_encode_like_lists(dtype):
    # v2 binary tensors arrive as numpy arrays: numbers are read as they are, anything else via tolist()
    ages, users = [17, 18, 25, 49, 56, 80], [196, 186, 22, 250, 166, 196]  # all fit in uint8
    as_lists = optional().encode_columns({"age": ages, "user_id": users})
    as_arrays = optional().encode_columns({"age": np.array(ages, dtype), "user_id": np.array(users, dtype)})
    for name in ("age", "user_id", "user_activity"):
        assert as_arrays[name].tolist() == as_lists[name].tolist(), name


def test_array_columns_keep_the_checks():
    with pytest.raises(errors.NonFinite):
        optional().encode_columns({"age": np.array([30.0, np.nan])})
    with pytest.raises(errors.InvalidType):  # a bool is not a number, as in JSON
        optional().encode_columns({"age": np.array([True, False])})


@pytest.mark.parametrize(
    ("value", "error"),
    [
        ("abc", errors.InvalidType),
        (math.nan, errors.NonFinite),
        ("inf", errors.NonFinite),
        (True, errors.InvalidType),
        ([1], errors.InvalidType),
        (10**400, errors.InvalidType),
    ],
)
def test_numeric_refuses(enc, value, error):
    rows = [dict(ROWS[0]), {**ROWS[0], "age": value}]
    with pytest.raises(error) as info:
        enc.encode_rows(rows)
    assert (info.value.field, info.value.row) == ("age", 1)


def test_rows_reference_indices(enc):
    out = enc.encode_rows(ROWS)
    assert out["user_id"].tolist() == [2, 3, 4, 1, 5]
    assert out["item_id"].tolist() == [2, 3, 4, 5, 1]
    assert out["age"].tolist() == [5, 4, 3, 0, 7]
    assert out["gender"].tolist() == [3, 2, 3, 0, 1]
    assert out["zip_prefix"].tolist() == [2, 3, 4, 0, 1]
    assert out["user_activity"].tolist() == [4, 3, 4, 2, 2]
    assert list(out) == [f["name"] for f in SCHEMA["fields"]]  # graph-input order


def test_rows_columns_and_ranking_agree(enc):
    by_rows = enc.encode_rows(ROWS)
    features = sorted(set().union(*ROWS))
    by_cols = enc.encode_columns({k: [r.get(k) for r in ROWS] for k in features})
    context = {"user_id": "196", "age": 49, "gender": "M", "zip_code": "55105"}
    candidates = [{"item_id": r["item_id"], "genres": r.get("genres")} for r in ROWS]
    ranked = enc.encode_ranking(context, candidates)
    expanded = enc.encode_rows([{**context, **c} for c in candidates])
    for name in by_rows:
        np.testing.assert_array_equal(by_rows[name], by_cols[name])
        np.testing.assert_array_equal(ranked[name], expanded[name])
        assert ranked[name].flags.c_contiguous


@pytest.mark.parametrize(
    ("call", "error", "field", "row"),
    [
        (lambda e: e.encode_rows([ROWS[0], {**ROWS[1], "agee": 3}]), errors.UnknownFeature, "agee", 1),
        (lambda e: e.encode_rows([ROWS[0], {"item_id": "1"}]), errors.MissingFeature, "user_id", 1),
        (lambda e: e.encode_rows([ROWS[0], {**ROWS[0], "user_id": None}]), errors.MissingFeature, "user_id", 1),
        (lambda e: e.encode_rows([ROWS[0], {**ROWS[0], "item_id": "  "}]), errors.MissingFeature, "item_id", 1),
        (lambda e: e.encode_rows([ROWS[0], ROWS[1], {**ROWS[0], "gender": {"x": 1}}]), errors.InvalidType, "gender", 2),
        (lambda e: e.encode_rows([ROWS[0], {**ROWS[0], "genres": [["nested"]]}]), errors.InvalidType, "genres", 1),
        (lambda e: e.encode_rows([]), errors.EmptyBatch, "instances", None),
        (lambda e: e.encode_rows([ROWS[0], 5]), errors.InvalidShape, "instances", 1),
        (lambda e: e.encode_rows({"user_id": "1"}), errors.InvalidShape, "instances", None),
        (lambda e: e.encode_columns({"user_id": ["1", "2"], "item_id": ["1"]}), errors.RaggedColumns, "item_id", None),
        (lambda e: e.encode_columns({"user_id": "196"}), errors.InvalidShape, "user_id", None),
        (lambda e: e.encode_columns({}), errors.EmptyBatch, "inputs", None),
        (lambda e: e.encode_columns({"user_id": [], "item_id": []}), errors.EmptyBatch, "inputs", None),
        (lambda e: e.encode_columns({"item_id": ["1"]}), errors.MissingFeature, "user_id", None),
        (
            lambda e: e.encode_ranking({"user_id": "1", "item_id": "2"}, [{"item_id": "3"}]),
            errors.InvalidShape,
            "item_id",
            None,
        ),
        (lambda e: e.encode_ranking({"user_id": math.nan}, [{"item_id": "3"}]), errors.NonFinite, "user_id", None),
        (lambda e: e.encode_ranking({"user_id": "1"}, []), errors.EmptyBatch, "candidates", None),
        (lambda e: e.encode_ranking(["user_id"], [{"item_id": "3"}]), errors.InvalidShape, "context", None),
    ],
)
def test_errors_name_feature_and_row(enc, call, error, field, row):
    with pytest.raises(error) as info:
        call(enc)
    assert (info.value.field, info.value.row) == (field, row)
    assert 400 <= info.value.status < 500
    if field is not None:
        assert field in info.value.message


def test_describe_raw_features(enc):
    info = enc.describe()
    assert list(info) == ["user_id", "item_id", "age", "gender", "zip_code", "genres"]  # sources, not field names
    assert info["user_id"].required and info["item_id"].required and not info["age"].required
    assert info["age"].numeric and not info["user_id"].numeric and not info["zip_code"].numeric
    assert info["genres"].multi and not info["gender"].multi


def test_example_rows_encode(enc):
    out = enc.encode_rows(enc.example_rows(50))
    assert all(len(v) == 50 for v in out.values())
    assert (out["user_id"] >= 2).all()  # examples are real vocabulary values


@pytest.mark.parametrize(
    "field",
    [
        {"name": "x", "kind": "bogus"},
        {"name": "x", "kind": "categorical", "vocab": ["a", "a"]},
        {"name": "x", "kind": "categorical", "vocab": [1, 2]},
        {"name": "x", "kind": "numeric", "edges": [3, 1]},
        {"name": "x", "kind": "multi", "vocab": ["a"]},
        {"kind": "categorical"},
    ],
)
def test_malformed_schema(field):
    with pytest.raises(errors.BundleError):
        Encoder({"fields": [field]})
