"""The figures of docs/RESULTS.md (matplotlib, Agg): one function per kind of picture."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def bars(
    path: Path,
    labels: list[str],
    means: list[float],
    stds: list[float],
    ylabel: str,
    title: str,
    zero_line: bool = False,
) -> None:
    """Vertical bars with error bars (mean ± std over seeds)."""
    fig, ax = plt.subplots(figsize=(max(6, 0.9 * len(labels)), 3.4))
    ax.bar(range(len(labels)), means, yerr=stds, capsize=4, color="#4c72b0")
    ax.set_xticks(range(len(labels)), labels, rotation=30 if len(labels) > 6 else 0, ha="right")
    if zero_line:
        ax.axhline(0, color="k", lw=0.8)
    else:  # AUC bars: start the axis near the values so differences are visible
        lo = min(m - s for m, s in zip(means, stds, strict=True))
        hi = max(m + s for m, s in zip(means, stds, strict=True))
        ax.set_ylim(lo - 0.25 * (hi - lo + 0.1), hi + 0.25 * (hi - lo + 0.1))
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def lines(path: Path, series: dict[str, tuple[list[int], list[float]]], xlabel: str, ylabel: str) -> None:
    fig, ax = plt.subplots(figsize=(7, 3.2))
    for label, (xs, ys) in series.items():
        ax.plot(xs, ys, "o-", label=label)
    ax.axhline(0, color="k", lw=0.8)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if series:
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def ratios(path: Path, rows: list[dict], keys: dict[str, str], title: str) -> None:
    """Grouped bars of each row's ratio to the first row, on a log axis (1.0 = the static reference)."""
    ref, width = rows[0], 0.8 / len(keys)
    fig, ax = plt.subplots(figsize=(9, 3.8))
    for i, (key, label) in enumerate(keys.items()):
        vals = [r[key] / ref[key] if r.get(key) and ref.get(key) else np.nan for r in rows]
        ax.bar(np.arange(len(rows)) + i * width, vals, width, label=label)
    ax.axhline(1.0, color="k", lw=0.8)
    ax.set_yscale("log")
    ax.set_xticks(
        np.arange(len(rows)) + width * (len(keys) - 1) / 2,
        [r["variant"].split(" (")[0] for r in rows],
        rotation=25,
        ha="right",
        fontsize=8,
    )
    ax.set_ylabel("ratio to the first row")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def intervals(
    path: Path, categories: list[str], series: dict[str, list[tuple[float, float, float]]], xlabel: str, ylabel: str
) -> None:
    """Per category, each series' (mean, lo, hi) as a point with its interval, the series side by side; an interval
    that is NaN (fewer than two seeds) is drawn as the point alone."""
    fig, ax = plt.subplots(figsize=(max(6, 1.2 * len(categories)) + 2, 3.6))  # +2: the legend, outside the points
    width = 0.8 / max(len(series), 1)
    for i, (label, values) in enumerate(series.items()):
        mean, lo, hi = (np.array(v, dtype=float) for v in zip(*values, strict=True))
        lo, hi = np.where(np.isnan(lo), mean, lo), np.where(np.isnan(hi), mean, hi)
        xs = np.arange(len(categories)) + (i - (len(series) - 1) / 2) * width
        ax.errorbar(xs, mean, yerr=[mean - lo, hi - mean], fmt="o", capsize=3, label=label)
    ax.axhline(0, color="k", lw=0.8)
    ax.set_xticks(range(len(categories)), categories)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if series:
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
