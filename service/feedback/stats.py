"""Online metrics of one arm over a window: what the store's `window()` returns, computed the same way whatever the
backend (each backend only fetches the rows).

    auc(clicked, scores)        # features.metrics.auc, None when one class is missing
    logloss(clicked, scores)    # features.metrics.logloss, None on no rows
    summarise(arm, model, version, impressions, scores, clicked) -> OnlineStats

The metrics themselves are features/metrics.py's (numpy only): one definition offline and online.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from features import metrics


@dataclass(frozen=True)
class OnlineStats:
    """One arm over a window of impressions (rows scored at or after `now - seconds`).

    `labelled` rows are those with feedback; CTR, mean score, calibration, AUC and logloss are over them, so that
    predicted and observed CTR compare the same rows. `model`/`version` are those of the arm's latest impression."""

    arm: str
    model: str
    version: str
    impressions: int  # rows scored
    labelled: int  # rows with feedback (click or no click)
    clicks: int
    ctr: float | None  # clicks / labelled
    mean_score: float | None  # mean predicted click probability of the labelled rows
    calibration: float | None  # mean_score / ctr: predicted over observed CTR (1.0 = calibrated)
    auc: float | None  # None unless both clicks and non-clicks are present
    logloss: float | None

    def to_dict(self) -> dict:
        return asdict(self)


def auc(clicked: np.ndarray, scores: np.ndarray) -> float | None:
    """features.metrics.auc (exact, ties at their average rank); None when clicks or non-clicks are missing."""
    value = metrics.auc(np.asarray(clicked, dtype=bool), np.asarray(scores, dtype=np.float64))
    return None if math.isnan(value) else value


def logloss(clicked: np.ndarray, scores: np.ndarray) -> float | None:
    """features.metrics.logloss (scores clipped to [1e-7, 1 - 1e-7]); None on no rows."""
    return metrics.logloss(clicked, scores) if len(clicked) else None


def summarise(
    arm: str, model: str, version: str, impressions: int, scores: np.ndarray, clicked: np.ndarray
) -> OnlineStats:
    """The OnlineStats of one arm from its impression count and its labelled rows' (score, clicked)."""
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(clicked, dtype=bool)
    n, clicks = len(y), int(y.sum())
    ctr = clicks / n if n else None
    mean_score = float(s.mean()) if n else None
    calibration = mean_score / ctr if ctr else None  # None with no rows or no click
    return OnlineStats(
        arm, model, version, int(impressions), n, clicks, ctr, mean_score, calibration, auc(y, s), logloss(y, s)
    )
