"""Raw feature values → one int64 array per graph input, per the "Encoding rules" of docs/BUNDLE.md.

Index 0 = missing, 1 = out of vocabulary, 2 + i = vocab[i]; numeric: 1 + bisect_right(edges, x).

    enc = Encoder(schema)                                    # the fitted schema from bundle.json
    enc.encode_rows([{"user_id": "196", "age": 49}, ...])    # {"user_id": (B,), "genres": (B, max_len), ...}
    enc.encode_columns({"user_id": ["196", ...], ...})
    enc.encode_ranking({"user_id": "196"}, [{"item_id": "242"}, ...])   # context encoded once, broadcast

A raw *feature* is a field's `source`; several fields may read one feature. Work is per column: each
column is encoded with dict look-ups (memoised by raw value) and numpy, never by rebuilding per-row dicts.
Errors are typed (service.errors) and name the feature and the row.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping, Sequence
from itertools import repeat
from typing import Any

import numpy as np

from service.errors import (
    EmptyBatch,
    FeatureError,
    InvalidShape,
    InvalidType,
    MissingFeature,
    NonFinite,
    RaggedColumns,
    UnknownFeature,
)
from service.schema import FeatureInfo, FieldSpec, examples, parse_schema

_MEMO_TYPES = frozenset({str, int, float, type(None)})  # raw types whose equality agrees with rule 1 (not bool)
_ROW_MEMO_TYPES = frozenset({str, type(None)})
_MEMO_CAP = 200_000


def normalise(value: Any) -> str | None:
    """Rule 1: None/blank → None; bool → "true"/"false"; integral number → digits; number → repr(float)."""
    if isinstance(value, str):
        return str(value).strip() or None
    if value is None:
        return None
    if isinstance(value, bool | np.bool_):
        return "true" if value else "false"
    if isinstance(value, numbers.Integral):
        return str(int(value))
    if isinstance(value, numbers.Real):
        x = float(value)
        if not math.isfinite(x):
            raise NonFinite(f"{x} is not a finite number")
        return str(int(x)) if x.is_integer() else repr(x)
    raise InvalidType(f"expected a string or number, got {type(value).__name__}")


class _Lookup:
    """Normalised value → index for one categorical/multi field, with prefix and mapping folded in."""

    def __init__(self, spec: FieldSpec) -> None:
        index = {v: i + 2 for i, v in enumerate(spec.vocab)}
        self.prefix = spec.prefix
        self.table, self.default = index, 1
        if spec.mapping is not None:  # derived field: source value → label → index
            self.table = {k: index.get(v, 1) for k, v in spec.mapping.items()}
            self.default = index.get(spec.mapping_default, 1) if spec.mapping_default is not None else 1
        self.memo: dict[Any, int] = {}  # raw value → index, shared across requests

    def index_of(self, value: str | None) -> int:
        if value is None:
            return 0
        return self.table.get(value[: self.prefix] if self.prefix else value, self.default)

    def encode(self, col: Sequence[Any], feature: str, per_row: bool = True) -> np.ndarray:
        n = len(col)
        try:  # memoised raw values → index in one pass; -1 marks a value not seen yet
            found = map(self.memo.get, col, repeat(-1))
            out = list(found) if n <= 64 else np.fromiter(found, dtype=np.int64, count=n)  # each the faster there
        except TypeError:  # an unhashable value (list, dict): let normalise() name it
            out = [-1] * n
        if -1 in out:
            if len(self.memo) > _MEMO_CAP:
                self.memo.clear()
            for i in np.flatnonzero(np.asarray(out) == -1).tolist():
                v = col[i]
                out[i] = index = self.index_of(_at(normalise, v, feature, i if per_row else None))
                if _memoisable(v):
                    self.memo[v] = index
        return np.asarray(out, dtype=np.int64)


def _memoisable(value: Any) -> bool:
    # A memo keyed by raw values must agree with rule 1. Equal keys of these types normalise alike (196 and
    # 196.0 → "196"), except that True == 1 and False == 0: values equal to 0 or 1 are never stored, so a
    # bool can never hit a number's entry (nor a number a bool's), whatever the order requests come in.
    return type(value) in _MEMO_TYPES and not (value == 0 or value == 1)


class _RowMemo:
    """A multi field's string value → its padded id row, kept across requests: a request's rows are gathered
    from one array in a single numpy call instead of building a list per row (rows are computed once per
    distinct value). Single-threaded use, like _Lookup.memo: encoding runs on the event loop."""

    def __init__(self, max_len: int) -> None:
        self.max_len = max_len
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


def _at(fn: Any, value: Any, feature: str, row: int | None) -> Any:
    """Call fn(value), re-raising a FeatureError with the feature and row named."""
    try:
        return fn(value)
    except FeatureError as exc:
        where = f"feature {feature!r}" + (f", row {row}" if row is not None else "")
        raise type(exc)(f"{where}: {exc.message}", field=feature, row=row) from None
    except (ValueError, OverflowError) as exc:  # e.g. int too long for str(), float overflow
        where = f"feature {feature!r}" + (f", row {row}" if row is not None else "")
        raise InvalidType(f"{where}: {exc}", field=feature, row=row) from None


def _number(value: Any) -> float | None:
    """Numeric rule: None/blank → None (missing); a number or numeric string → finite float; else 400."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, bool | np.bool_) or not isinstance(value, numbers.Real | str):
        raise InvalidType(f"expected a number, got {type(value).__name__}")
    try:
        x = float(value)
    except ValueError:
        raise InvalidType(f"expected a number, got {_short(value)}") from None
    if not math.isfinite(x):
        raise NonFinite(f"{_short(value)} is not a finite number")
    return x


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


