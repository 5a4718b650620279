"""What a load test reports (`apg loadtest`): statistics of the recorded requests, the knee of a sweep,
the printed table, and the files (summary.json, requests.csv, latency.png).

    summary = summarise(records, cfg)           # percentiles from the *scheduled* send time, achieved rate, errors
    find_knee(summaries, slo_ms=10, max_errors=0.01)
    print(format_table(summaries)); write_results(Path("runs/loadtest"), runs, meta)
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import orjson

from scripts.loadtest.records import LoadConfig, Records

PERCENTILES = (50, 90, 95, 99, 99.9)


# ---------------------------------------------------------------- statistics


def _percentiles(ms: np.ndarray) -> dict[str, float | None]:
    values = np.percentile(ms, PERCENTILES) if len(ms) else [None] * len(PERCENTILES)
    out = {f"p{p:g}": (None if v is None else round(float(v), 3)) for p, v in zip(PERCENTILES, values, strict=True)}
    out["mean"] = round(float(ms.mean()), 3) if len(ms) else None
    out["max"] = round(float(ms.max()), 3) if len(ms) else None
    return out


def summarise(rec: Records, cfg: LoadConfig) -> dict:
    """Statistics of the requests scheduled after the warm-up. Latencies are of successful requests;
    achieved rate = successful completions per second inside the measured window."""
    lo, hi = cfg.warmup, cfg.warmup + cfg.duration
    measured = (rec.scheduled >= lo) & (rec.scheduled < hi)
    ok = np.array([e is None for e in rec.error]) & (rec.status > 0)
    errors: dict[str, int] = {}
    for i in np.flatnonzero(measured & ~ok):
        errors[rec.error[i]] = errors.get(rec.error[i], 0) + 1
    done_in_window = ok & (rec.done >= lo) & (rec.done < hi)
    achieved = int(done_in_window.sum()) / cfg.duration
    n = int(measured.sum())
    return {
        "target_rate": cfg.rate,
        "arrivals": cfg.arrivals,
        "rows_per_request": cfg.rows,
        "concurrency": cfg.concurrency,
        "duration_s": cfg.duration,
        "requests": n,
        "offered_rate": round(n / cfg.duration, 3),  # the realised schedule (Poisson counts vary around the target)
        "ok": int((measured & ok).sum()),
        "achieved_rate": round(achieved, 3),
        "rows_per_s": round(achieved * cfg.rows, 3),
        "sent_rate": round(int(((rec.sent >= lo) & (rec.sent < hi)).sum()) / cfg.duration, 3),
        "latency_ms": _percentiles(1000 * (rec.done - rec.scheduled)[measured & ok]),
        "service_ms": _percentiles(1000 * (rec.done - rec.sent)[measured & ok]),
        "dispatch_lag_ms": _percentiles(1000 * (rec.dispatched - rec.scheduled)[measured]),
        "errors": dict(sorted(errors.items())),
        "error_fraction": round(sum(errors.values()) / n, 6) if n else 0.0,
    }


def passes(summary: dict, slo_ms: float, max_errors: float) -> bool:
    p99 = summary["latency_ms"]["p99"]
    return p99 is not None and p99 <= slo_ms and summary["error_fraction"] <= max_errors


def find_knee(summaries: list[dict], slo_ms: float, max_errors: float) -> float | None:
    """The highest offered rate whose p99 <= slo_ms and error fraction <= max_errors (None: no such rate)."""
    good = [s["target_rate"] for s in summaries if passes(s, slo_ms, max_errors)]
    return max(good) if good else None


# ---------------------------------------------------------------- output


def format_table(summaries: list[dict]) -> str:
    head = f"{'target/s':>9} {'achieved':>9} {'rows/s':>9} {'sent/s':>8} " + " ".join(
        f"{f'p{p:g}':>7}" for p in PERCENTILES
    )
    lines = [head + f" {'svc p50':>7} {'svc p99':>7} {'lag p99':>7} {'err %':>6}  errors", "-" * (len(head) + 40)]
    for s in summaries:
        lat = " ".join(_ms(s["latency_ms"][f"p{p:g}"]) for p in PERCENTILES)
        svc = f"{_ms(s['service_ms']['p50'])} {_ms(s['service_ms']['p99'])} {_ms(s['dispatch_lag_ms']['p99'])}"
        errs = ", ".join(f"{k}={v}" for k, v in s["errors"].items()) or "-"
        lines.append(
            f"{s['target_rate']:9.1f} {s['achieved_rate']:9.1f} {s['rows_per_s']:9.0f} {s['sent_rate']:8.1f} "
            f"{lat} {svc} {100 * s['error_fraction']:6.2f}  {errs}"
        )
    return (
        "\n".join(lines)
        + "\n(ms; latency from the scheduled send time, of successful requests; svc = from the actual send;"
        "\n lag = how late the generator itself started requests: large values mean it is short of CPU)"
    )


def _ms(v: float | None) -> str:
    return f"{v:7.2f}" if v is not None else f"{'-':>7}"


def write_csv(path: Path, runs: list[tuple[dict, Records]]) -> None:
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(
            ["target_rate", "index", "scheduled_s", "sent_s", "done_s", "latency_ms", "service_ms", "status", "error"]
        )
        for summary, rec in runs:
            lat, svc = 1000 * (rec.done - rec.scheduled), 1000 * (rec.done - rec.sent)
            for i in range(len(rec.scheduled)):
                cells = (
                    "" if np.isnan(v) else f"{v:.6f}"
                    for v in (rec.scheduled[i], rec.sent[i], rec.done[i], lat[i], svc[i])
                )
                w.writerow([summary["target_rate"], i, *cells, int(rec.status[i]), rec.error[i] or ""])


def plot(path: Path, runs: list[tuple[dict, Records]], meta: dict) -> None:
    """Sweep: latency percentiles, and achieved vs offered rate. Single run: latency over time."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if meta["sweep"]:
        fig, (ax, ax2) = plt.subplots(2, 1, figsize=(9, 7), sharex=True, height_ratios=(2, 1))
        _plot_sweep(ax, ax2, [s for s, _ in runs], meta["slo_ms"], meta["knee_rate"])
    else:
        fig, ax = plt.subplots(figsize=(9, 5))
        _plot_run(ax, *runs[0], meta["warmup_s"])
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _plot_sweep(ax, ax2, summaries: list[dict], slo_ms: float, knee: float | None) -> None:
    rates = [s["target_rate"] for s in summaries]
    for p in PERCENTILES:
        ax.plot(rates, [s["latency_ms"][f"p{p:g}"] or np.nan for s in summaries], marker="o", label=f"p{p:g}")
    ax.axhline(slo_ms, color="grey", ls="--", label=f"SLO {slo_ms:g} ms")
    for a in (ax, ax2) if knee is not None else ():
        a.axvline(knee, color="green", ls=":", label=f"knee {knee:g}/s")
    ax.set(xscale="log", yscale="log", ylabel="latency from scheduled send (ms)")
    ax.legend(fontsize=8)
    ax2.plot(rates, rates, color="grey", ls="--", label="offered")
    ax2.plot(rates, [s["achieved_rate"] for s in summaries], color="black", marker="x", label="achieved (ok/s)")
    ax2.set(xscale="log", yscale="log", xlabel="offered rate (requests/s)", ylabel="requests/s")
    ax2.legend(fontsize=8)


