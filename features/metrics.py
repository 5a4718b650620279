"""Offline metrics, one definition for training and serving (numpy only): AUC (rank-based, ties averaged), logloss,
user-level gAUC, calibration."""

from __future__ import annotations

import numpy as np


def auc(y: np.ndarray, p: np.ndarray) -> float:
    """Area under the ROC curve via the Mann–Whitney U statistic; NaN when only one class is present."""
    y = np.asarray(y).astype(bool)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(p, kind="mergesort")
    ranks = np.empty(len(p), dtype=np.float64)
    sorted_p = np.asarray(p)[order]
    # average ranks over ties: start/end of each run of equal scores
    _, start, counts = np.unique(sorted_p, return_index=True, return_counts=True)
    avg = start + (counts + 1) / 2.0
    ranks[order] = np.repeat(avg, counts)
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def logloss(y: np.ndarray, p: np.ndarray, eps: float = 1e-7) -> float:
    p = np.clip(np.asarray(p, dtype=np.float64), eps, 1 - eps)
    y = np.asarray(y, dtype=np.float64)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


def gauc(y: np.ndarray, p: np.ndarray, users: np.ndarray) -> float:
    """Impression-weighted mean of per-user AUC over users that have both classes."""
    y, p, users = np.asarray(y), np.asarray(p), np.asarray(users)
    order = np.argsort(users, kind="stable")
    _, starts = np.unique(users[order], return_index=True)
    total, weight = 0.0, 0
    for idx in np.split(order, starts[1:]):
        a = auc(y[idx], p[idx])
        if not np.isnan(a):
            total, weight = total + a * len(idx), weight + len(idx)
    return total / weight if weight else float("nan")


def evaluate(y: np.ndarray, p: np.ndarray, users: np.ndarray) -> dict[str, float]:
    """The numbers every run reports; ``ctr_ratio`` = mean predicted / observed CTR (1.0 = calibrated)."""
    return {
        "auc": auc(y, p),
        "logloss": logloss(y, p),
        "gauc": gauc(y, p, users),
        "ctr_ratio": float(np.mean(p) / max(np.mean(y), 1e-12)),
        "rows": len(y),
    }
