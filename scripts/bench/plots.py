"""The PNG plots of `apg bench`: throughput and p50 latency per path against the floor, the service's stage
breakdown, the batch-1 sweep with micro-batching off and on, and (when measured) the ranking request shapes.

    files = write_plots(doc, Path("runs/bench"))   # {"throughput": .../throughput.png, ...}
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from service.metrics import STAGES


def write_plots(doc: dict, out: Path) -> dict[str, Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    files = {}
    plots = [
        ("throughput", _throughput, (8, 5)),
        ("latency", _latency, (8, 5)),
        ("stages", _stages, (14, 5.5)),
        ("batching", _batching, (8, 5)),
    ]
    if doc.get("ranking"):
        plots.append(("ranking", _ranking, (12, 5)))
    for name, draw, size in plots:
        fig = plt.figure(figsize=size)
        draw(fig, doc)
        fig.tight_layout()
        files[name] = out / f"{name}.png"
        fig.savefig(files[name], dpi=110)
        plt.close(fig)
    return files


def _series(doc: dict) -> list[tuple[str, dict, dict]]:
    """(label, cells by batch, line style) for the floor, each HTTP path and torch."""
    out = [("floor (in-process onnxruntime)", doc["floor"], {"color": "black", "lw": 2.5, "ls": "--"})]
    out += [(p, cells, {"marker": "o"}) for p, cells in doc["http"].items()]
    if doc["torch"].get("by_batch"):
        out.append(("torch eager", doc["torch"]["by_batch"], {"color": "grey", "ls": ":", "marker": "s"}))
    return out


def _per_batch(fig, doc: dict, key: str, ylabel: str, title: str) -> None:
    """One line per path (floor, HTTP paths, torch) of ``cells[batch][key]`` against the batch size."""
    ax = fig.subplots()
    sizes = doc["batch_sizes"]
    for label, cells, style in _series(doc):
        ax.plot(sizes, [cells[str(b)][key] for b in sizes], label=label, **style)
    ax.set(xscale="log", yscale="log", xlabel="batch size (rows per call)", ylabel=ylabel, title=title)
    ax.set_xticks(sizes, [str(b) for b in sizes])
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)


def _throughput(fig, doc: dict) -> None:
    title = f"Throughput per path vs the floor ({doc['threads']} onnxruntime thread(s), 1 worker)"
    _per_batch(fig, doc, "rows_per_s", "rows/s", title)


def _latency(fig, doc: dict) -> None:
    title = "Latency per request, p50 (closed loop, one keep-alive client)"
    _per_batch(fig, doc, "p50_ms", "p50 latency per call (ms)", title)


def _stages(fig, doc: dict) -> None:
    """One panel per service path: each batch size's client-measured mean latency split by stage (%)."""
    parts = (*STAGES, "rest of the app", "outside the app")
    axes = fig.subplots(1, len(doc["stages"]), sharey=True, squeeze=False)[0]
    for ax, (path, cells) in zip(axes, doc["stages"].items(), strict=True):
        shares, labels = [], []
        for b, st in cells.items():
            client = doc["http"][path][b]["mean_ms"]
            app = st.get("request", 0.0)
            values = [st.get(s, 0.0) for s in STAGES]
            values += [max(app - sum(values), 0.0), max(client - app, 0.0)]
            shares.append([100 * v / client for v in values])
            labels.append(f"{b}\n{client:.2f} ms")
        x, bottom = np.arange(len(labels)), np.zeros(len(labels))
        for i, key in enumerate(parts):
            values = np.array([row[i] for row in shares])
            ax.bar(x, values, bottom=bottom, label=key, color=f"C{i}")
            bottom += values
        ax.set_xticks(x, labels, fontsize=7)
        ax.set(title=path, xlabel="batch size, mean latency", ylim=(0, 105))
    axes[0].set_ylabel("% of the mean request latency (client side)")
    axes[-1].legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.suptitle("Where a request's time goes (the service's /metrics stage means over each measurement)")


def _batching(fig, doc: dict) -> None:
    ax = fig.subplots()
    from matplotlib.ticker import NullFormatter, ScalarFormatter

    sweep = doc["batching"]
    for mode, color, marker in (("off", "tab:red", "o"), ("on", "tab:green", "s")):
        runs = sweep[mode]["runs"]
        rates = [s["target_rate"] for s in runs]
        for q, ls in (("p50", ":"), ("p99", "-")):
            values = [s["latency_ms"][q] if s["latency_ms"][q] is not None else np.nan for s in runs]
            ax.plot(rates, values, ls=ls, color=color, marker=marker, label=f"{q}, micro-batching {mode}")
        if sweep[mode]["knee_rate"]:
            knee = sweep[mode]["knee_rate"]
            ax.axvline(knee, color=color, ls="--", alpha=0.4, label=f"knee, batching {mode}: {knee:g}/s")
    ax.axhline(sweep["slo_ms"], color="grey", ls="--", label=f"SLO p99 {sweep['slo_ms']:g} ms")
    ax.set(
        xscale="log",
        yscale="log",
        xlabel="offered rate (requests/s, batch 1, Poisson)",
        ylabel="latency from scheduled send (ms)",
        title="Batch-1 open-loop sweep: micro-batching off vs on",
    )
    ax.set_xticks(sweep["rates"], [f"{r:g}" for r in sweep["rates"]])
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.yaxis.set_major_formatter(ScalarFormatter())
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)


def _ranking(fig, doc: dict) -> None:
    """Request bytes and p50 latency against the number of candidates, one line per request shape."""
    from matplotlib.ticker import NullFormatter, ScalarFormatter

    ranking = doc["ranking"]
    sizes = [int(n) for n in ranking["by_n"]]
    cells = [ranking["by_n"][str(n)] for n in sizes]
    left, right = fig.subplots(1, 2)
    for i, shape in enumerate(("rows", "columns", "ranking")):
        style = {"marker": "o", "color": f"C{i}", "label": shape}
        left.plot(sizes, [c[shape]["request_bytes"] / 1e3 for c in cells], **style)
        right.plot(sizes, [c[shape]["p50_ms"] for c in cells], **style)
    right.plot(sizes, [c["floor"]["p50_ms"] for c in cells], color="black", ls="--", lw=2, label="floor")
    left.set(ylabel="request size (kB)", title="Request bytes per shape")
    right.set(ylabel="p50 latency per request (ms)", title="Latency per shape (closed loop, one client)")
    for ax in (left, right):
        ax.set(xscale="log", yscale="log", xlabel="candidates per request (one user)")
        ax.set_xticks(sizes, [str(n) for n in sizes])
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.yaxis.set_major_formatter(ScalarFormatter())
        ax.yaxis.set_minor_formatter(NullFormatter())
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle("Ranking: one user against N items, as rows, columns and context + candidates")
