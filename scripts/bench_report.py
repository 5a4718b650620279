"""What `apg bench` reports: ratios to the floor, the tables (printed and in markdown), the targets of issue 6,
and the markdown report. The plots are in bench_plots.py.

    doc = add_ratios(doc)              # ratio_to_floor, p50_overhead_ms, ratio_to_thin, knee ratios, targets
    print(text_report(doc)); write_markdown(doc, plots, Path("docs/PERFORMANCE.md"))
"""

from __future__ import annotations

import datetime as dt
import importlib.util
import os
import platform
import shutil
from dataclasses import asdict
from pathlib import Path

from scripts.bench_plots import write_plots

__all__ = ["add_ratios", "header", "progress_line", "sweep_line", "text_report", "write_markdown", "write_plots"]

STAGES = ("parse", "preprocess", "queue", "inference", "serialise")
Table = tuple[str, list[str], list[list[str]]]  # title, header, rows


def header(cfg, bundle) -> dict:
    import onnxruntime

    has = importlib.util.find_spec
    return {
        "command": cfg.command,
        "created_at": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "quick": cfg.quick,
        "bundle": {"path": str(cfg.bundle), "name": bundle.name, "version": bundle.version},
        "threads": cfg.threads,
        "batch_sizes": list(cfg.batch_sizes),
        "budget_per_cell": asdict(cfg.budget),
        "pin": cfg.pin,
        "machine": {
            "cpus": os.cpu_count(),
            "cpus_usable": len(os.sched_getaffinity(0)),
            "load_average_before": [round(x, 2) for x in os.getloadavg()],
            "platform": platform.platform(),
            "python": platform.python_version(),
            "onnxruntime": onnxruntime.__version__,
            "uvloop": has("uvloop") is not None,
            "httptools": has("httptools") is not None,
        },
    }


def add_ratios(doc: dict) -> dict:
    """Every measurement as a ratio to the floor at the same batch size (and to the thin app); knee ratios."""
    floor = doc["floor"]
    thin = doc["http"].get("thin-columns", {})
    for path, cells in doc["http"].items():
        for b, cell in cells.items():
            cell["ratio_to_floor"] = round(cell["rows_per_s"] / floor[b]["rows_per_s"], 4)
            cell["p50_overhead_ms"] = round(cell["p50_ms"] - floor[b]["p50_ms"], 4)
            if path != "thin-columns" and b in thin:
                cell["ratio_to_thin"] = round(cell["rows_per_s"] / thin[b]["rows_per_s"], 4)
    for b, cell in doc["torch"].get("by_batch", {}).items():
        cell["ratio_to_floor"] = round(cell["rows_per_s"] / floor[b]["rows_per_s"], 4)
    sweep, one = doc["batching"], floor.get("1")
    for mode in ("off", "on"):
        knee = sweep[mode]["knee_rate"]
        sweep[mode]["knee_ratio_to_floor"] = round(knee / one["requests_per_s"], 4) if knee and one else None
    off, on = sweep["off"]["knee_rate"], sweep["on"]["knee_rate"]
    sweep["knee_ratio_on_off"] = round(on / off, 3) if on and off else None
    doc["targets"] = targets(doc)
    return doc


def targets(doc: dict) -> list[dict]:
    """Issue 6's service targets next to what this run measured (None: the run did not measure it)."""

    def cell(path: str, b: int, key: str):
        return doc["http"].get(path, {}).get(str(b), {}).get(key)

    rows = [
        (f"{p} at batch 1024: rows/s >= 0.75x floor", cell(p, 1024, "ratio_to_floor"), 0.75, ">=")
        for p in ("score-rows", "score-columns", "v2-json")
    ]
    rows += [
        ("v2-binary at batch 1024: rows/s >= 0.9x floor", cell("v2-binary", 1024, "ratio_to_floor"), 0.9, ">="),
        ("score-columns at batch 64: rows/s >= 0.5x floor", cell("score-columns", 64, "ratio_to_floor"), 0.5, ">="),
        ("v2-binary at batch 64: rows/s >= 0.5x floor", cell("v2-binary", 64, "ratio_to_floor"), 0.5, ">="),
        ("score-rows at batch 1: p50 overhead <= 0.15 ms", cell("score-rows", 1, "p50_overhead_ms"), 0.15, "<="),
        (
            "score-rows at batch 1: >= 8000 requests/s (one closed-loop client)",
            cell("score-rows", 1, "requests_per_s"),
            8000,
            ">=",
        ),
    ]
    out = []
    for text, value, bound, op in rows:
        met = None if value is None else (value >= bound if op == ">=" else value <= bound)
        out.append({"target": text, "measured": value, "met": met})
    return out + [_knee_target(doc["batching"])]


