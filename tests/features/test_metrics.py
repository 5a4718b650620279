import numpy as np

from features.metrics import auc, evaluate, gauc, logloss


def brute_auc(y, p):
    pos, neg = p[y == 1], p[y == 0]
    wins = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    return wins / (len(pos) * len(neg))


def test_auc_matches_pair_counting_with_ties():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 500)
    p = np.round(rng.random(500), 1)  # many ties
    assert abs(auc(y, p) - brute_auc(y, p)) < 1e-12
    assert auc(np.array([1, 1]), np.array([0.2, 0.3])) != auc(np.array([1, 1]), np.array([0.2, 0.3]))  # NaN


def test_logloss_and_gauc():
    y, p = np.array([1, 0, 1, 0]), np.array([0.9, 0.1, 0.4, 0.6])
    assert abs(logloss(y, p) - (-np.mean(np.log([0.9, 0.9, 0.4, 0.4])))) < 1e-9
    users = np.array(["a", "a", "b", "b"])
    assert gauc(y, p, users) == 0.5  # user a perfect (1.0), user b inverted (0.0)
    users = np.array(["a", "a", "b", "c"])  # b and c have one class: skipped
    assert gauc(y, p, users) == 1.0
    assert evaluate(y, p, users)["rows"] == 4
