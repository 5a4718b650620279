"""Realistic raw request rows drawn from a fitted schema: one sampler for the service's warm-up and OpenAPI
examples, the load tester, the benchmarks and the tests.

    RowSampler(schema, seed=0, unseen=0.02).rows(16)   # [{"user_id": "196", "age": 31, "genres": "Drama|War"}, ...]
    example_rows(schema, 3)                             # deterministic, known values only
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from typing import Any

from features.schema import Field, Schema


class RowSampler:
    """Vocabulary values (a fraction `unseen` of them unknown), numbers inside the bucket edges, 1-3 values of a
    multi-valued field. One value per raw feature (a field's `source`); fields derived from another field's source
    need none of their own."""

    def __init__(self, schema: Schema | Mapping[str, Any], seed: int = 0, unseen: float = 0.02) -> None:
        schema = schema if isinstance(schema, Schema) else Schema.from_dict(schema)
        self.rng = random.Random(seed)
        self.unseen = unseen
        by_source: dict[str, list[Field]] = {}
        for f in schema.fields:
            by_source.setdefault(f.source, []).append(f)
        # the field that generates a source: the first one that is not a mapping of it
        self.features = {s: next((f for f in fs if f.mapping is None), fs[0]) for s, fs in by_source.items()}

    @property
    def numeric(self) -> set[str]:
        return {s for s, f in self.features.items() if f.kind == "numeric"}

    def row(self) -> dict:
        return {source: self._value(f) for source, f in self.features.items()}

    def rows(self, n: int) -> list[dict]:
        return [self.row() for _ in range(n)]

    def _value(self, f: Field):
        rng = self.rng
        if f.kind == "numeric":
            lo, hi = min(f.edges), max(f.edges)
            if all(float(e).is_integer() for e in f.edges):
                return rng.randint(int(lo), int(hi))
            return round(rng.uniform(lo, hi), 3)
        vocab = list(f.vocab or ())
        if f.hashed:  # no vocabulary: every value is known; ids drawn from a range about the size of the table
            vocab = [str(rng.randrange(f.hash_buckets * 4)) for _ in range(3)]
        if f.kind == "multi":
            k = rng.randint(1, max(1, min(3, f.max_len, len(vocab))))
            values = [self._known_or_unseen(v) for v in (rng.sample(vocab, k) if vocab else [None] * k)]
            return f.sep.join(values) if f.sep else values
        if f.mapping:  # a source only read by a derived field: use the keys it knows
            return self._known_or_unseen(rng.choice(sorted(f.mapping)))
        value = self._known_or_unseen(rng.choice(vocab) if vocab else None)
        if f.prefix:  # the vocabulary holds prefixes (e.g. zip "55"): complete a full raw value
            value += "".join(rng.choice("0123456789") for _ in range(3))
        return value

    def _known_or_unseen(self, value: str | None) -> str:
        if value is None or (self.unseen and self.rng.random() < self.unseen):
            return f"unseen-{self.rng.randrange(10**6)}"
        return value


def example_rows(schema: Schema | Mapping[str, Any], n: int, seed: int = 0) -> list[dict]:
    """n deterministic rows of known values (warm-up, OpenAPI and v2 examples)."""
    return RowSampler(schema, seed=seed, unseen=0.0).rows(n)
