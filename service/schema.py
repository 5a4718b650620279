"""The fitted feature schema of a bundle (docs/BUNDLE.md, "The schema"): parsed and checked once.

fields = parse_schema(manifest["schema"])   # tuple[FieldSpec, ...] in graph-input order; BundleError if malformed
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from service.errors import BundleError

KINDS = ("categorical", "multi", "numeric")


@dataclass(frozen=True)
class FieldSpec:
    name: str
    kind: str
    source: str
    required: bool = False
    vocab: tuple[str, ...] = ()
    prefix: int | None = None
    mapping: Mapping[str, str] | None = None
    mapping_default: str | None = None
    sep: str | None = None
    max_len: int = 0
    edges: tuple[float, ...] = ()


@dataclass(frozen=True)
class FeatureInfo:
    """What a raw feature looks like to a client (OpenAPI examples, v2 metadata)."""

    name: str
    required: bool
    numeric: bool  # True: a number (FP64); False: string-like (BYTES)
    multi: bool  # several values per row (a list, or one string split on the field's sep)
    examples: tuple[Any, ...] = field(default=(), compare=False)


def parse_schema(schema: Any) -> tuple[FieldSpec, ...]:
    raw_fields = schema.get("fields") if isinstance(schema, Mapping) else None
    if not isinstance(raw_fields, list) or not raw_fields:
        raise BundleError("schema: 'fields' must be a non-empty list")
    fields = tuple(parse_field(f) for f in raw_fields)
    names = [f.name for f in fields]
    if len(set(names)) != len(names):
        raise BundleError(f"schema: field names must be unique, got {names}")
    return fields


def parse_field(raw: Any) -> FieldSpec:
    if not isinstance(raw, Mapping) or not isinstance(raw.get("name"), str):
        raise BundleError(f"schema: each field needs a 'name', got {raw!r}")
    name, kind = raw["name"], raw.get("kind")
    if kind not in KINDS:
        raise BundleError(f"schema field {name!r}: unknown kind {kind!r} (expected one of {KINDS})")
    try:
        spec = FieldSpec(
            name=name,
            kind=kind,
            source=str(raw.get("source") or name),
            required=bool(raw.get("required", False)),
            vocab=tuple(raw.get("vocab") or ()),
            prefix=int(raw["prefix"]) if raw.get("prefix") is not None else None,
            mapping=dict(raw["mapping"]) if raw.get("mapping") is not None else None,
            mapping_default=raw.get("mapping_default"),
            sep=raw.get("sep"),
            max_len=int(raw.get("max_len") or 0),
            edges=tuple(float(e) for e in raw.get("edges") or ()),
        )
    except (TypeError, ValueError) as exc:
        raise BundleError(f"schema field {name!r}: {exc}") from None
    problem = _field_problem(spec)
    if problem:
        raise BundleError(f"schema field {name!r}: {problem}")
    return spec


def _field_problem(f: FieldSpec) -> str | None:
    if not all(isinstance(v, str) for v in f.vocab):
        return "vocab entries must be strings"
    if len(set(f.vocab)) != len(f.vocab):
        return "vocab has duplicates (index = 2 + position would be ambiguous)"
    if f.kind == "multi" and f.max_len < 1:
        return "a multi field needs max_len >= 1"
    if f.prefix is not None and f.prefix < 1:
        return "prefix must be >= 1"
    if f.prefix is not None and f.kind != "categorical":
        return "prefix applies to categorical fields only"
    if f.kind == "numeric" and (list(f.edges) != sorted(f.edges) or not all(map(math.isfinite, f.edges))):
        return "edges must be finite and sorted"
    if f.mapping is not None and not all(isinstance(k, str) and isinstance(v, str) for k, v in f.mapping.items()):
        return "mapping must be string → string"
    return None


def examples(readers: list[FieldSpec]) -> tuple[Any, ...]:
    # Prefer the field that shows the raw value best: numeric, then a plain vocabulary, then mapping keys.
    f = sorted(readers, key=lambda r: (r.kind != "numeric", r.mapping is not None, r.prefix is not None))[0]
    if f.kind == "numeric":
        e = list(f.edges) or [0.0]
        return tuple([e[0] - 1.0] + [(a + b) / 2 for a, b in zip(e, e[1:], strict=False)] + [e[-1] + 1.0])
    if f.kind == "multi":
        v = list(f.vocab) or ["x"]
        return tuple((f.sep or "|").join(v[i : i + 1 + i % 3]) if f.sep else [v[i]] for i in range(len(v)))
    values = list(f.mapping) if f.mapping else list(f.vocab)
    return tuple(values) or ("unknown",)
