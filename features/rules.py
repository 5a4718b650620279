"""The encoding rules of docs/BUNDLE.md, one function each; the encoder (serving and training) is built from them.

    normalise(196.0) == normalise(np.int64(196)) == normalise(" 196 ") == "196"      # rule 1
    number(" 2.5 ") == 2.5; number("") is None                                       # rule 5
    elements("a|b||c", "|", 64) == ["a", "b", "", "c"]                                # rule 4, before normalising
    hash_index("196", 1000) == 2 + blake2b-64("196") % 1000                          # rule 6, hashed fields

Every function raises a typed FeatureError for a value it cannot read; the encoder's policy decides whether that is
a 400 (serving) or a missing value (training data).
"""

from __future__ import annotations

import hashlib
import math
import numbers
from typing import Any

import numpy as np

from features.errors import InvalidType, NonFinite
from features.schema import FIRST


def normalise(value: Any) -> str | None:
    """Rule 1: a categorical value as a string, or None when missing.

    None/blank → None; bool → "true"/"false"; an integral number → its digits; any other number → repr of its
    float64 value; strings are stripped. Python and numpy scalars follow the same rule (np.float32(2.0) → "2",
    np.bool_(True) → "true", np.float32(0.1) → repr(float(np.float32(0.1))), as a float32 tensor's tolist() gives)."""
    if isinstance(value, str):
        return value.strip() or None
    if value is None:
        return None
    if isinstance(value, bool | np.bool_):
        return "true" if value else "false"
    if isinstance(value, numbers.Integral):
        return str(int(value))  # ValueError past Python's digit limit: the caller names the feature
    if isinstance(value, numbers.Real):
        x = float(value)
        if not math.isfinite(x):
            raise NonFinite(f"{x} is not a finite number")
        return str(int(x)) if x.is_integer() else repr(x)
    raise InvalidType(f"expected a string or number, got {type(value).__name__}")


def number(value: Any) -> float | None:
    """Rule 5: None/blank → None (missing); a number or numeric string → a finite float; anything else refused."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, bool | np.bool_) or not isinstance(value, numbers.Real | str):
        raise InvalidType(f"expected a number, got {type(value).__name__}")
    try:
        x = float(value)
    except ValueError:
        raise InvalidType(f"expected a number, got {short(value)}") from None
    if not math.isfinite(x):
        raise NonFinite(f"{short(value)} is not a finite number")
    return x


def read_limit(max_len: int) -> int:
    """Rule 4: how many elements of a multi value are read (the rest is ignored, so a row costs what the model uses)."""
    return max(64, 4 * max_len)


def elements(value: Any, sep: str | None, limit: int) -> list[Any]:
    """Rule 4, first step: a multi value's raw elements, at most `limit` of them. A string is split on `sep`
    (no sep: one element), a list or tuple is taken as is, any other scalar is one element, None is none."""
    if value is None:
        return []
    if isinstance(value, str):
        if not sep:
            return [value]
        parts = value.split(sep, limit)  # stops scanning after `limit` separators
        return parts[:limit]
    if isinstance(value, list | tuple):
        return list(value[:limit])
    return [value]


def short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def prefixed(value: str, prefix: int | None) -> str:
    """Rule 2: `prefix` cuts the normalised string (e.g. a zip code to its region)."""
    return value[:prefix] if prefix else value


def multi_values(value: Any, sep: str | None, max_len: int, read=normalise) -> list[str]:
    """Rule 4: the first `max_len` present elements of a multi value, each read by `read` (rule 1 by default;
    the encoder passes one that names the feature and row, or that turns a bad element into a missing one)."""
    out = []
    for element in elements(value, sep, read_limit(max_len)):
        v = read(element)
        if v is not None:
            out.append(v)
            if len(out) == max_len:
                break
    return out


def lenient(fn, value: Any) -> Any:
    """fn(value), or None (missing) where the value breaks a rule: how training data is read (rule 5)."""
    try:
        return fn(value)
    except (InvalidType, NonFinite, ValueError, OverflowError):
        return None


def id_hash(value: str) -> int:
    """Rule 6's hash: BLAKE2b (RFC 7693) of the value's UTF-8 bytes, unkeyed, 8-byte digest, read as an unsigned
    little-endian integer. Specified so any language can compute it (golden values in docs/BUNDLE.md); never
    Python's own ``hash`` (salted per process)."""
    return int.from_bytes(hashlib.blake2b(value.encode("utf-8", "surrogatepass"), digest_size=8).digest(), "little")


def hash_index(value: str, buckets: int) -> int:
    """Rule 6: a hashed field's index for a normalised (and prefixed) value: FIRST + id_hash(value) mod buckets.
    No vocabulary: every value has a row (never OOV); values that share a bucket share its embedding."""
    return FIRST + id_hash(value) % buckets
