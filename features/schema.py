"""The feature schema: frozen dataclasses with JSON in/out and their validation, written once for both halves.

A *spec* schema is what a user writes (fields, kinds, bucket edges; model/schemas/*.json); ``model.data.fit_schema``
turns it into a *fitted* schema with vocabularies and derived mappings, which every run and bundle carries.
The encoding rules are docs/BUNDLE.md's; their code is features/rules.py and features/encoder.py.

    schema = Schema.from_dict(manifest["schema"])   # SchemaError (a BundleError and a ValueError) if malformed
    schema.fields[0].cardinality                     # embedding rows: missing + OOV + known values
    input_specs(schema)                              # the graph's inputs, as the manifest lists them
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from features.errors import SchemaError

KINDS = ("categorical", "multi", "numeric")
MISSING, OOV, FIRST = 0, 1, 2  # reserved indices; known values start at FIRST
DERIVES = ("count_bucket",)  # spec only: how a derived field's mapping is fitted


@dataclass(frozen=True)
class Field:
    name: str
    kind: str  # categorical | multi | numeric
    source: str = ""  # raw feature it reads; defaults to name
    required: bool = False
    vocab: tuple[str, ...] | None = None  # fitted: known values, index = FIRST + position
    prefix: int | None = None  # categorical: keep the first `prefix` characters
    mapping: dict[str, str] | None = None  # derived categorical: source value -> label
    mapping_default: str | None = None
    derive: str | None = None  # spec only: "count_bucket" builds `mapping` from training counts
    sep: str | None = None  # multi: separator of a string value
    max_len: int | None = None  # multi: values kept per row
    edges: tuple[float, ...] | None = None  # numeric (or count_bucket): sorted bucket edges
    min_count: int | None = None  # fit: values seen fewer times in training stay out of vocab (they train OOV)
    max_vocab: int | None = None  # fit: keep at most this many values (the most frequent); the rest train OOV
    hash_buckets: int | None = None  # categorical/multi: rule 6, index = FIRST + hash mod buckets; no vocab stored
    range: tuple[float, float] | None = None  # numeric: the values that make sense (rule 5's range check)
    out_of_range: str | None = None  # numeric with a range: "clip" (default; counted) or "refuse" (a 400)
    strings: bool | None = None  # categorical/multi: a request's values must be strings (a number is a 400)

    def __post_init__(self):
        if not self.source:
            object.__setattr__(self, "source", self.name)
        problem = _problem(self)
        if problem:
            raise SchemaError(f"schema field {self.name!r}: {problem}", field=self.name)

    @property
    def cardinality(self) -> int:
        """Size of the embedding table this field needs (missing + OOV + known values)."""
        if self.kind == "numeric":
            return len(self.edges) + 2
        if self.hash_buckets is not None:
            return FIRST + self.hash_buckets
        return FIRST + len(self.vocab or ())

    @property
    def hashed(self) -> bool:
        return self.hash_buckets is not None

    @property
    def width(self) -> int:
        """Trailing shape of the encoded tensor: 0 for [batch], max_len for [batch, max_len]."""
        return self.max_len if self.kind == "multi" else 0

    @classmethod
    def from_dict(cls, raw: Any) -> Field:
        if not isinstance(raw, Mapping) or not isinstance(raw.get("name"), str):
            raise SchemaError(f"schema: each field needs a 'name', got {raw!r}")
        unknown = set(raw) - {f.name for f in fields(cls)}
        if unknown:
            raise SchemaError(f"schema field {raw['name']!r}: unknown keys {sorted(unknown)}", field=raw["name"])
        d = dict(raw)
        try:
            for key in ("vocab", "edges", "range"):
                if d.get(key) is not None:
                    d[key] = tuple(d[key])
            for key in ("edges", "range"):
                if d.get(key) is not None:
                    d[key] = tuple(float(e) for e in d[key])
            if d.get("mapping") is not None:
                d["mapping"] = dict(d["mapping"])
        except (TypeError, ValueError) as exc:
            raise SchemaError(f"schema field {raw['name']!r}: {exc}", field=raw["name"]) from None
        return cls(**d)


def _problem(f: Field) -> str | None:
    """What is wrong with a field, or None. Types are checked too: a bundle's JSON may hold anything."""
    if f.kind not in KINDS:
        return f"kind must be one of {KINDS}, got {f.kind!r}"
    if not isinstance(f.source, str) or not isinstance(f.required, bool):
        return "'source' must be a string and 'required' a boolean"
    if f.vocab is not None and not all(isinstance(v, str) for v in f.vocab):
        return "vocab entries must be strings"
    if f.vocab is not None and len(set(f.vocab)) != len(f.vocab):
        return "vocab has duplicates (index = 2 + position would be ambiguous)"
    if f.prefix is not None and (f.kind != "categorical" or type(f.prefix) is not int or f.prefix < 1):
        return "'prefix' applies to categorical fields only and must be an integer >= 1"
    if f.kind == "multi" and (type(f.max_len) is not int or f.max_len < 1):
        return "a multi field needs an integer 'max_len' >= 1"
    if f.kind == "multi" and f.sep is not None and (not isinstance(f.sep, str) or not f.sep):
        return "'sep' must be a non-empty string"
    if f.kind == "numeric" and not f.edges:
        return "a numeric field needs bucket 'edges'"
    if f.edges is not None and (list(f.edges) != sorted(f.edges) or not all(map(math.isfinite, f.edges))):
        return "edges must be finite and sorted"
    if f.mapping is not None and not all(isinstance(k, str) and isinstance(v, str) for k, v in f.mapping.items()):
        return "mapping must be string → string"
    if f.derive is not None and f.derive not in DERIVES:
        return f"unknown derive {f.derive!r} (known: {', '.join(DERIVES)})"
    if f.derive == "count_bucket" and not f.edges:
        return "derive 'count_bucket' needs 'edges' (the count thresholds)"
    if f.min_count is not None and (f.kind == "numeric" or f.mapping is not None or f.derive is not None):
        return "'min_count' applies to vocabulary fields only (categorical or multi, not derived)"
    if f.min_count is not None and (type(f.min_count) is not int or f.min_count < 1):
        return "'min_count' must be an integer >= 1"
    if f.max_vocab is not None and (type(f.max_vocab) is not int or f.max_vocab < 1 or f.kind == "numeric"):
        return "'max_vocab' applies to vocabulary fields only and must be an integer >= 1"
    if f.range is not None and (
        f.kind != "numeric" or len(f.range) != 2 or not f.range[0] <= f.range[1] or not all(map(math.isfinite, f.range))
    ):
        return "'range' applies to numeric fields and must be [low, high], finite, low <= high"
    if f.out_of_range is not None and (f.range is None or f.out_of_range not in ("clip", "refuse")):
        return "'out_of_range' needs a 'range' and is 'clip' or 'refuse'"
    if f.strings is not None and (f.kind == "numeric" or not isinstance(f.strings, bool)):
        return "'strings' applies to categorical or multi fields and is true or false"
    if f.hash_buckets is not None:
        if type(f.hash_buckets) is not int or not 1 <= f.hash_buckets <= 2**40:
            return "'hash_buckets' must be an integer from 1 to 2**40"
        if f.kind == "numeric" or any(v is not None for v in (f.vocab, f.mapping, f.derive, f.min_count, f.max_vocab)):
            return "'hash_buckets' applies to categorical or multi fields without vocab, mapping, derive or min_count"
    return None


