"""Raw feature values → one int64 array per graph input, per the encoding rules of docs/BUNDLE.md (features/rules.py).

Index 0 = missing, 1 = out of vocabulary, 2 + i = vocab[i]; numeric: 1 + bisect_right(edges, x); a hashed field
(rule 6): 2 + hash mod buckets.

    enc = Encoder(schema)                                    # serving: a bad value is a 4xx naming feature and row
    enc.encode_rows([{"user_id": "196", "age": 49}, ...])    # {"user_id": (B,), "genres": (B, max_len), ...}
    enc.encode_columns({"user_id": ["196", ...], ...})
    enc.encode_ranking({"user_id": "196"}, [{"item_id": "242"}, ...])   # context encoded once, broadcast
    Encoder(schema, LENIENT).encode_columns(table)           # training data: bad values are missing (rule 5)

One encoder, two policies. STRICT (serving): unknown features, missing required features and unreadable values raise
typed errors (features.errors) that name the feature and the row. LENIENT (training data): a value that breaks a rule
is missing, columns the schema does not read are ignored, required features are not enforced.

A raw *feature* is a field's `source`; several fields may read one feature. Work is per column: each column is
encoded with dict look-ups (memoised by raw value, bounded in entries and in the length of what is kept) and numpy.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import repeat
from typing import Any

import numpy as np

from features.errors import (
    EmptyBatch,
    FeatureError,
    InvalidShape,
    InvalidType,
    MissingFeature,
    OutOfRange,
    RaggedColumns,
    UnknownFeature,
)
from features.rules import hash_index, multi_values, normalise, number, prefixed
from features.sampler import example_rows
from features.schema import FIRST, MISSING, OOV, Field, Schema

STRICT, LENIENT = "strict", "lenient"
MEMO_CAP = 200_000  # memo entries per field; each entry is at most as long as the field's longest known value
_MEMO_TYPES = frozenset({str, int, float, type(None)})  # raw types whose equality agrees with rule 1 (not bool)
_ROW_MEMO_TYPES = frozenset({str, type(None)})


@dataclass(frozen=True)
class FeatureInfo:
    """What a raw feature looks like to a client (OpenAPI, v2 metadata)."""

    name: str
    required: bool
    numeric: bool  # True: a number (FP64); False: string-like (BYTES)
    multi: bool  # several values per row (a list, or one string split on the field's sep)


class _Lookup:
    """Normalised value → index for one categorical/multi field, with prefix and mapping folded in."""

    def __init__(self, f: Field) -> None:
        index = {v: FIRST + i for i, v in enumerate(f.vocab or ())}
        self.prefix, self.buckets = f.prefix, f.hash_buckets
        self.table, self.default = index, OOV
        if f.mapping is not None:  # derived field: source value → label → index
            self.table = {k: index.get(v, OOV) for k, v in f.mapping.items()}
            self.default = index.get(f.mapping_default, OOV) if f.mapping_default is not None else OOV
        # Longer raw values are never memoised (an unknown 256 KB id must not stay in memory); a hashed field has
        # no table, so its ids up to 64 characters are.
        self.longest = max(map(len, self.table), default=56 if self.buckets else 0) + 8
        self.memo: dict[Any, int] = {}  # raw value → index, shared across requests

    def index_of(self, value: str | None) -> int:
        if value is None:
            return MISSING
        if self.buckets is not None:
            return hash_index(prefixed(value, self.prefix), self.buckets)
        return self.table.get(prefixed(value, self.prefix), self.default)

    def encode(self, col: Sequence[Any], read) -> np.ndarray:
        n = len(col)
        try:  # memoised raw values → index in one pass; -1 marks a value not seen yet
            found = map(self.memo.get, col, repeat(-1))
            out = list(found) if n <= 64 else np.fromiter(found, dtype=np.int64, count=n)  # each the faster there
        except TypeError:  # an unhashable value (list, dict): let normalise() name it
            out = [-1] * n
        if -1 in out:
            if len(self.memo) > MEMO_CAP:
                self.memo.clear()
            for i in np.flatnonzero(np.asarray(out) == -1).tolist():
                v = col[i]
                out[i] = index = self.index_of(read(normalise, v, i))
                if self.memoisable(v):
                    self.memo[v] = index
        return np.asarray(out, dtype=np.int64)

    def memoisable(self, value: Any) -> bool:
        # A memo keyed by raw values must agree with rule 1. Equal keys of these types normalise alike (196 and
        # 196.0 → "196"), except that True == 1 and False == 0: values equal to 0 or 1 are never stored, so a
        # bool can never hit a number's entry (nor a number a bool's), whatever the order requests come in.
        if type(value) not in _MEMO_TYPES or value == 0 or value == 1:
            return False
        return type(value) is not str or len(value) <= self.longest


class _RowMemo:
    """A multi field's string value → its padded id row, kept across requests: a request's rows are gathered
    from one array in a single numpy call instead of building a list per row (rows are computed once per
    distinct value). Single-threaded use, like _Lookup.memo."""

    def __init__(self, max_len: int, longest: int) -> None:
        self.max_len, self.longest = max_len, longest
        self.clear()

    def clear(self) -> None:
        self.slots: dict[str | None, int] = {}
        self.bank = np.zeros((64, self.max_len), dtype=np.int64)

    def add(self, value: str | None, ids: list[int]) -> int:
        slot = len(self.slots)
        if slot == len(self.bank):
            self.bank = np.concatenate([self.bank, np.zeros_like(self.bank)])
        self.bank[slot] = ids
        self.slots[value] = slot
        return slot


class Encoder:
    """Encodes raw feature values for one fitted schema. Build once per bundle. One thread at a time: its memos are
    not locked; the service encodes on the event loop only, and a reload warms up a new Encoder of its own."""

    def __init__(self, schema: Schema | Mapping[str, Any], policy: str = STRICT) -> None:
        if policy not in (STRICT, LENIENT):
            raise ValueError(f"policy must be {STRICT!r} or {LENIENT!r}, got {policy!r}")
        self.schema = schema if isinstance(schema, Schema) else Schema.from_dict(schema)  # SchemaError if malformed
        self.strict = policy == STRICT
        self.fields: tuple[Field, ...] = self.schema.fields
        self.features = self.schema.sources  # raw features, schema order
        self.required = frozenset(f.source for f in self.fields if f.required)
        self._lookups = {f.name: _Lookup(f) for f in self.fields if f.kind != "numeric"}
        self._rows = {
            f.name: _RowMemo(f.max_len, f.max_len * (self._lookups[f.name].longest + len(f.sep or "")))
            for f in self.fields
            if f.kind == "multi"
        }
        self._edges = {f.name: np.asarray(f.edges, dtype=np.float64) for f in self.fields if f.kind == "numeric"}
        self.clipped: Counter[str] = Counter()  # feature -> numbers clipped to its range since take_clipped()

    def take_clipped(self) -> dict[str, int]:
        """The numbers clipped to their field's range since the last call, by feature (the service counts them in
        apg_clipped_values_total{feature}), and the count reset."""
        out, self.clipped = dict(self.clipped), Counter()
        return out

    def describe(self) -> dict[str, FeatureInfo]:
        """Raw feature → required?, numeric? (when any field reading it is numeric), multi-valued?"""
        out = {}
        for s in self.features:
            readers = [f for f in self.fields if f.source == s]
            numeric = any(f.kind == "numeric" for f in readers)
            out[s] = FeatureInfo(s, s in self.required, numeric, any(f.kind == "multi" for f in readers))
        return out

    def example_rows(self, n: int) -> list[dict[str, Any]]:
        """n deterministic rows of known values (warm-up, OpenAPI and v2 examples): features.sampler's rows."""
        return example_rows(self.schema, n)

    # ---- entry points: each returns {input name: int64 array}, all with the same batch size B ----

    def encode_rows(self, rows: Any) -> dict[str, np.ndarray]:
        """[{feature: value}, ...] → arrays."""
        rows = _rows(rows, "instances")
        self._check_known(set().union(*rows), rows)
        return self._encode({s: _column(rows, s) for s in self.features}, len(rows))

    def encode_columns(self, columns: Any) -> dict[str, np.ndarray]:
        """{feature: [value, ...]} → arrays; every column has the same length."""
        if not isinstance(columns, Mapping):
            raise InvalidShape("'inputs' must be an object of feature → list of values", field="inputs")
        self._check_known(set(columns), None)
        n = None
        for name, col in columns.items():
            if not isinstance(col, list | tuple | np.ndarray):
                raise InvalidShape(f"feature {name!r}: expected a list of values", field=name)
            if n is not None and len(col) != n:
                raise RaggedColumns(f"feature {name!r} has {len(col)} values, others have {n}", field=name)
            n = len(col)
        if not n:
            raise EmptyBatch("empty batch: 'inputs' holds no values to score", field="inputs")
        return self._encode(dict(columns), n)

    def encode_ranking(self, context: Any, candidates: Any) -> dict[str, np.ndarray]:
        """One context ({feature: value}, e.g. the user) scored against B candidate rows (e.g. items)."""
        if not isinstance(context, Mapping):
            raise InvalidShape("'context' must be an object of feature → value", field="context")
        rows = _rows(candidates, "candidates")
        keys = set().union(*rows)
        self._check_known(set(context) | keys, rows)
        both = sorted(set(context) & keys)
        if both:
            raise InvalidShape(f"feature {both[0]!r} is given in both context and candidates", field=both[0])
        columns = {s: [context[s]] for s in context}  # length 1: encoded once, broadcast in _encode
        columns.update({s: _column(rows, s) for s in keys})
        return self._encode(columns, len(rows), context=set(context))

    def encode_field(self, name: str, values: Sequence[Any]) -> np.ndarray:
        """One field's column (its source's raw values) → int64 (n,) or (n, max_len), under this encoder's policy.
        The streaming trainer encodes each row group's distinct values this way (model/stream.py)."""
        return self._encode_field(self.schema.field(name), values, True)

    # ---- internals ----

    def _check_known(self, keys: set, rows: list | None) -> None:
        unknown = keys - set(self.features)
        if unknown and self.strict:
            name = sorted(map(str, unknown))[0]
            row = next((i for i, r in enumerate(rows) if name in r), None) if rows else None
            raise UnknownFeature(f"unknown feature {name!r}; known: {', '.join(self.features)}", field=name, row=row)

    def _encode(self, columns: dict[str, Sequence[Any]], n: int, context: Any = ()) -> dict[str, np.ndarray]:
        out = {}
        for f in self.fields:
            col = columns.get(f.source)
            if col is not None and f.source not in context:
                arr = self._encode_field(f, col, True)
            else:  # a context value or an absent optional feature: encode once, repeat for every row
                arr = np.repeat(self._encode_field(f, col if col is not None else (None,), False), n, axis=0)
            if f.required and self.strict:
                _check_present(f, arr, col is not None and f.source not in context)
            out[f.name] = arr
        return out

    def _reader(self, f: Field, per_row: bool):
        """read(fn, value, row): fn(value), with a rule broken → a typed error naming feature and row (strict)
        or None, i.e. missing (lenient)."""
        feature = f.source

        def read(fn, value, row):
            try:
                return fn(value)
            except (FeatureError, ValueError, OverflowError) as exc:  # ValueError: an int past str()'s digit limit
                if not self.strict:
                    return None
                row = row if per_row else None
                where = f"feature {feature!r}" + (f", row {row}" if row is not None else "")
                message = exc.message if isinstance(exc, FeatureError) else str(exc)
                error = type(exc) if isinstance(exc, FeatureError) else InvalidType
                raise error(f"{where}: {message}", field=feature, row=row) from None

        return read

    def _encode_field(self, f: Field, col: Sequence[Any], per_row: bool) -> np.ndarray:
        if isinstance(col, np.ndarray) and (f.kind != "numeric" or col.dtype.kind not in "fiu"):
            col = col.tolist()  # (v2 binary tensors arrive as arrays; only numbers stay arrays)
        if f.strings and self.strict:
            _check_strings(f, col, per_row)
        read = self._reader(f, per_row)
        if f.kind == "categorical":
            return self._lookups[f.name].encode(col, read)
        if f.kind == "numeric":
            return self._encode_numeric(f, col, read, per_row)
        return self._encode_multi(f, col, read)

    def _encode_numeric(self, f: Field, col: Sequence[Any], read, per_row: bool) -> np.ndarray:
        x, missing = None, None
        if isinstance(col, np.ndarray):  # a v2 binary tensor of integers or floats
            x = col
        else:  # fast paths: plain JSON numbers (no bool, which rule 5 refuses; ints need no finiteness check)
            types = set(map(type, col))
            try:
                if types <= {int}:
                    x = np.array(col, dtype=np.int64)
                elif types <= {int, float}:
                    x = np.array(col, dtype=np.float64)
            except OverflowError:  # an int past int64: the slow path reads it as a float
                x = None
        if x is None or (x.dtype.kind == "f" and not np.isfinite(x).all()):
            col = col.tolist() if isinstance(col, np.ndarray) else col
            values = [read(number, v, i) for i, v in enumerate(col)]
            missing = np.array([v is None for v in values], dtype=bool)
            x = np.array([0.0 if v is None else v for v in values], dtype=np.float64)
        if f.range is not None:
            x, missing = self._in_range(f, x, missing, per_row)
        index = 1 + np.searchsorted(self._edges[f.name], x, side="right")
        if missing is not None:
            index = np.where(missing, MISSING, index)
        return index.astype(np.int64, copy=False)

    def _in_range(self, f: Field, x: np.ndarray, missing: np.ndarray | None, per_row: bool):
        """Rule 5's range: a number outside the field's declared range is clipped to it and counted (``clipped``),
        or, where the field says "refuse", a 400 naming feature and row (strict) or missing (lenient)."""
        lo, hi = f.range
        outside = (x < lo) | (x > hi)
        if missing is not None:
            outside &= ~missing
        if not outside.any():
            return x, missing
        if f.out_of_range == "refuse":
            if self.strict:
                row = int(np.flatnonzero(outside)[0]) if per_row else None
                where = f"feature {f.source!r}" + (f", row {row}" if row is not None else "")
                value = x[np.flatnonzero(outside)[0]].item()
                raise OutOfRange(f"{where}: {value:g} is outside [{lo:g}, {hi:g}]", field=f.source, row=row)
            return x, outside if missing is None else (missing | outside)
        self.clipped[f.source] += int(outside.sum())
        return np.clip(x, lo, hi), missing

    def _encode_multi(self, f: Field, col: Sequence[Any], read) -> np.ndarray:
        lookup = self._lookups[f.name]
        if set(map(type, col)) <= _ROW_MEMO_TYPES:  # the usual case: "a|b|c" strings (or null)
            memo = self._rows[f.name]
            if len(memo.slots) > MEMO_CAP:
                memo.clear()
            slots = list(map(memo.slots.get, col))
            extra: dict[int, list[int]] = {}  # rows whose value is too long to keep: this request only
            if None in slots:
                for i, v in enumerate(col):
                    if slots[i] is None:
                        slots[i] = memo.slots.get(v)  # an earlier row of this request may have added it
                        if slots[i] is None:
                            ids = self._multi_ids(f, lookup, v, i, read)
                            if v is not None and len(v) > memo.longest:
                                extra[i], slots[i] = ids, 0
                            else:
                                slots[i] = memo.add(v, ids)
            out = memo.bank[slots]  # a copy (fancy indexing)
            for i, ids in extra.items():
                out[i] = ids
            return out
        cache: dict[str, list[int]] = {}  # lists of values: one id row per row
        rows = []
        for i, v in enumerate(col):
            key = v if type(v) is str else None
            ids = cache.get(key) if key is not None else None
            if ids is None:
                ids = self._multi_ids(f, lookup, v, i, read)
                if key is not None:
                    cache[key] = ids
            rows.append(ids)
        return np.array(rows, dtype=np.int64).reshape(len(col), f.max_len)

    def _multi_ids(self, f: Field, lookup: _Lookup, value: Any, row: int, read) -> list[int]:
        # Rule 4: split strings on sep, take lists as is, drop missing elements, keep max_len, pad with 0.
        values = multi_values(value, f.sep, f.max_len, lambda e: read(normalise, e, row))
        ids = [lookup.index_of(v) for v in values]
        return ids + [MISSING] * (f.max_len - len(ids))


