"""Paired statistics for the APG study: every comparison is APG minus base on the same seeds (same split, same
initialisation seed), so the seed-to-seed noise both arms share cancels.

    paired([0.31, 0.12, 0.25])      # {"n": 3, "mean": .., "ci": (lo, hi), "p": .., "mde": ..} (t over seeds)
    pooled({"dnn": {0: .3, 1: .1}, "deepfm": {0: .2, 1: .0}})   # seed as the unit: per-seed mean over models

`mde` is the power of the design: the smallest true mean difference a two-sided paired t-test at α = 0.05 detects
with 80 % power, given the observed spread of the differences and n seeds.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from scipy import stats

ALPHA, POWER = 0.05, 0.80


def paired(diffs: Sequence[float]) -> dict:
    """Mean paired difference, its 95 % t interval, the two-sided p-value and the minimum detectable effect."""
    n = len(diffs)
    mean = sum(diffs) / n if n else math.nan
    if n < 2:
        return {"n": n, "mean": mean, "sd": math.nan, "ci": (math.nan, math.nan), "p": math.nan, "mde": math.nan}
    sd = math.sqrt(sum((d - mean) ** 2 for d in diffs) / (n - 1))
    se = sd / math.sqrt(n)
    t = stats.t.ppf(1 - ALPHA / 2, n - 1)
    p = 2 * stats.t.sf(abs(mean) / se, n - 1) if se > 0 else (0.0 if mean else 1.0)
    mde = (t + stats.t.ppf(POWER, n - 1)) * se
    return {"n": n, "mean": mean, "sd": sd, "ci": (mean - t * se, mean + t * se), "p": float(p), "mde": float(mde)}


def pooled(by_model: Mapping[str, Mapping[int, float]]) -> dict:
    """The lift over models with the seed as the unit: for each seed every model has, the mean difference over
    models; then `paired` over those seeds. Seeds a model lacks are left out (the pairing must be complete)."""
    seeds = set.intersection(*(set(d) for d in by_model.values())) if by_model else set()
    per_seed = [sum(d[s] for d in by_model.values()) / len(by_model) for s in sorted(seeds)]
    return {**paired(per_seed), "models": len(by_model), "seeds": sorted(seeds)}


def fmt(r: dict, scale: float = 100.0) -> str:
    """'+0.31 [+0.05, +0.57] (p 0.03, n 5)' in AUC points."""
    if r["n"] < 2:
        return f"{r['mean'] * scale:+.2f} (n {r['n']})"
    lo, hi = r["ci"]
    return f"{r['mean'] * scale:+.2f} [{lo * scale:+.2f}, {hi * scale:+.2f}] (p {r['p']:.2g}, n {r['n']})"


def welch(a: Sequence[float], b: Sequence[float], level: float = 0.95) -> dict:
    """mean(a) - mean(b) for two independent samples (e.g. two libraries' runs: their seeds do not pair), with its
    Welch t interval at ``level`` and the two-sided p-value."""
    na, nb = len(a), len(b)
    mean = sum(a) / na - sum(b) / nb if na and nb else math.nan
    if na < 2 or nb < 2:
        return {"n": min(na, nb), "mean": mean, "ci": (math.nan, math.nan), "p": math.nan, "level": level}
    va = sum((x - sum(a) / na) ** 2 for x in a) / (na - 1) / na
    vb = sum((x - sum(b) / nb) ** 2 for x in b) / (nb - 1) / nb
    se = math.sqrt(va + vb)
    if se == 0:
        return {"n": min(na, nb), "mean": mean, "ci": (mean, mean), "p": 0.0 if mean else 1.0, "level": level}
    df = (va + vb) ** 2 / (va**2 / (na - 1) + vb**2 / (nb - 1))
    t = stats.t.ppf(1 - (1 - level) / 2, df)
    p = 2 * stats.t.sf(abs(mean) / se, df)
    return {"n": min(na, nb), "mean": mean, "ci": (mean - t * se, mean + t * se), "p": float(p), "level": level}


def spreads(adaptations: Sequence[Mapping]) -> list[float]:
    """The spread of S_i per APG layer, averaged over runs' adaptation records (model/adaptation.py)."""
    layers = [[layer["spread"] or 0.0 for layer in a["layers"]] for a in adaptations]
    return [sum(x) / len(x) for x in zip(*layers, strict=True)] if layers else []


def adapted(adaptations: Sequence[Mapping]) -> str:
    """An APG figure's adaptation as RESULTS.md gives it: 'S_i spread per layer 0.114 / 0.660, mean-S cost +0.23
    [..]' (the mean-S cost: test AUC minus the AUC with every S_i replaced by its mean, over the runs; towers of
    different depths give the spread's range)."""
    present = [a for a in adaptations if a]
    if not present:
        return "no adaptation measured"
    if len({len(a["layers"]) for a in present}) == 1:
        spread = "per layer " + " / ".join(f"{s:.3f}" for s in spreads(present))
    else:  # towers of different depths (several base models): the range over their layers
        each = [layer["spread"] or 0.0 for a in present for layer in a["layers"]]
        spread = f"{min(each):.3f}-{max(each):.3f} over the layers"
    return f"S_i spread {spread}, mean-S cost {fmt(paired([a['mean_s_cost'] for a in present]))}"
