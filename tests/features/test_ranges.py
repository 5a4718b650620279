"""Rule 5's declared range (clip and count, or refuse) and fields whose request values must be strings."""

from __future__ import annotations

import numpy as np
import pytest

from features import LENIENT, Encoder, Field, Schema, SchemaError
from features.errors import InvalidType, OutOfRange

EDGES = (18.0, 25.0, 35.0, 45.0, 50.0, 56.0)
SCHEMA = Schema(
    "ranges",
    (
        Field("age", "numeric", edges=EDGES, range=(0.0, 120.0), out_of_range="refuse"),
        Field("year", "numeric", edges=(1950.0, 1990.0), range=(1800.0, 2100.0), out_of_range="clip"),
        Field("gender", "categorical", vocab=("F", "M"), strings=True),
        Field("genres", "multi", vocab=("Drama", "War"), sep="|", max_len=3, strings=True),
        Field("user", "categorical", vocab=("196",)),
    ),
)


def test_a_refused_number_names_feature_row_and_range():
    enc = Encoder(SCHEMA)
    with pytest.raises(OutOfRange, match=r"feature 'age', row 1: 1e\+308 is outside \[0, 120\]") as info:
        enc.encode_rows([{"age": 30}, {"age": 1e308}])
    assert (info.value.field, info.value.row, info.value.status, info.value.code) == ("age", 1, 400, "out_of_range")
    with pytest.raises(OutOfRange, match="row 0"):
        enc.encode_columns({"age": [-1]})
    with pytest.raises(OutOfRange, match=r"feature 'age': 200 is outside"):  # a ranking context: no row
        enc.encode_ranking({"age": 200}, [{"user": "196"}])


def test_clipped_numbers_are_counted_and_score_as_the_bound():
    enc = Encoder(SCHEMA)
    x = enc.encode_rows([{"year": 3000}, {"year": 1990}, {"year": 1e300}, {"year": None}, {"year": 1700.5}])
    bound = enc.encode_rows([{"year": 2100}, {"year": 1800}])["year"]
    assert x["year"].tolist() == [bound[0], 3, bound[0], 0, bound[1]]
    assert enc.take_clipped() == {"year": 3} and enc.take_clipped() == {}


def test_training_data_reads_a_refused_number_as_missing():
    enc = Encoder(SCHEMA, LENIENT)
    assert enc.encode_columns({"age": [30, 1e308, -5, None]})["age"].tolist() == [3, 0, 0, 0]


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ({"gender": 1}, "feature 'gender', row 0: expected a string, got int"),
        ({"genres": 5}, "feature 'genres', row 0: expected a string, got int"),
        ({"genres": ["Drama", 2.5]}, "feature 'genres', row 0: expected a string, got float"),
    ],
)
def test_a_number_for_a_string_field_is_refused(row, message):
    with pytest.raises(InvalidType, match=message):
        Encoder(SCHEMA).encode_rows([row])


def test_strings_and_ids_still_pass():
    enc = Encoder(SCHEMA)
    x = enc.encode_rows([{"gender": "M", "genres": ["War", "Drama"], "user": 196}, {"genres": "Drama|War"}])
    assert x["gender"].tolist() == [3, 0] and x["user"].tolist() == [2, 0]  # an id field still takes numbers
    np.testing.assert_array_equal(x["genres"], [[3, 2, 0], [2, 3, 0]])
    assert Encoder(SCHEMA, LENIENT).encode_columns({"gender": [1]})["gender"].tolist() == [1]  # training: OOV


@pytest.mark.parametrize(
    "bad",
    [
        {"kind": "numeric", "edges": [1.0], "range": [5, 1]},
        {"kind": "numeric", "edges": [1.0], "range": [0, 1], "out_of_range": "wrap"},
        {"kind": "numeric", "edges": [1.0], "out_of_range": "clip"},
        {"kind": "categorical", "range": [0, 1]},
        {"kind": "numeric", "edges": [1.0], "strings": True},
    ],
)
def test_malformed_rules_are_refused(bad):
    with pytest.raises(SchemaError, match="'x'"):
        Field.from_dict({"name": "x", **bad})
