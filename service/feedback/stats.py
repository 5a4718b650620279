"""Online metrics of one arm over a window: what the store's `window()` returns, computed the same way whatever the
backend (each backend only fetches the rows).

    auc(clicked, scores)        # exact, via average ranks (Mann-Whitney U); None when one class is missing
    logloss(clicked, scores)    # scores clipped to [1e-7, 1 - 1e-7]; None on no rows
    summarise(arm, model, version, impressions, scores, clicked) -> OnlineStats

numpy only: the serving side has no scipy, sklearn or torch (model/metrics.py is the training side's, and
tests/service/test_feedback_store.py checks that the two AUCs agree).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

EPS = 1e-7


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
    """Area under the ROC curve, exact: the Mann-Whitney U of the positives' ranks, ties given their average rank."""
    y = np.asarray(clicked, dtype=bool)
    s = np.asarray(scores, dtype=np.float64)
    n_pos = int(y.sum())
    n_neg = len(y) - n_pos
    if n_pos == 0 or n_neg == 0:
        return None
    order = np.argsort(s, kind="mergesort")
    _, first, counts = np.unique(s[order], return_index=True, return_counts=True)
    ranks = np.empty(len(s), dtype=np.float64)
    ranks[order] = np.repeat(first + (counts + 1) / 2.0, counts)  # 1-based average rank of each run of ties
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def logloss(clicked: np.ndarray, scores: np.ndarray) -> float | None:
    y = np.asarray(clicked, dtype=np.float64)
    if len(y) == 0:
        return None
    p = np.clip(np.asarray(scores, dtype=np.float64), EPS, 1 - EPS)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log1p(-p)))


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
