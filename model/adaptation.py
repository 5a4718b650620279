"""Does an APG model adapt? The spread of its generated parameters, and the mean-S counterfactual.

    report = adaptation(model, x_test, y_test)
    # {"layers": [{"spread": 0.16, "distinct": 4821}, ...], "auc": 0.8011, "auc_mean_s": 0.7939,
    #  "mean_s_cost": 0.0072, "adaptive": True}

`spread` of a layer is E_i ||S_i − S̄||_F / ||S̄||_F over the rows; the counterfactual scores the same rows with every
generated tensor (S_i, and U_i, V_i, b_i where the variant generates them) replaced by its mean over those rows.
A model whose counterfactual costs less than ADAPTIVE_AUC (0.1 AUC points) is labelled non-adaptive: it is, in
effect, a static low-rank tower.
"""

from __future__ import annotations

from contextlib import contextmanager

import numpy as np
import torch

from features.metrics import auc
from model.apg import APGLinear
from model.evaluate import predict

ADAPTIVE_AUC = 0.001  # 0.1 AUC points


def apg_layers(model: torch.nn.Module) -> list[APGLinear]:
    return [m for m in model.modules() if isinstance(m, APGLinear)]


@torch.no_grad()
def generated(model: torch.nn.Module, x: dict[str, np.ndarray]) -> list[dict[str, np.ndarray]]:
    """Per APG layer, every tensor it generated for the rows of x: {"s": (n, K, K), ...} (the static bias left out)."""
    layers = apg_layers(model)
    parts: list[list[dict]] = [[] for _ in layers]

    def recorder(generate, into: list):
        def call(z):
            out = generate(z)
            into.append({k: v.detach() for k, v in out.items() if v.dim() > 1})  # (B, ...) tensors only
            return out

        return call

    try:
        for layer, into in zip(layers, parts, strict=True):
            layer.generate = recorder(layer.generate, into)  # an instance attribute shadows the method
        predict(model, x)
    finally:
        for layer in layers:
            layer.__dict__.pop("generate", None)
    return [{k: torch.cat([p[k] for p in layer_parts]).numpy() for k in layer_parts[0]} for layer_parts in parts]


@contextmanager
def fixed_generation(model: torch.nn.Module, means: list[dict[str, np.ndarray]]):
    """Within the block, every APG layer generates `means` (one tensor per key, broadcast over the batch)."""
    layers = apg_layers(model)
    try:
        for layer, mean in zip(layers, means, strict=True):
            layer.generate = _constant(layer.generate, {k: torch.from_numpy(v) for k, v in mean.items()})
        yield model
    finally:
        for layer in layers:
            layer.__dict__.pop("generate", None)


def _constant(generate, mean: dict[str, torch.Tensor]):
    def call(z):
        out = generate(z)  # the static parts (the bias when it is not generated) stay as they are
        return {**out, **{k: v.expand(z.shape[0], *v.shape) for k, v in mean.items()}}

    return call


def spread(s: np.ndarray) -> float:
    """E_i ||S_i − S̄||_F / ||S̄||_F."""
    mean = s.mean(axis=0)
    return float(np.linalg.norm(s - mean, axis=(1, 2)).mean() / max(np.linalg.norm(mean), 1e-12))


def adaptation(model: torch.nn.Module, x: dict[str, np.ndarray], y: np.ndarray, sample: int = 20_000) -> dict:
    """Spread per layer (on the first `sample` rows, whose means also make the counterfactual), test AUC on all rows
    with and without the mean-S counterfactual, and the verdict."""
    gen = generated(model, {k: v[:sample] for k, v in x.items()})
    layers = [{"spread": spread(g["s"]) if "s" in g else None, "distinct": _distinct(g)} for g in gen]
    base = auc(y, predict(model, x))
    with fixed_generation(model, [{k: v.mean(axis=0) for k, v in g.items()} for g in gen]):
        counterfactual = auc(y, predict(model, x))
    cost = base - counterfactual
    verdict = {"mean_s_cost": cost, "adaptive": bool(cost >= ADAPTIVE_AUC)}
    return {"layers": layers, "auc": base, "auc_mean_s": counterfactual, **verdict}


def _distinct(g: dict[str, np.ndarray]) -> int:
    """How many different generated parameter sets the rows got (a group-wise model: at most its group count)."""
    first = next(iter(g.values()))
    flat = first.reshape(len(first), -1)
    return int(len(np.unique(np.round(flat, 6), axis=0)))