def _knee_target(sweep: dict) -> dict:
    """Knee on/off >= 3. A sweep where batching on met the SLO at no rate but off did at some is a miss;
    when neither did, the run says nothing about the ratio."""
    off, on = sweep["off"]["knee_rate"], sweep["on"]["knee_rate"]
    text = "micro-batching raises the batch-1 knee >= 3x"
    if on and off:
        return {"target": text, "measured": sweep["knee_ratio_on_off"], "met": sweep["knee_ratio_on_off"] >= 3.0}
    met = False if off else None
    knees = ", ".join(f"{mode} {k:g}/s" if k else f"{mode} none" for mode, k in (("off", off), ("on", on)))
    return {"target": text, "measured": f"knee {knees}", "met": met}


# ---------------------------------------------------------------- tables


def tables(doc: dict) -> list[Table]:
    sizes = [str(b) for b in doc["batch_sizes"]]
    paths = list(doc["http"])
    torch = doc["torch"].get("by_batch")
    head = ["batch", "floor rows/s", *paths] + (["torch eager"] if torch else [])
    thr = [
        [b, _num(doc["floor"][b]["rows_per_s"])]
        + [_ratio(doc["http"][p][b]) for p in paths]
        + ([_ratio(torch[b])] if torch else [])
        for b in sizes
    ]
    lat = [[b, _pp(doc["floor"][b])] + [_pp(doc["http"][p][b]) for p in paths] for b in sizes]
    over = [[b] + [f"{doc['http'][p][b]['p50_overhead_ms']:.3f}" for p in paths] for b in sizes]
    out: list[Table] = [
        ("Throughput: ratio to the floor (rows/s)", head, thr),
        ("Latency per request: p50 / p99 (ms)", ["batch", "floor", *paths], lat),
        ("p50 overhead over the floor (ms)", ["batch", *paths], over),
        ("Stage breakdown from the service's /metrics: mean ms per request", *_stage_table(doc)),
        ("Batch-1 open-loop sweep (/score rows, Poisson arrivals): micro-batching off | on", *_sweep_table(doc)),
    ]
    if torch:
        rows = [
            [
                b,
                _num(torch[b]["rows_per_s"]),
                _num(doc["floor"][b]["rows_per_s"]),
                f"{torch[b]['ratio_to_floor']:.3f}",
                f"{1 / torch[b]['ratio_to_floor']:.2f}x",
                f"{torch[b]['max_abs_diff_vs_onnx']:.1e}",
            ]
            for b in sizes
        ]
        head = ["batch", "torch rows/s", "onnxruntime rows/s", "torch / floor", "onnxruntime speed-up", "max abs diff"]
        out.append(("torch eager vs onnxruntime (same model, same threads)", head, rows))
    met = {True: "yes", False: "NO", None: "not measured"}
    rows = [[t["target"], _fmt(t["measured"]), met[t["met"]]] for t in doc["targets"]]
    title = f"Targets of issue 6 (1 worker, {doc['threads']} onnxruntime thread(s); the issue's are per core)"
    out.append((title, ["target", "measured", "met"], rows))
    return out


