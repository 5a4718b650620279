"""Feature schema: frozen dataclasses with JSON in/out (stdlib only).

A *spec* schema is what a user writes (fields, kinds, bucket edges); ``fit_schema`` (in ``model.data``) turns it
into a *fitted* schema with vocabularies and derived mappings, which is saved with every model and bundle.
The encoding rules are documented in docs/BUNDLE.md; ``normalise`` below is rule 1.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

KINDS = ("categorical", "multi", "numeric")
MISSING, OOV, FIRST = 0, 1, 2  # reserved indices; known values start at FIRST


@dataclass(frozen=True)
class Field:
    name: str
    kind: str  # categorical | multi | numeric
    source: str = ""  # raw column it reads; defaults to name
    required: bool = False
    vocab: tuple[str, ...] | None = None  # fitted: known values, index = FIRST + position
    prefix: int | None = None  # categorical: keep the first `prefix` characters
    mapping: dict[str, str] | None = None  # derived categorical: source value -> label
    mapping_default: str | None = None
    derive: str | None = None  # spec only: "count_bucket" builds `mapping` from training counts
    sep: str | None = None  # multi: separator of a string value
    max_len: int | None = None  # multi: values kept per row
    edges: tuple[float, ...] | None = None  # numeric: sorted bucket edges

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"field {self.name!r}: kind must be one of {KINDS}, got {self.kind!r}")
        if not self.source:
            object.__setattr__(self, "source", self.name)
        if self.kind == "numeric" and not self.edges:
            raise ValueError(f"numeric field {self.name!r} needs bucket 'edges'")
        if self.kind == "multi" and not self.max_len:
            raise ValueError(f"multi field {self.name!r} needs 'max_len'")
        if self.prefix is not None and self.kind != "categorical":
            raise ValueError(f"field {self.name!r}: 'prefix' applies to categorical fields only")
        if self.edges is not None and list(self.edges) != sorted(self.edges):
            raise ValueError(f"field {self.name!r}: edges must be sorted")

    @property
    def cardinality(self) -> int:
        """Size of the embedding table this field needs (missing + OOV + known values)."""
        if self.kind == "numeric":
            return len(self.edges) + 2
        return FIRST + len(self.vocab or ())

    @property
    def width(self) -> int:
        """Trailing shape of the encoded tensor: 0 for [batch], max_len for [batch, max_len]."""
        return self.max_len if self.kind == "multi" else 0


@dataclass(frozen=True)
class Schema:
    name: str
    fields: tuple[Field, ...]
    label: dict = field(default_factory=dict)  # {"column": ..., "threshold": ...}
    user_column: str | None = None
    time_column: str | None = None

    def __post_init__(self):
        names = [f.name for f in self.fields]
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate field names in schema {self.name!r}")

    @property
    def fitted(self) -> bool:
        return all(f.kind == "numeric" or f.vocab is not None for f in self.fields)

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
    def from_dict(cls, d: dict) -> Schema:
        fields = []
        for fd in d["fields"]:
            fd = dict(fd)
            for key in ("vocab", "edges"):
                if fd.get(key) is not None:
                    fd[key] = tuple(fd[key])
            fields.append(Field(**fd))
        return cls(
            name=d.get("name", "dataset"),
            fields=tuple(fields),
            label=dict(d.get("label", {})),
            user_column=d.get("user_column"),
            time_column=d.get("time_column"),
        )

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=1))

    @classmethod
    def load(cls, path: str | Path) -> Schema:
        return cls.from_dict(json.loads(Path(path).read_text()))


def normalise(value) -> str | None:
    """Rule 1 of docs/BUNDLE.md: a raw categorical value as a string, or None when missing."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return None
        return str(int(value)) if value.is_integer() else repr(value)
    s = str(value).strip()
    return s or None