def _plot_run(ax, summary: dict, rec: Records, warmup: float) -> None:
    lat, svc = 1000 * (rec.done - rec.scheduled), 1000 * (rec.done - rec.sent)
    ax.plot(rec.scheduled, lat, ".", ms=2, label="latency from scheduled send")
    ax.plot(rec.scheduled, svc, ".", ms=2, alpha=0.5, label="service time (from actual send)")
    bad = np.array([e is not None for e in rec.error], dtype=bool)
    ax.plot(rec.scheduled[bad], np.full(bad.sum(), np.nanmax(lat, initial=1.0)), "rx", label="errors")
    ax.axvspan(0, warmup, color="grey", alpha=0.15, label="warm-up (excluded)")
    ax.set(yscale="log", xlabel="scheduled send time (s)", ylabel="latency (ms)")
    ax.set_title(f"target {summary['target_rate']:g}/s, achieved {summary['achieved_rate']:g}/s")
    ax.legend(loc="upper left", fontsize=8)


def write_results(out: Path, runs: list[tuple[dict, Records]], meta: dict) -> dict[str, Path]:
    out.mkdir(parents=True, exist_ok=True)
    files = {"json": out / "summary.json", "csv": out / "requests.csv", "png": out / "latency.png"}
    doc = {**meta, "runs": [s for s, _ in runs]}
    files["json"].write_bytes(orjson.dumps(doc, option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY))
    write_csv(files["csv"], runs)
    plot(files["png"], runs, meta)
    return files
