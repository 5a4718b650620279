"""What `apg bench` reports: ratios to the floor (and to the thin app, MLServer, the whole machine's floor), the
targets of issue 6, progress lines, and the tables printed and written as a markdown report. The tables themselves
are built in tables.py, the plots in plots.py.

    doc = add_ratios(doc)              # ratio_to_floor, p50_overhead_ms, ratio_to_thin/_mlserver, knee ratios, targets
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

from scripts.bench.plots import write_plots
from scripts.bench.tables import MACHINE_PATHS, MLSERVER, RANKING_SHAPES, Table, fmt, knee_lines, num, tables

__all__ = [
    "add_ratios",
    "header",
    "progress_line",
    "ranking_lines",
    "sweep_line",
    "tables",
    "text_report",
    "write_markdown",
    "write_plots",
]


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
        "ranking_sizes": list(cfg.ranking),
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
    peer = doc["http"].get(MLSERVER, {})
    for path, cells in doc["http"].items():
        for b, cell in cells.items():
            cell["ratio_to_floor"] = round(cell["rows_per_s"] / floor[b]["rows_per_s"], 4)
            cell["p50_overhead_ms"] = round(cell["p50_ms"] - floor[b]["p50_ms"], 4)
            if path != "thin-columns" and b in thin:
                cell["ratio_to_thin"] = round(cell["rows_per_s"] / thin[b]["rows_per_s"], 4)
            if path not in ("thin-columns", MLSERVER) and b in peer:
                cell["ratio_to_mlserver"] = round(cell["rows_per_s"] / peer[b]["rows_per_s"], 4)
    for cells in doc.get("ranking", {}).get("by_n", {}).values():
        rows_bytes = cells["rows"]["request_bytes"]
        for shape in RANKING_SHAPES:
            cells[shape]["ratio_to_floor"] = round(cells[shape]["rows_per_s"] / cells["floor"]["rows_per_s"], 4)
            cells[shape]["bytes_vs_rows"] = round(cells[shape]["request_bytes"] / rows_bytes, 4)
    machine = doc.get("whole_machine")
    if machine:
        best = machine["floor"][machine["floor"]["best"]]["rows_per_s"]
        for path in (p for p in MACHINE_PATHS if p in machine):
            machine[path]["ratio_to_floor"] = round(machine[path]["rows_per_s"] / best, 4)
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

    saturated = doc.get("saturation") or {}

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
            f"score-rows at batch 1: >= 8000 requests/s per core ({saturated.get('connections')} in flight)",
            saturated.get("paths", {}).get("score-rows", {}).get("requests_per_s"),
            8000,
            ">=",
        ),
    ]
    rows += [
        (
            f"v2-json at batch {b}: rows/s >= {bound:g}x MLServer's v2 endpoint (same requests)",
            cell("v2-json", b, "ratio_to_mlserver"),
            bound,
            ">=",
        )
        for b, bound in ((1, 2.0), (1024, 1.3))
    ]
    machine = doc.get("whole_machine") or {}
    rows += [
        (
            f"whole machine, 2 workers, {p} at batch 1024: rows/s >= 0.9x the 2-thread floor",
            machine.get(p, {}).get("ratio_to_floor") if machine.get("workers") == 2 else None,
            0.9,
            ">=",
        )
        for p in ("score-columns", "v2-binary")
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


def progress_line(doc: dict, b: int) -> str:
    cells = ", ".join(
        f"{p} {doc['http'][p][str(b)]['rows_per_s'] / doc['floor'][str(b)]['rows_per_s']:.2f}x" for p in doc["http"]
    )
    return f"batch {b}: floor {num(doc['floor'][str(b)]['rows_per_s'])} rows/s; {cells}"


def ranking_lines(ranking: dict) -> list[str]:
    """One progress line per candidate count: each shape's ratio to the floor and its request size."""
    out = []
    for n, cells in ranking["by_n"].items():
        fl = cells["floor"]["rows_per_s"]
        shapes = ", ".join(
            f"{s} {cells[s]['rows_per_s'] / fl:.2f}x ({cells[s]['request_bytes'] / 1e3:.1f} kB)" for s in RANKING_SHAPES
        )
        out.append(f"ranking, {n} candidates: floor {num(fl)} rows/s; {shapes}")
    return out


def sweep_line(s: dict) -> str:
    return (
        f"{s['target_rate']:g}/s offered, {s['achieved_rate']:.0f}/s ok, p50 {fmt(s['latency_ms']['p50'])} ms, "
        f"p99 {fmt(s['latency_ms']['p99'])} ms, errors {100 * s['error_fraction']:.2f} %"
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


def _section_notes(doc: dict) -> list[str]:
    """The bullets of the optional sections this run measured."""
    out = []
    if "mlserver" in doc:
        v = doc["mlserver"]["versions"]
        out.append(
            f"- **mlserver-v2-json**: MLServer {v['mlserver']} from its own virtual environment "
            f"(`python -m scripts.bench.peers.mlserver_peer setup`: uvloop {v['uvloop']}; "
            f"onnxruntime {v['onnxruntime']}, numpy, orjson and httptools as the service's) with a small custom "
            "runtime (scripts/bench/peers/mlserver_runtime.py) that "
            "runs the service's encoder and session inline; sent the very v2-json requests, its scores checked equal "
            "to the service's before timing (*max abs diff*). One process, parallel workers off, debug (access log) "
            "off, metrics on (its default), adaptive batching off."
        )
    if doc.get("ranking"):
        out.append(
            "- **ranking**: one user against N candidate items on POST /score, as N full rows (the user's values "
            'repeated), as columns, and as `{"context": user, "candidates": items}`; the three answers are '
            "checked equal (and equal to the floor's) before timing; the floor is `session.run` on the N pre-encoded "
            "rows. User-side features: the schema's user column, features named *user*, and the MovieLens user "
            "profile (age, gender, occupation, zip code)."
        )
    if doc.get("ranking_ids"):
        out.append(
            "- **ranking by id**: the same users and candidates, the candidates' item features in the body (*full*, to "
            "the service without a store) or as ids alone to `apg serve --item-store file://…` / `redis://…` (a "
            "redis-server started here); answers checked equal to the floor's first; *lookup ms* is the service's own "
            "mean `apg_item_store_lookup_seconds` (scripts/bench/ranking_ids.py)."
        )
    if doc.get("whole_machine"):
        out.append(
            "- **whole machine**: never pinned, even with `--pin`: every CPU, the client's threads included "
            "(*bench process CPU* is the client's share; on the floor rows, the floor's own). The floor is the "
            "better of W threads on their own 1-thread sessions and one session with W intra-op threads."
        )
    return out


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
        "Generated by `apg bench` (scripts/bench/harness.py) from one run; regenerate it with the same command:",
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
        "(scripts/bench/thin.py), served by uvicorn the same way.",
        "- **stage breakdown**: deltas of the service's own `apg_stage_duration_seconds` and "
        "`apg_request_duration_seconds` over each measurement; *outside app* = client mean − in-app mean "
        "(uvicorn, HTTP parsing, the socket, the client).",
        "- **batch-1 sweep**: an open loop (Poisson arrivals on up to 64 keep-alive connections, latency from the "
        "scheduled send, so queueing is counted: `apg loadtest`'s raw client, scripts/loadtest/raw_engine.py, "
        "summarised like its runs) in the bench process; *lag* says how late it started requests (large: the client "
        "itself was short of CPU). The knee is the highest offered rate with p99 and errors within the objectives.",
        *_section_notes(doc),
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