def _column(rows: list[dict[str, Any]], feature: str) -> list[Any]:
    return list(map(dict.get, rows, repeat(feature)))  # [row.get(feature) for row in rows], without a Python loop


def _rows(rows: Any, name: str) -> list[Mapping[str, Any]]:
    if not isinstance(rows, list):
        raise InvalidShape(f"{name!r} must be a list of objects", field=name)
    if not rows:
        raise EmptyBatch(f"empty batch: {name!r} holds no rows to score", field=name)
    if not set(map(type, rows)) <= {dict}:
        row = next(i for i, r in enumerate(rows) if not isinstance(r, dict))
        raise InvalidShape(f"{name!r}[{row}] must be an object of feature → value", field=name, row=row)
    return rows


def _check_strings(f: Field, col: Sequence[Any], per_row: bool) -> None:
    """A field declared ``strings``: each value is a string or missing (a multi field's may be a list of them)."""
    if set(map(type, col)) <= {str, type(None)}:
        return
    for i, v in enumerate(col):
        parts = v if f.kind == "multi" and isinstance(v, list | tuple) else [v]
        bad = next((p for p in parts if p is not None and type(p) is not str), _OK)
        if bad is not _OK:
            where = f"feature {f.source!r}" + (f", row {i}" if per_row else "")
            got = type(bad).__name__
            raise InvalidType(f"{where}: expected a string, got {got}", field=f.source, row=i if per_row else None)


_OK = object()


def _check_present(f: Field, arr: np.ndarray, per_row: bool) -> None:
    empty = ~arr.any(axis=1) if arr.ndim == 2 else arr == MISSING
    if empty.any():
        row = int(np.flatnonzero(empty)[0]) if per_row else None
        where = f", row {row}" if row is not None else ""
        raise MissingFeature(f"missing required feature {f.source!r}{where}", field=f.source, row=row)