def _stage_table(doc: dict) -> tuple[list[str], list[list[str]]]:
    head = ["path", "batch", *STAGES, "in app", "client", "outside app"]
    rows = []
    for path, cells in doc["stages"].items():
        for b, st in cells.items():
            app = st.get("request")
            client = doc["http"][path][b]["mean_ms"]
            outside = f"{client - app:.3f}" if app is not None else "-"
            rows.append([path, b, *(_fmt(st.get(s)) for s in STAGES), _fmt(app), f"{client:.3f}", outside])
    return head, rows


def _sweep_table(doc: dict) -> tuple[list[str], list[list[str]]]:
    sweep = doc["batching"]
    head = ["offered/s"] + [f"{k} {mode}" for mode in ("off", "on") for k in ("ok/s", "p50", "p99", "err %", "lag p99")]
    by_rate: dict[float, list[str]] = {}
    for i, mode in enumerate(("off", "on")):
        for s in sweep[mode]["runs"]:
            row = by_rate.setdefault(s["target_rate"], ["-"] * 10)
            lat = s["latency_ms"]
            row[5 * i : 5 * i + 5] = [
                f"{s['achieved_rate']:.0f}",
                _fmt(lat["p50"]),
                _fmt(lat["p99"]),
                f"{100 * s['error_fraction']:.2f}",
                _fmt(s["dispatch_lag_ms"]["p99"]),
            ]
    return head, [[f"{r:g}", *row] for r, row in sorted(by_rate.items())]


def knee_lines(doc: dict) -> list[str]:
    sweep, out = doc["batching"], []
    for mode in ("off", "on"):
        s = sweep[mode]
        knee = f"{s['knee_rate']:g} req/s" if s["knee_rate"] else "none of the offered rates"
        bound = " (at least: the highest rate offered still met it)" if s["knee_is_lower_bound"] else ""
        ratio = f", {s['knee_ratio_to_floor']:.3f}x the batch-1 floor" if s["knee_ratio_to_floor"] else ""
        out.append(f"knee, micro-batching {mode}: {knee}{bound}{ratio}")
    for mode in ("off", "on"):
        st = sweep[mode]["stages"]
        means = ", ".join(f"{k} {st[k]:.3f}" for k in (*STAGES, "request") if k in st)
        out.append(f"service stage means over the sweep, micro-batching {mode} (ms per request): {means}")
    out.append(
        f"knee ratio on/off: {_fmt(sweep['knee_ratio_on_off'])} (p99 <= {sweep['slo_ms']:g} ms, "
        f"errors <= {100 * sweep['max_errors']:g} %)"
    )
    return out


def _num(v: float) -> str:
    return f"{v / 1e6:.2f}M" if v >= 1e6 else f"{v / 1e3:.1f}k" if v >= 1e3 else f"{v:.0f}"


def _ratio(cell: dict) -> str:
    return f"{cell['ratio_to_floor']:.3f} ({_num(cell['rows_per_s'])})"


def _pp(cell: dict) -> str:
    return f"{cell['p50_ms']:.3f} / {cell['p99_ms']:.3f}"


def _fmt(v) -> str:
    return "-" if v is None else f"{v:.3f}" if isinstance(v, float) else str(v)


def progress_line(doc: dict, b: int) -> str:
    cells = ", ".join(
        f"{p} {doc['http'][p][str(b)]['rows_per_s'] / doc['floor'][str(b)]['rows_per_s']:.2f}x" for p in doc["http"]
    )
    return f"batch {b}: floor {_num(doc['floor'][str(b)]['rows_per_s'])} rows/s; {cells}"


def sweep_line(s: dict) -> str:
    return (
        f"{s['target_rate']:g}/s offered, {s['achieved_rate']:.0f}/s ok, p50 {_fmt(s['latency_ms']['p50'])} ms, "
        f"p99 {_fmt(s['latency_ms']['p99'])} ms, errors {100 * s['error_fraction']:.2f} %"
    )


# ---------------------------------------------------------------- rendering


