"""Scoring a trained model: batches to tensors, predictions, and the metrics of a split (also as if requests carried
only the required features). Used by training (model/train.py), the adaptation report, export and the experiments."""

from __future__ import annotations

import numpy as np
import torch

from features import Schema
from features.metrics import evaluate
from model.data import Dataset
from model.zoo import CTRModel


def to_tensors(x: dict[str, np.ndarray], device: torch.device | str = "cpu") -> dict[str, torch.Tensor]:
    return {k: torch.from_numpy(np.ascontiguousarray(v)).to(device) for k, v in x.items()}


@torch.no_grad()
def predict(model: CTRModel, x: dict[str, np.ndarray], batch_size: int = 8192) -> np.ndarray:
    model.eval()
    device = next(model.parameters()).device
    n = len(next(iter(x.values())))
    batches = (to_tensors({k: v[i : i + batch_size] for k, v in x.items()}, device) for i in range(0, n, batch_size))
    parts = [model(xb).cpu() for xb in batches]
    return torch.cat(parts).numpy() if parts else np.zeros(0, dtype=np.float32)


def optional_fields(schema: Schema) -> list[str]:
    """Fields a request may leave out: those whose raw source is not required (derived ids stay)."""
    required = {f.source for f in schema.fields if f.required}
    return [f.name for f in schema.fields if f.source not in required]


def blank(x: dict[str, np.ndarray], names: list[str], rows: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """A copy of ``x`` with the named fields set to the missing index (0) in ``rows`` (all rows if None)."""
    out = dict(x)
    for name in names:
        out[name] = x[name].copy()
        out[name][slice(None) if rows is None else rows] = 0
    return out


def evaluate_split(model: CTRModel, data: Dataset, split: str, ids_only: bool = False) -> dict[str, float]:
    """Metrics on a split; ``ids_only`` scores it as if requests carried only the required features."""
    x, y = data.part(split)
    if ids_only:
        x = blank(x, optional_fields(data.schema))
    return evaluate(y, predict(model, x), data.users[data.splits[split]])
