"""Fitting a spec schema: vocabularies and derived mappings from training values, counted a chunk at a time.

One counter for both trainers: the in-memory one adds whole columns (``model.data.fit_schema``), the streaming one
adds each Parquet row group's distinct values with their counts (``model.stream``), so a log of any size is fitted
in one pass with memory that grows with the distinct values of the vocabulary fields only (hashed fields and
numeric fields count nothing).

    fit = SchemaFit(spec)
    fit.add(field, values)                  # raw cells, each counted once
    fit.add(field, distinct, counts)        # distinct raw cells with how often each occurs
    schema = fit.fitted()                   # vocab most frequent first; min_count, max_vocab; count_bucket mappings
"""

from __future__ import annotations

from bisect import bisect_right
from collections import Counter
from collections.abc import Iterable
from dataclasses import replace
from typing import Any

from features.rules import lenient, multi_values, normalise, prefixed
from features.schema import Field, Schema


def cell_values(f: Field, raw: Any) -> list[str]:
    """The normalised values one training cell holds (rules 1, 2's prefix and 4; bad values are missing)."""
    if f.kind == "multi":
        return multi_values(raw, f.sep, f.max_len, lambda e: lenient(normalise, e))
    v = lenient(normalise, raw)
    return [] if v is None else [prefixed(v, f.prefix)]


def counted(f: Field) -> bool:
    """Whether fitting ``f`` needs value counts (vocabulary and derived fields; not numeric or hashed ones)."""
    return f.kind != "numeric" and not f.hashed


class SchemaFit:
    """Value counts of a spec schema's vocabulary fields, added a chunk at a time."""

    def __init__(self, spec: Schema) -> None:
        self.spec = spec
        self.counts: dict[str, Counter] = {f.name: Counter() for f in spec.fields if counted(f)}

    def add(self, f: Field, values: Iterable[Any], counts: Iterable[int] | None = None) -> None:
        """Count raw cells of field ``f`` (each once, or ``counts[i]`` times for ``values[i]``)."""
        counter = self.counts.get(f.name)
        if counter is None:
            return
        if counts is None:
            counter.update(v for raw in values for v in cell_values(f, raw))
            return
        for raw, n in zip(values, counts, strict=True):
            for v in cell_values(f, raw):
                counter[v] += n

    def fitted(self) -> Schema:
        """Vocabularies (most frequent first, ties by value) and derived mappings from the counts so far."""
        return self.spec.with_fields(self._fit(f) for f in self.spec.fields)

    def _fit(self, f: Field) -> Field:
        if not counted(f):
            return f
        counts = self.counts[f.name]
        if f.derive == "count_bucket":
            mapping = {v: str(bisect_right(f.edges, n)) for v, n in sorted(counts.items())}
            labels = tuple(str(b) for b in range(len(f.edges) + 1))
            return replace(f, derive=None, mapping=mapping, mapping_default="0", vocab=labels)
        # values seen fewer than min_count times, or past max_vocab, stay out: they share (and train) the OOV row
        ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
        vocab = [v for v, c in ranked if c >= (f.min_count or 1)]
        return replace(f, vocab=tuple(vocab[: f.max_vocab] if f.max_vocab else vocab))