def _text(table: Table) -> str:
    title, head, rows = table
    widths = [max(len(str(r[i])) for r in [head, *rows]) for i in range(len(head))]
    lines = [title, "  ".join(h.rjust(w) for h, w in zip(head, widths, strict=True))]
    lines += ["  ".join(str(c).rjust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    return "\n".join(lines)


def _markdown(table: Table) -> str:
    title, head, rows = table
    lines = [f"### {title}", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    return "\n".join(lines + ["| " + " | ".join(map(str, r)) + " |" for r in rows])


def text_report(doc: dict) -> str:
    parts = [_text(t) for t in tables(doc)]
    parts.insert(5, "\n".join(knee_lines(doc)))
    if "skipped" in doc["torch"]:
        parts.append(f"torch eager vs onnxruntime: skipped ({doc['torch']['skipped']})")
    return "\n\n".join(parts)


def write_markdown(doc: dict, plots: dict[str, Path], path: Path) -> None:
    """The report at `path`; the plots are copied to path.parent/figures/<stem>-<name>.png and linked."""
    figures = path.parent / "figures"
    figures.mkdir(parents=True, exist_ok=True)
    links = {}
    for name, src in plots.items():
        dst = figures / f"{path.stem.lower()}-{name}.png"
        shutil.copyfile(src, dst)
        links[name] = f"figures/{dst.name}"
    m, b = doc["machine"], doc["bundle"]
    text = [
        "# Performance",
        "",
        "Generated by `apg bench` (scripts/bench.py) from one run; regenerate it with the same command:",
        "",
        f"```bash\n{doc['command']}\n```",
        "",
        f"Bundle `{b['name']}` version `{b['version']}` (`{b.get('graph', 'model.onnx')}`), {doc['threads']} "
        f"onnxruntime thread(s); {m['cpus']} CPUs, load average {m['load_average_before']} before and "
        f"{m['load_average_after']} after (the machine is shared: ratios measured in one run are what to read, "
        f"absolute numbers move with the load); {m['platform']}, Python {m['python']}, onnxruntime "
        f"{m['onnxruntime']}, uvloop {m['uvloop']}, httptools {m['httptools']}; {doc['created_at']}, "
        f"{doc['wall_s']} s.",
        "",
        "Service settings: " + ", ".join(f"`{k}={v}`" for k, v in sorted(doc["server_env"].items()) if v) + ".",
        "",
        "- **floor**: in-process `session.run` on pre-encoded rows (the service's loader and session options).",
        "- **score-rows / score-columns / v2-json / v2-binary**: the same rows through a real `apg serve` "
        "(1 worker, `APG_INTRA_OP_THREADS` as above) on 127.0.0.1, closed loop with one keep-alive client "
        "(so rows/s at batch 1 is 1 / latency, client included).",
        "- **thin-columns**: the thinnest endpoint for the same session: one async FastAPI route, orjson parse, "
        "the bundle's encoder, `session.run`, orjson answer; no validation, metrics or middleware "
        "(scripts/bench_thin.py), served by uvicorn the same way.",
        "- **stage breakdown**: deltas of the service's own `apg_stage_duration_seconds` and "
        "`apg_request_duration_seconds` over each measurement; *outside app* = client mean − in-app mean "
        "(uvicorn, HTTP parsing, the socket, the client).",
        "- **batch-1 sweep**: scripts/loadtest.py's open-loop generator (Poisson arrivals, latency from the scheduled "
        "send) in the bench process; its own client (httpx) work is part of every latency, and *lag* says how late "
        "it started requests (large: the generator itself was short of CPU).",
        "",
    ]
    for t in tables(doc):
        text += [_markdown(t), ""]
        if t[0].startswith("Batch-1 open-loop"):
            text += ["\n".join(f"- {line}" for line in knee_lines(doc)), ""]
    if "skipped" in doc["torch"]:
        text += [f"torch eager vs onnxruntime: skipped ({doc['torch']['skipped']}).", ""]
    text += ["## Figures", ""] + [f"![{name}]({link})\n" for name, link in links.items()]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(text))