@dataclass(frozen=True)
class Schema:
    name: str
    fields: tuple[Field, ...]
    label: dict = field(default_factory=dict)  # {"column": ..., "threshold": ...} (training only)
    user_column: str | None = None  # gAUC and cold-start analysis (training only)
    time_column: str | None = None  # the time split (training only)

    def __post_init__(self):
        if not self.fields:
            raise SchemaError(f"schema {self.name!r}: 'fields' must be a non-empty list")
        names = [f.name for f in self.fields]
        if len(set(names)) != len(names):
            raise SchemaError(f"schema {self.name!r}: field names must be unique, got {names}")

    @property
    def fitted(self) -> bool:
        return all(f.kind == "numeric" or f.hashed or (f.vocab is not None and f.derive is None) for f in self.fields)

    @property
    def sources(self) -> tuple[str, ...]:
        """Distinct raw features a request must (or may) carry, in field order."""
        return tuple(dict.fromkeys(f.source for f in self.fields))

    def field(self, name: str) -> Field:
        for f in self.fields:
            if f.name == name:
                return f
        raise KeyError(name)

    def with_fields(self, fields) -> Schema:
        return replace(self, fields=tuple(fields))

    def to_dict(self) -> dict:
        out = asdict(self)
        out["fields"] = [{k: v for k, v in asdict(f).items() if v is not None} for f in self.fields]
        return out

    @classmethod
    def from_dict(cls, d: Any) -> Schema:
        raw_fields = d.get("fields") if isinstance(d, Mapping) else None
        if not isinstance(raw_fields, list) or not raw_fields:
            raise SchemaError("schema: 'fields' must be a non-empty list")
        return cls(
            name=str(d.get("name", "dataset")),
            fields=tuple(Field.from_dict(f) for f in raw_fields),
            label=dict(d.get("label") or {}),
            user_column=d.get("user_column"),
            time_column=d.get("time_column"),
        )

    def digest(self) -> str:
        """sha256 of the schema's canonical JSON: two schemas encode alike exactly when their digests are equal."""
        canonical = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        return hashlib.sha256(canonical.encode()).hexdigest()

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=1))

    @classmethod
    def load(cls, path: str | Path) -> Schema:
        return cls.from_dict(json.loads(Path(path).read_text()))


def input_specs(schema: Schema) -> list[dict]:
    """The graph's inputs as bundle.json lists them: one int64 tensor per field, [batch] or [batch, max_len]."""
    return [{"name": f.name, "dtype": "int64", "shape": [-1, f.max_len] if f.width else [-1]} for f in schema.fields]
