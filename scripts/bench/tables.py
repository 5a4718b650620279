"""The tables of `apg bench`, from bench.json (after performance_report.add_ratios): each a (title, header, rows) that
performance_report prints as text and writes as markdown; and the number formats they share.

    for title, head, rows in tables(doc): ...
"""

from __future__ import annotations

from service.metrics import STAGES

MLSERVER = "mlserver-v2-json"
RANKING_SHAPES = ("rows", "columns", "ranking")
MACHINE_PATHS = ("score-columns", "v2-binary")
Table = tuple[str, list[str], list[list[str]]]  # title, header, rows


def tables(doc: dict) -> list[Table]:
    """Every table, in report order: throughput, latency, overhead, stages, the batch-1 sweep, then the sections
    measured in this run (MLServer, ranking, whole machine, torch) and the targets."""
    sizes = [str(b) for b in doc["batch_sizes"]]
    paths = list(doc["http"])
    torch = doc["torch"].get("by_batch")
    head = ["batch", "floor rows/s", *paths] + (["torch eager"] if torch else [])
    thr = [
        [b, num(doc["floor"][b]["rows_per_s"])]
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
    extra = (_saturation_table(doc), _peer_table(doc), _ranking_table(doc), *_by_id_tables(doc), _machine_table(doc))
    out += [t for t in extra if t is not None]
    if torch:
        rows = [
            [
                b,
                num(torch[b]["rows_per_s"]),
                num(doc["floor"][b]["rows_per_s"]),
                f"{torch[b]['ratio_to_floor']:.3f}",
                f"{1 / torch[b]['ratio_to_floor']:.2f}x",
                f"{torch[b]['max_abs_diff_vs_onnx']:.1e}",
            ]
            for b in sizes
        ]
        head = ["batch", "torch rows/s", "onnxruntime rows/s", "torch / floor", "onnxruntime speed-up", "max abs diff"]
        out.append(("torch eager vs onnxruntime (same model, same threads)", head, rows))
    met = {True: "yes", False: "NO", None: "not measured"}
    rows = [[t["target"], fmt(t["measured"]), met[t["met"]]] for t in doc["targets"]]
    title = f"Targets of issue 6 (1 worker unless said, {doc['threads']} onnxruntime thread(s); the issue's: per core)"
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
            rows.append([path, b, *(fmt(st.get(s)) for s in STAGES), fmt(app), f"{client:.3f}", outside])
    return head, rows


def _peer_table(doc: dict) -> Table | None:
    if MLSERVER not in doc["http"]:
        return None
    versions = doc["mlserver"]["versions"]
    title = (
        f"MLServer {versions['mlserver']} (uvloop {versions['uvloop']}) peer: its v2 endpoint on the same session "
        "and encoder, sent the v2-json requests; rows/s ratios"
    )
    ours = [p for p in ("v2-json", "score-columns", "v2-binary") if p in doc["http"]]
    head = ["batch", "mlserver rows/s", "mlserver / floor", *(f"{p} / mlserver" for p in ours)]
    head += ["p50 mlserver / v2-json (ms)", "max abs diff"]
    rows = []
    for b, cell in doc["http"][MLSERVER].items():
        ratios = [f"{doc['http'][p][b]['ratio_to_mlserver']:.2f}x" for p in ours]
        p50 = f"{cell['p50_ms']:.3f} / {doc['http']['v2-json'][b]['p50_ms']:.3f}"
        diff = f"{cell['max_abs_diff_vs_service']:.1e}"
        rows.append([b, num(cell["rows_per_s"]), f"{cell['ratio_to_floor']:.3f}", *ratios, p50, diff])
    return title, head, rows


def _ranking_table(doc: dict) -> Table | None:
    ranking = doc.get("ranking")
    if not ranking:
        return None
    title = (
        f"Ranking: one user ({', '.join(ranking['context'])}) against N items ({', '.join(ranking['items'])}), "
        "POST /score by request shape"
    )
    head = ["N", "shape", "request bytes", "bytes vs rows", "p50 / p99 (ms)", "rows/s", "ratio to floor"]
    rows = []
    for n, cells in ranking["by_n"].items():
        fl = cells["floor"]
        rows.append([n, "floor", "-", "-", _pp(fl), num(fl["rows_per_s"]), "1.000"])
        for shape in RANKING_SHAPES:
            c = cells[shape]
            size = f"{c['request_bytes']:,}"
            rows.append([n, shape, size, f"{c['bytes_vs_rows']:.3f}", _pp(c), num(c["rows_per_s"]), _to_floor(c)])
    return title, head, rows


def _by_id_tables(doc: dict) -> list[Table]:
    """Ranking by item id (scripts/bench/ranking_ids.py) and issue 23's targets, when this run measured it."""
    from scripts.bench import ranking_ids_report as report

    if not doc.get("ranking_ids"):
        return []
    said = {True: "yes", False: "NO", None: "not measured"}
    rows = [[t, fmt(v), said[ok]] for t, v, ok in report.targets(doc["ranking_ids"], doc.get("lookup"))]
    targets = ("Targets of issue 23 (ranking by id)", ["target", "measured", "met"], rows)
    return [report.table(doc["ranking_ids"]), targets]


def _saturation_table(doc: dict) -> Table | None:
    sat = doc.get("saturation")
    if not sat:
        return None
    floor = doc["floor"].get("1", {}).get("rows_per_s")
    title = (
        f"Batch 1 with the server saturated: {sat['connections']} keep-alive connections, one request in flight each "
        "(requests/s the server's core finishes; *bare* = a raw ASGI app under the same uvicorn: the HTTP stack alone; "
        "*bare-onnx* = the same plus `session.run` on one pre-encoded row: no parsing, encoding or framework)"
    )
    head = ["path", "requests/s", "ratio to the batch-1 floor", "p50 / p99 (ms)"]
    rows = [
        [name, num(c["requests_per_s"]), f"{c['requests_per_s'] / floor:.3f}" if floor else "-", _pp(c)]
        for name, c in sat["paths"].items()
    ]
    return title, head, rows


def _machine_table(doc: dict) -> Table | None:
    m = doc.get("whole_machine")
    if not m:
        return None
    w, fl = m["workers"], m["floor"]
    title = (
        f"Whole machine ({m['cpus_usable']} CPUs, never pinned): `apg serve --workers {w}` (1 onnxruntime thread "
        f"each, {w} client connections) vs the best {w}-thread floor, batch {m['batch']}"
    )
    head = ["what", "rows/s", "ratio to best floor", "p50 / p99 (ms)", "bench process CPU (cores)", "conns/worker"]
    best = fl[fl["best"]]["rows_per_s"]
    named = [
        (f"floor: {w} threads x own 1-thread session", fl["sessions"]),
        (f"floor: 1 session x {w} intra-op threads", fl["intra_op"]),
        *((f"service {p}", m[p]) for p in MACHINE_PATHS if p in m),
    ]
    rows = [
        [
            name,
            num(c["rows_per_s"]),
            f"{c['rows_per_s'] / best:.3f}",
            _pp(c),
            fmt(c.get("bench_process_cpu_cores")),
            fmt(c.get("connections_per_worker")),
        ]
        for name, c in named
    ]
    return title, head, rows


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
                fmt(lat["p50"]),
                fmt(lat["p99"]),
                f"{100 * s['error_fraction']:.2f}",
                fmt(s["dispatch_lag_ms"]["p99"]),
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
        f"knee ratio on/off: {fmt(sweep['knee_ratio_on_off'])} (p99 <= {sweep['slo_ms']:g} ms, "
        f"errors <= {100 * sweep['max_errors']:g} %)"
    )
    return out


def num(v: float) -> str:
    """1234567 → "1.23M", 12345 → "12.3k", 123 → "123"."""
    return f"{v / 1e6:.2f}M" if v >= 1e6 else f"{v / 1e3:.1f}k" if v >= 1e3 else f"{v:.0f}"


def _ratio(cell: dict) -> str:
    return f"{cell['ratio_to_floor']:.3f} ({num(cell['rows_per_s'])})"


def _to_floor(cell: dict) -> str:
    return f"{cell['ratio_to_floor']:.3f}"


def _pp(cell: dict) -> str:
    return f"{cell['p50_ms']:.3f} / {cell['p99_ms']:.3f}"


def fmt(v) -> str:
    """None → "-", a float with 3 decimals, anything else as str."""
    return "-" if v is None else f"{v:.3f}" if isinstance(v, float) else str(v)