class Encoder:
    """Encodes raw feature values for one fitted schema. Build once per bundle. One thread at a time: its memos
    (up to 200k raw values per field, across requests) are not locked; the service encodes on the event loop only,
    and a reload warms up a new Encoder of its own."""

    def __init__(self, schema: Mapping[str, Any]) -> None:
        self.fields: tuple[FieldSpec, ...] = parse_schema(schema)  # BundleError when malformed
        self.features = tuple(dict.fromkeys(f.source for f in self.fields))  # raw features, schema order
        self.required = frozenset(f.source for f in self.fields if f.required)
        self._lookups = {f.name: _Lookup(f) for f in self.fields if f.kind != "numeric"}
        self._rows = {f.name: _RowMemo(f.max_len) for f in self.fields if f.kind == "multi"}
        self._edges = {f.name: np.asarray(f.edges, dtype=np.float64) for f in self.fields if f.kind == "numeric"}
        self._info = {s: self._feature_info(s) for s in self.features}

    def input_specs(self) -> dict[str, tuple[str, tuple[int, ...]]]:
        """Graph input name → (dtype, shape) that this encoder produces; -1 is the batch axis."""
        return {f.name: ("int64", (-1, f.max_len) if f.kind == "multi" else (-1,)) for f in self.fields}

    def describe(self) -> dict[str, FeatureInfo]:
        """Raw feature → required?, numeric?, example values (numeric when any field reading it is numeric)."""
        return dict(self._info)

    def _feature_info(self, feature: str) -> FeatureInfo:
        readers = [f for f in self.fields if f.source == feature]
        numeric = any(f.kind == "numeric" for f in readers)
        multi = any(f.kind == "multi" for f in readers)
        return FeatureInfo(feature, feature in self.required, numeric, multi, examples(readers))

    def example_rows(self, n: int) -> list[dict[str, Any]]:
        """n real-looking rows built from the vocabularies (warm-up, documentation)."""
        info = self.describe().values()
        return [{f.name: f.examples[(i + k) % len(f.examples)] for k, f in enumerate(info)} for i in range(n)]

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

    # ---- internals ----

    def _check_known(self, keys: set, rows: list | None) -> None:
        unknown = keys - set(self.features)
        if unknown:
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
            if f.required:
                _check_present(f, arr, col is not None and f.source not in context)
            out[f.name] = arr
        return out

    def _encode_field(self, f: FieldSpec, col: Sequence[Any], per_row: bool) -> np.ndarray:
        if isinstance(col, np.ndarray) and (f.kind != "numeric" or col.dtype.kind not in "fiu"):
            col = col.tolist()  # (v2 binary tensors arrive as arrays; only numbers stay arrays)
        if f.kind == "categorical":
            return self._lookups[f.name].encode(col, f.source, per_row)
        if f.kind == "numeric":
            return self._encode_numeric(f, col, per_row)
        return self._encode_multi(f, col, per_row)

    def _encode_numeric(self, f: FieldSpec, col: Sequence[Any], per_row: bool) -> np.ndarray:
        x = None
        if isinstance(col, np.ndarray):  # a v2 binary tensor of integers or floats
            x = col.astype(np.float64)
        elif set(map(type, col)) <= {int, float}:  # fast path: plain JSON numbers
            try:
                x = np.array(col, dtype=np.float64)
            except OverflowError:
                x = None
        if x is None or not np.isfinite(x).all():
            col = col.tolist() if isinstance(col, np.ndarray) else col
            values = [_at(_number, v, f.source, i if per_row else None) for i, v in enumerate(col)]
            missing = np.array([v is None for v in values])
            x = np.array([0.0 if v is None else v for v in values], dtype=np.float64)
            return np.where(missing, 0, 1 + np.searchsorted(self._edges[f.name], x, side="right")).astype(np.int64)
        return (1 + np.searchsorted(self._edges[f.name], x, side="right")).astype(np.int64)

    def _encode_multi(self, f: FieldSpec, col: Sequence[Any], per_row: bool) -> np.ndarray:
        lookup = self._lookups[f.name]
        if set(map(type, col)) <= _ROW_MEMO_TYPES:  # the usual case: "a|b|c" strings (or null)
            memo = self._rows[f.name]
            if len(memo.slots) > _MEMO_CAP:
                memo.clear()
            slots = list(map(memo.slots.get, col))
            if None in slots:
                for i, v in enumerate(col):
                    if slots[i] is None:
                        slots[i] = memo.slots.get(v)  # an earlier row of this request may have added it
                        if slots[i] is None:
                            slots[i] = memo.add(v, self._multi_ids(f, lookup, v, i if per_row else None))
            return memo.bank[slots]
        cache: dict[str, list[int]] = {}  # lists of values: one id row per row
        rows = []
        for i, v in enumerate(col):
            key = v if type(v) is str else None
            ids = cache.get(key) if key is not None else None
            if ids is None:
                ids = self._multi_ids(f, lookup, v, i if per_row else None)
                if key is not None:
                    cache[key] = ids
            rows.append(ids)
        return np.array(rows, dtype=np.int64).reshape(len(col), f.max_len)

    def _multi_ids(self, f: FieldSpec, lookup: _Lookup, value: Any, row: int | None) -> list[int]:
        # Rule 4: split strings on sep, take lists as is, drop missing elements, keep max_len, pad with 0.
        if value is None:
            return [0] * f.max_len
        if isinstance(value, str):
            parts: Sequence[Any] = value.split(f.sep) if f.sep else [value]
        elif isinstance(value, list | tuple):
            parts = value
        else:
            parts = [value]
        ids = [i for i in (lookup.index_of(_at(normalise, p, f.source, row)) for p in parts) if i][: f.max_len]
        return ids + [0] * (f.max_len - len(ids))


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


def _check_present(f: FieldSpec, arr: np.ndarray, per_row: bool) -> None:
    empty = ~arr.any(axis=1) if arr.ndim == 2 else arr == 0
    if empty.any():
        row = int(np.flatnonzero(empty)[0]) if per_row else None
        where = f", row {row}" if row is not None else ""
        raise MissingFeature(f"missing required feature {f.source!r}{where}", field=f.source, row=row)
