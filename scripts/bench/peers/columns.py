"""The raw-feature columns of KServe v2 input tensors, for the peer runtimes (mlserver_runtime.py, kserve_model.py).

Standard library only: each peer imports it inside its own virtual environment.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any


def tensor_columns(tensors: Iterable[tuple[str, str, list[int], Any]]) -> dict[str, list[Any]]:
    """(name, datatype, shape, data) per tensor → {feature: values}: BYTES elements as str, numbers as they came (data
    flat or nested); a multi-valued [B, K] tensor as one list per row."""
    columns = {}
    for name, datatype, shape, data in tensors:
        flat = list(_flatten(data))
        if datatype == "BYTES":
            flat = [v.decode() if isinstance(v, bytes) else v for v in flat]
        if len(shape) == 2 and shape[1] != 1:
            k = shape[1]
            flat = [flat[i : i + k] for i in range(0, len(flat), k)]
        columns[name] = flat
    return columns


def _flatten(data: Any):
    for v in data if isinstance(data, list) else [data]:
        if isinstance(v, list):
            yield from _flatten(v)
        else:
            yield v
