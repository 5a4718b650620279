"""Per arm of a replay: online AUC, CTR, calibration, logloss, top-1 CTR and latency, each with a 95% bootstrap CI
over users (a user is sticky to one arm, so users are the independent units), and each arm minus the baseline.

    report = summarise(answers, baseline="control", resamples=1000, seed=0)
    print(format_report(report)); plot_over_time(answers, "runs/abtest/abtest.png")

In a replay the labels do not depend on the scores: an arm's CTR differs from another's only through the users the
split gave it. What depends on the model is how it ranks and how calibrated it is: AUC, logloss, predicted/observed
CTR, and top-1 CTR (the CTR a one-slot page would get showing each request's top-scored item).
"""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime

import numpy as np

from scripts.abtest.replay import Answer
from service.feedback.stats import auc, logloss

METRICS = ("auc", "ctr", "predicted_ctr", "calibration", "logloss", "top1_ctr", "latency_p50_ms", "latency_p99_ms")


class Arm:
    """One arm's answers as arrays: rows (scores, labels, request) and requests (user, top-1 label, latency)."""

    def __init__(self, answers: list[Answer]) -> None:
        self.model, self.version = answers[-1].model, answers[-1].version
        self.scores = np.concatenate([a.scores for a in answers])
        self.labels = np.concatenate([a.labels for a in answers]).astype(bool)
        self.latency_ms = np.array([a.latency_s * 1e3 for a in answers])
        self.top1 = np.array([a.labels[int(np.argmax(a.scores))] for a in answers], dtype=np.float64)
        starts = np.cumsum([0] + [len(a.scores) for a in answers])
        by_user: dict[str, list[int]] = defaultdict(list)
        for k, a in enumerate(answers):
            by_user[a.user].append(k)
        self.users = list(by_user)
        self.user_requests = [np.array(ks) for ks in by_user.values()]
        self.user_rows = [np.concatenate([np.arange(starts[k], starts[k + 1]) for k in ks]) for ks in by_user.values()]

    def metrics(self, users: np.ndarray | None = None) -> dict[str, float | None]:
        """The metrics over all users, or over a (resampled, with repeats) list of user indices."""
        if users is None:
            rows, requests = slice(None), slice(None)
        else:
            rows = np.concatenate([self.user_rows[u] for u in users])
            requests = np.concatenate([self.user_requests[u] for u in users])
        s, y, lat = self.scores[rows], self.labels[rows], self.latency_ms[requests]
        ctr, predicted = float(y.mean()), float(s.mean())
        return {
            "auc": auc(y, s),
            "ctr": ctr,
            "predicted_ctr": predicted,
            "calibration": predicted / ctr if ctr else None,
            "logloss": logloss(y, s),
            "top1_ctr": float(self.top1[requests].mean()),
            "latency_p50_ms": float(np.percentile(lat, 50)),
            "latency_p99_ms": float(np.percentile(lat, 99)),
        }

    def resample(self, resamples: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
        """Each metric over `resamples` bootstrap samples of the users (NaN where a sample has none)."""
        draws = [self.metrics(rng.integers(0, len(self.users), len(self.users))) for _ in range(resamples)]
        return {m: np.array([np.nan if d[m] is None else d[m] for d in draws]) for m in METRICS}


def summarise(answers: list[Answer], baseline: str | None = None, resamples: int = 1000, seed: int = 0) -> dict:
    """{"arms": {arm: {model, version, requests, rows, users, metrics: {m: {value, ci}}}}, "baseline",
    "differences": {"arm - baseline": {m: {value, ci}}}, "resamples"}."""
    by_arm: dict[str, list[Answer]] = defaultdict(list)
    for a in answers:
        by_arm[a.arm].append(a)
    if not by_arm:
        raise RuntimeError("no request was answered: nothing to report")
    baseline = baseline or ("control" if "control" in by_arm else sorted(by_arm)[0])
    if baseline not in by_arm:
        raise ValueError(f"--baseline {baseline!r} is not an arm the service answered with: {sorted(by_arm)}")
    rng = np.random.default_rng(seed)
    arms, points, draws = {}, {}, {}
    for name in sorted(by_arm):
        arm = Arm(by_arm[name])
        points[name], draws[name] = arm.metrics(), arm.resample(resamples, rng)
        arms[name] = {
            "model": arm.model,
            "version": arm.version,
            "requests": len(by_arm[name]),
            "rows": len(arm.scores),
            "users": len(arm.users),
            "metrics": {m: _estimate(points[name][m], draws[name][m]) for m in METRICS},
        }
    differences = {
        f"{name} - {baseline}": {
            m: _estimate(_minus(points[name][m], points[baseline][m]), draws[name][m] - draws[baseline][m])
            for m in METRICS
        }
        for name in sorted(by_arm)
        if name != baseline
    }
    return {"arms": arms, "baseline": baseline, "differences": differences, "resamples": resamples}


def _minus(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a - b


def _estimate(value: float | None, draws: np.ndarray) -> dict:
    """The point estimate and the 2.5th-97.5th percentile of the bootstrap draws (None when undefined)."""
    finite = draws[np.isfinite(draws)]
    if value is None or len(finite) < 0.9 * len(draws) or not len(finite):
        return {"value": value, "ci": None}
    lo, hi = np.percentile(finite, [2.5, 97.5])
    return {"value": value, "ci": [float(lo), float(hi)]}


def format_report(report: dict) -> str:
    columns = [*report["arms"], *report["differences"]]
    head = f"{'':16s}" + "".join(f"{c:>30s}" for c in columns)
    lines = [head]
    for key in ("model", "requests", "rows", "users"):
        lines.append(f"{key:16s}" + "".join(f"{str(report['arms'][a][key]):>30s}" for a in report["arms"]))
    for m in METRICS:
        cells = [arm["metrics"][m] for arm in report["arms"].values()]
        cells += [diff[m] for diff in report["differences"].values()]
        lines.append(f"{m:16s}" + "".join(f"{_cell(c):>30s}" for c in cells))
    lines.append(f"95% CIs: {report['resamples']} bootstrap resamples of each arm's users")
    return "\n".join(lines)


def _cell(estimate: dict) -> str:
    value, ci = estimate["value"], estimate["ci"]
    if value is None:
        return "-"
    return f"{value:.4f}" + (f" [{ci[0]:.4f}, {ci[1]:.4f}]" if ci else "")


def over_time(answers: list[Answer], bins: int) -> dict[str, dict[str, list]]:
    """Per arm, AUC and CTR in `bins` stretches of the replay's data time holding equally many requests."""
    edges = np.quantile([a.at for a in answers], np.linspace(0, 1, bins + 1))
    out: dict[str, dict[str, list]] = {}
    for name in sorted({a.arm for a in answers}):
        mine = [a for a in answers if a.arm == name]
        at = np.array([a.at for a in mine])
        which = np.clip(np.searchsorted(edges, at, side="right") - 1, 0, bins - 1)
        series = out.setdefault(name, {"time": [], "auc": [], "ctr": []})
        for b in range(bins):
            group = [a for a, w in zip(mine, which, strict=True) if w == b]
            if group:
                y = np.concatenate([a.labels for a in group])
                series["time"].append(float(np.mean([a.at for a in group])))
                series["auc"].append(auc(y, np.concatenate([a.scores for a in group])))
                series["ctr"].append(float(y.mean()))
    return out


def plot_over_time(answers: list[Answer], path, bins: int = 10) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_auc, ax_ctr) = plt.subplots(2, 1, figsize=(8, 6), sharex=True)
    for name, s in over_time(answers, bins).items():
        when = [datetime.fromtimestamp(t, UTC) for t in s["time"]]
        ax_auc.plot(when, [np.nan if v is None else v for v in s["auc"]], marker="o", label=name)
        ax_ctr.plot(when, s["ctr"], marker="o", label=name)
    ax_auc.set_ylabel("online AUC")
    ax_ctr.set_ylabel("CTR")
    ax_ctr.set_xlabel("data time of the replayed requests (UTC)")
    ax_auc.legend()
    ax_auc.set_title(f"apg abtest: per arm, {bins} stretches of equally many requests")
    fig.autofmt_xdate()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
