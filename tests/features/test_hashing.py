"""Rule 6: hashed fields. The hash is specified (BLAKE2b-64 of the UTF-8 value, little-endian), its golden values
are the ones docs/BUNDLE.md lists, and a hashed field stores no vocabulary."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from features import LENIENT, Encoder, Field, Schema, SchemaError
from features.rules import hash_index, id_hash

DOCS = Path(__file__).parents[2] / "docs" / "BUNDLE.md"
GOLDEN = [  # value, id_hash, index with 1000 buckets, with 2**20 buckets (checked against coreutils' `b2sum -l 64`)
    ("196", 16853603409973458658, 660, 505572),
    ("", 13020603013274838756, 758, 42726),
    ("68fd1e64", 16152645408540456209, 211, 390419),
    ("é", 3394012004367669963, 965, 989901),
    ("1m_Toy Story (1995)", 12183024558865351635, 637, 492501),
]


@pytest.mark.parametrize(("value", "digest", "k1000", "k2_20"), GOLDEN)
def test_golden_values(value, digest, k1000, k2_20):
    assert id_hash(value) == digest
    assert hash_index(value, 1000) == k1000 and hash_index(value, 2**20) == k2_20


def test_the_documented_golden_values_are_these():
    text = DOCS.read_text()
    for value, digest, k1000, k2_20 in GOLDEN:
        row = re.search(rf"^\s*\| `{re.escape(json.dumps(value, ensure_ascii=False))}` \|(.+)$", text, re.M)
        assert row, f"docs/BUNDLE.md has no golden row for {value!r}"
        cells = [c.strip().strip("`") for c in row.group(1).split("|")[:4]]
        assert cells[1:] == [str(digest), str(k1000), str(k2_20)]
        assert int.from_bytes(bytes.fromhex(cells[0]), "little") == digest  # the digest's bytes as b2sum prints them


SCHEMA = Schema(
    "hashed",
    (
        Field("user", "categorical", hash_buckets=1000, required=True),
        Field("zip", "categorical", hash_buckets=50, prefix=2),
        Field("tags", "multi", hash_buckets=100, sep="|", max_len=3),
    ),
)


def test_a_hashed_field_has_a_row_for_every_value_and_no_vocabulary():
    enc = Encoder(SCHEMA)
    x = enc.encode_rows([{"user": 196, "zip": "55105", "tags": "a|b"}, {"user": 196.0, "zip": "55", "tags": None}])
    assert x["user"].tolist() == [660, 660]  # rule 1 first: 196 and 196.0 are the same user
    assert x["zip"].tolist() == [hash_index("55", 50)] * 2  # rule 2's prefix before the hash
    assert x["tags"].tolist() == [[hash_index("a", 100), hash_index("b", 100), 0], [0, 0, 0]]
    assert [f.cardinality for f in SCHEMA.fields] == [1002, 52, 102] and SCHEMA.fitted
    assert "vocab" not in SCHEMA.to_dict()["fields"][0]


def test_strict_and_lenient_agree_and_memos_do_not_change_answers():
    values = [str(v) for v in np.random.default_rng(0).integers(0, 10**9, 3000)] * 2
    strict = Encoder(SCHEMA).encode_columns({"user": values})["user"]
    lenient = Encoder(SCHEMA, LENIENT).encode_columns({"user": values})["user"]
    assert strict.tolist() == lenient.tolist() == [hash_index(v, 1000) for v in values]


@pytest.mark.parametrize(
    "bad",
    [
        {"hash_buckets": 0},
        {"hash_buckets": 1.5},
        {"hash_buckets": 10, "vocab": ["a"]},
        {"hash_buckets": 10, "min_count": 2},
        {"hash_buckets": 10, "kind": "numeric", "edges": [1.0]},
    ],
)
def test_malformed_hashed_fields_are_refused(bad):
    raw = {"name": "user", "kind": "categorical", **bad}
    with pytest.raises(SchemaError, match="user"):
        Field.from_dict(raw)


def test_max_vocab_keeps_the_most_frequent():
    from features.fit import SchemaFit

    spec = Schema("s", (Field("item", "categorical", max_vocab=2),))
    fit = SchemaFit(spec)
    fit.add(spec.fields[0], ["a", "b", "b", "c", "c", "c", None])
    assert fit.fitted().fields[0].vocab == ("c", "b")
