"""One encoder, two policies: STRICT (requests: typed errors) and LENIENT (training data: bad values are missing).
On every valid value the two agree; they differ only where a rule is broken (docs/BUNDLE.md rule 5)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from features import LENIENT, OOV, STRICT, Encoder, Field, Schema, errors, normalise
from features.rules import elements, read_limit


def encode(field: Field, col: list, policy: str = LENIENT) -> list:
    return Encoder(Schema("t", (field,)), policy).encode_columns({field.source: col})[field.name].tolist()


def test_lenient_encoding_oov_missing_prefix_mapping_multi_numeric():
    cat = Field("zip", "categorical", prefix=2, vocab=("85", "94"))
    assert encode(cat, ["85711", "94043", "T8H1N", None, ""]) == [2, 3, OOV, 0, 0]
    derived = Field(
        "act", "categorical", source="user_id", mapping={"1": "2"}, mapping_default="0", vocab=("0", "1", "2")
    )
    assert encode(derived, [1, "1", 99, None]) == [4, 4, 2, 0]
    multi = Field("genres", "multi", sep="|", max_len=3, vocab=("Drama", "Comedy"))
    out = encode(multi, ["Drama|Comedy", ["Comedy"], "Noir|Drama|Comedy|Drama", None, ""])
    assert out == [[2, 3, 0], [3, 0, 0], [OOV, 2, 3], [0, 0, 0], [0, 0, 0]]
    num = Field("age", "numeric", edges=(18.0, 25.0))
    assert encode(num, [10, 18, "30", None, "x", float("inf"), True]) == [1, 2, 3, 0, 0, 0, 0]
    nosep = Field("tags", "multi", max_len=2, vocab=("a b",))
    assert encode(nosep, ["a b", ["a b", "c"]]) == [[2, 0], [2, 1]]


@pytest.mark.parametrize(
    ("field", "bad"),
    [
        (Field("age", "numeric", edges=(18.0,)), "x"),
        (Field("age", "numeric", edges=(18.0,)), True),
        (Field("age", "numeric", edges=(18.0,)), math.nan),
        (Field("id", "categorical", vocab=("a",)), math.inf),
        (Field("id", "categorical", vocab=("a",)), {"a": 1}),
        (Field("id", "categorical", vocab=("a",)), 10**5000),  # past str()'s digit limit
        (Field("g", "multi", sep="|", max_len=2, vocab=("a",)), ["a", [1]]),
    ],
    ids=["text", "bool", "nan", "inf", "dict", "huge-int", "nested-list"],
)
def test_a_broken_rule_is_a_400_when_serving_and_missing_in_training_data(field, bad):
    with pytest.raises(errors.FeatureError) as caught:
        encode(field, ["a" if field.kind != "numeric" else 20, bad], STRICT)
    assert caught.value.status == 400 and caught.value.field == field.source and caught.value.row == 1
    row = encode(field, [bad], LENIENT)[0]
    if field.kind == "multi":
        assert row == [2, 0]  # the bad element is dropped, the good one kept
    else:
        assert row == 0


def test_lenient_ignores_columns_the_schema_does_not_read_and_does_not_enforce_required():
    schema = Schema("t", (Field("id", "categorical", required=True, vocab=("a",)),))
    out = Encoder(schema, LENIENT).encode_columns({"id": ["a", None], "rating": [5, 3]})
    assert out["id"].tolist() == [2, 0]
    with pytest.raises(errors.UnknownFeature):
        Encoder(schema, STRICT).encode_columns({"id": ["a"], "rating": [5]})
    with pytest.raises(errors.MissingFeature):
        Encoder(schema, STRICT).encode_columns({"id": ["a", None]})


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (np.float32(2.0), "2"),
        (np.float16(3.0), "3"),
        (np.int32(7), "7"),
        (np.uint64(2**63 + 1), str(2**63 + 1)),
        (np.bool_(True), "true"),
        (np.bool_(False), "false"),
        (np.float32(0.1), repr(float(np.float32(0.1)))),  # the float64 value, as tolist() and pyarrow give it
        (np.float64(0.1), "0.1"),
        (2**70, str(2**70)),
        (-(2**70), str(-(2**70))),
        ("\u3000 ü \t", "ü"),  # unicode white space is stripped too
        ("\u00a0", None),
        ("  ", None),
    ],
)
def test_normalise_python_and_numpy_scalars_alike(value, expected):
    assert normalise(value) == expected


def test_multi_reads_a_bounded_number_of_elements():
    limit = read_limit(6)
    assert elements("|" * 8_000_000, "|", limit) == [""] * limit
    assert elements(["a"] * 10_000, None, limit) == ["a"] * limit
    f = Field("g", "multi", sep="|", max_len=2, vocab=("a", "b"))
    assert encode(f, ["|" * 1_000_000 + "a", "a" + "|" * 1_000_000 + "b", "b|" + "x|" * 100_000])[:2] == [
        [0, 0],  # the 'a' lies beyond the read limit
        [2, 0],
    ]


def test_memos_keep_nothing_longer_than_the_longest_known_value():
    f = Field("id", "categorical", vocab=("a", "bb"))
    enc = Encoder(Schema("t", (f,)))
    long_ids = [f"x{i}" * 1000 for i in range(50)]
    assert enc.encode_columns({"id": long_ids + ["a", "bb", "zz"]})["id"].tolist() == [OOV] * 50 + [2, 3, OOV]
    memo = enc._lookups["id"].memo
    assert set(memo) == {"a", "bb", "zz"}
    g = Field("g", "multi", sep="|", max_len=2, vocab=("a",))
    enc = Encoder(Schema("t", (g,)))
    out = enc.encode_columns({"g": ["a|" + "q" * 10_000, "a", "a|" + "q" * 10_000]})["g"].tolist()
    assert out == [[2, OOV], [2, 0], [2, OOV]]
    assert set(enc._rows["g"].slots) == {"a"}


def test_schema_digest_follows_what_encodes_and_survives_json():
    a = Schema("t", (Field("id", "categorical", vocab=("a", "b")),))
    assert Schema.from_dict(a.to_dict()).digest() == a.digest()
    assert Schema("t", (Field("id", "categorical", vocab=("b", "a")),)).digest() != a.digest()
