"""The efficiency front (issue 24, item 4): test AUC against onnxruntime latency, parameters and bundle bytes, for
base DeepFM towers of several widths and self-wise APG towers of several ranks K and widths, on ML-1M.

    apg experiment front run                      # trains the missing points, exports each to a bundle
    apg experiment front measure                  # latency of every bundle, interleaved rounds in one process
    apg experiment front report                   # docs/results/front-ml-1m.md and docs/figures/front-ml-1m.png

Every point trains with the study's budget (epochs 10, patience 2, batch 1024, lr 1e-3, split seed 0) on the seeds
asked (`--seeds`; more seeds for the best base give its interval). Latency is measured after training, on the bundles'
served graphs (model.opt.onnx), one intra-op thread, batch 1 and 1024 of the run's own test rows, in rounds that
visit every bundle in turn (so a busy spell of the shared machine hits all of them): the ratios to the study's base
tower are from one process. Resumable: runs are lines of docs/results/front/ml-1m.jsonl keyed by (point, seed);
latency is docs/results/front/latency.json.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from scripts.experiments.paired import fmt, paired, spreads

RESULTS = Path("docs/results")
RUNS = Path("runs/front")
FIGURE = Path("docs/figures/front-ml-1m.png")
DATA = "ml-1m"
BATCHES = (1, 1024)


@dataclass(frozen=True)
class Point:
    """One model of the front: the base tower (rank 0) or a self-wise APG tower of rank K."""

    hidden: tuple[int, ...]
    rank: int = 0

    @property
    def name(self) -> str:
        widths = "x".join(map(str, self.hidden))
        return f"base {widths}" if not self.rank else f"APG {widths} K={self.rank}"

    @property
    def slug(self) -> str:
        return self.name.replace(" ", "-").replace("=", "")

    @classmethod
    def parse(cls, text: str) -> Point:
        """'256x128' (a base tower) or '256x128:16' (self-wise APG, K = 16)."""
        widths, _, rank = text.partition(":")
        try:
            return cls(tuple(int(w) for w in widths.split("x")), int(rank or 0))
        except ValueError:
            raise ValueError(f"a front point is WIDTHS or WIDTHS:K, e.g. 256x128 or 256x128:16, got {text!r}") from None


DEFAULT_POINTS = "64x32,256x128,400x400x400,1024x512,256x128:4,256x128:8,256x128:16,256x128:32,1024x512:16"
REFERENCE = Point((256, 128))  # the study's base tower: latency ratios are to it


def store_path(results: Path) -> Path:
    return results / "front" / f"{DATA}.jsonl"


def latency_path(results: Path) -> Path:
    return results / "front" / "latency.json"


def read_store(path: Path) -> dict[tuple[str, int], dict]:
    if not path.exists():
        return {}
    records = (json.loads(line) for line in path.read_text().splitlines() if line.strip())
    return {(r["point"], r["seed"]): r for r in records}


def configs(point: Point, seed: int, threads: int = 1, device: str = "cpu", data: str = DATA, limit=None):
    from model.apg import APGConfig
    from model.train import TrainConfig
    from model.zoo import ModelConfig

    apg = APGConfig("self", rank=point.rank) if point.rank else APGConfig()
    model = ModelConfig("deepfm", hidden=point.hidden, apg=apg)
    train = TrainConfig(data=data, seed=seed, epochs=10, patience=2, batch_size=1024, threads=threads, device=device)
    train = replace(train, limit=limit)
    return model, train


def run(
    points: list[Point],
    seeds: tuple[int, ...],
    results: Path,
    runs: Path,
    threads: int = 1,
    device: str = "cpu",
    say=print,
    data: str = DATA,
    limit: int | None = None,
):
    """Train (and export to a bundle) every (point, seed) the store lacks, one at a time. (``data`` and ``limit``:
    for tests; the front is ML-1M's.)"""
    from model.bundle import write_bundle
    from model.train import train_run

    path = store_path(results)
    path.parent.mkdir(parents=True, exist_ok=True)
    done = read_store(path)
    for seed in seeds:
        for point in points:
            if (point.name, seed) in done:
                continue
            say(f"front: {point.name} seed {seed}")
            out = runs / f"{point.slug}-s{seed}"
            model_cfg, cfg = configs(point, seed, threads, device, data, limit)
            start = time.perf_counter()
            m = train_run(model_cfg, cfg, out, progress=False)
            bundle = write_bundle(out, out / "bundle")
            record = {
                "point": point.name,
                "hidden": list(point.hidden),
                "rank": point.rank,
                "seed": seed,
                "valid": m["valid"],
                "test": m["test"],
                "params": m["params"],
                "bundle_bytes": sum(bundle["files"].values()) + (out / "bundle" / "bundle.json").stat().st_size,
                "graph_bytes": bundle["files"].get("model.opt.onnx", bundle["files"]["model.onnx"]),
                "epochs_run": len(m["history"]),
                "adaptation": m.get("adaptation"),  # APG: spread of S per layer, AUC with S replaced by its mean
                "train_seconds": m["train_seconds"],
                "wall_seconds": round(time.perf_counter() - start, 1),
                "run_dir": str(out),
            }
            with path.open("a") as f:
                f.write(json.dumps(record) + "\n")
            done[(point.name, seed)] = record
            say(f"  test AUC {m['test']['auc']:.4f}, {record['params']:,} params, {record['epochs_run']} epochs")
    return done


def measure(results: Path, rounds: int, repeats: int, say=print) -> dict:
    """Median latency per bundle and batch over interleaved rounds (seed-1 run of each point, or its first)."""
    from features import Schema
    from features.bundle import GRAPH, OPTIMISED_GRAPH
    from model.train import load_test_split
    from scripts.experiments.complexity import latency, session

    done = read_store(store_path(results))
    chosen: dict[str, dict] = {}
    for (name, _), r in sorted(done.items(), key=lambda kv: kv[0][1]):
        chosen.setdefault(name, r)
    sessions, feeds = {}, {}
    for name, r in chosen.items():
        bundle = Path(r["run_dir"]) / "bundle"
        graph = bundle / OPTIMISED_GRAPH if (bundle / OPTIMISED_GRAPH).exists() else bundle / GRAPH
        sessions[name] = session(graph)
        x, _ = load_test_split(r["run_dir"], Schema.load(Path(r["run_dir"]) / "schema.json"))
        feeds[name] = {b: {k: v[:b] for k, v in x.items()} for b in BATCHES}
    times: dict[str, dict[int, list[float]]] = {n: {b: [] for b in BATCHES} for n in sessions}
    for i in range(rounds):
        for name in sessions:
            for b in BATCHES:
                times[name][b].append(
                    latency(sessions[name], feeds[name][b], repeats if b < 256 else max(5, repeats // 10))
                )
        say(f"front: latency round {i + 1}/{rounds}")
    out = {
        "threads": 1,
        "rounds": rounds,
        "repeats": repeats,
        "command": f"apg experiment front measure --rounds {rounds} --repeats {repeats}",
        "seconds": {n: {str(b): float(np.median(t)) for b, t in bs.items()} for n, bs in times.items()},
    }
    latency_path(results).write_text(json.dumps(out, indent=1))
    return out


def summarise(results: Path) -> dict:
    """Per point: mean test AUC (and its 95 % interval over seeds), size, latency and its ratio to the study's base;
    the best base (highest mean AUC) and the cheapest APG point (batch-1024 latency) whose mean AUC lies within the
    best base's interval."""
    done = read_store(store_path(results))
    lat = json.loads(latency_path(results).read_text())["seconds"] if latency_path(results).exists() else {}
    points: dict[str, dict] = {}
    for (name, _), r in sorted(done.items()):
        p = points.setdefault(name, {"rank": r["rank"], "hidden": r["hidden"], "runs": []})
        p["runs"].append(r)
    for name, p in points.items():
        aucs = [r["test"]["auc"] for r in p["runs"]]
        p["auc"] = paired(aucs)  # one-sample: the mean and its t interval over seeds
        p["params"], p["bundle_bytes"] = p["runs"][0]["params"], p["runs"][0]["bundle_bytes"]
        adapted = [r["adaptation"] for r in p["runs"] if r.get("adaptation")]
        p["mean_s_cost"] = paired([a["mean_s_cost"] for a in adapted]) if adapted else None
        p["spread"] = spreads(adapted)  # the runs' S spread per layer
        p["latency"] = {int(b): s for b, s in lat.get(name, {}).items()}
    ref = points.get(REFERENCE.name, {}).get("latency", {})
    for p in points.values():
        p["ratio"] = {b: s / ref[b] for b, s in p["latency"].items() if ref.get(b)}
    bases = {n: p for n, p in points.items() if not p["rank"]}
    best = max(bases, key=lambda n: bases[n]["auc"]["mean"]) if bases else None
    out = {"points": points, "best_base": best, "cheapest_apg": None, "best_apg": None, "best_apg_ratio": None}
    apg = {n: p for n, p in points.items() if p["rank"]}

    def beaten(p: dict) -> bool:  # a base tower at least as accurate and at least as fast at batch 1024
        at = p["latency"].get(1024)
        return at is not None and any(
            b["auc"]["mean"] >= p["auc"]["mean"] and b["latency"].get(1024, float("inf")) <= at for b in bases.values()
        )

    out["dominated"] = [n for n, p in apg.items() if beaten(p)]
    if apg:
        out["best_apg"] = top = max(apg, key=lambda n: apg[n]["auc"]["mean"])
        if best and apg[top]["latency"].get(1024) and bases[best]["latency"].get(1024):
            out["best_apg_ratio"] = apg[top]["latency"][1024] / bases[best]["latency"][1024]
    if best and bases[best]["auc"]["n"] >= 2:
        low = bases[best]["auc"]["ci"][0]
        close = [n for n, p in points.items() if p["rank"] and p["auc"]["mean"] >= low and p["latency"].get(1024)]
        if close:
            cheapest = min(close, key=lambda n: points[n]["latency"][1024])
            best_latency = bases[best]["latency"].get(1024)
            out["cheapest_apg"] = cheapest
            out["cheapest_ratio"] = points[cheapest]["latency"][1024] / best_latency if best_latency else None
    return out


def report(results: Path, figure: Path) -> str:
    s = summarise(results)
    lines = [
        "# The efficiency front on ML-1M: AUC against latency and size",
        "",
        f"Generated by `apg experiment front report` from `{store_path(results)}` and `{latency_path(results)}`; "
        "runs by `apg experiment front run` (DeepFM, the study's budget and split; self-wise APG at rank K), "
        "latency by `apg experiment front measure` (onnxruntime, one thread, the served graph, medians over "
        f"interleaved rounds; ratios to the study's base tower {REFERENCE.name}, measured in the same process). AUC "
        "in points, the mean over the point's seeds with its 95 % t interval where it has several.",
        "",
        "APG rows also give their adaptation on the test rows: the spread of S_i per layer and the mean-S cost (test "
        "AUC minus the AUC with every S_i replaced by its mean).",
        "",
        "| point | seeds | test AUC | params | bundle KB | ms, batch 1 | ms, batch 1024 | × base 256x128 (1 / 1024) "
        "| spread S (layers) | mean-S cost |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, p in sorted(s["points"].items(), key=lambda kv: (kv[1]["rank"] > 0, kv[1]["params"])):
        a = p["auc"]
        auc = f"{a['mean'] * 100:.2f}" + (f" [{a['ci'][0] * 100:.2f}, {a['ci'][1] * 100:.2f}]" if a["n"] >= 2 else "")
        ms = [f"{p['latency'][b] * 1000:.3f}" if b in p["latency"] else "–" for b in BATCHES]
        ratio = " / ".join(f"{p['ratio'][b]:.2f}" if b in p["ratio"] else "–" for b in BATCHES)
        lines.append(
            f"| {name} | {a['n']} | {auc} | {p['params']:,} | {p['bundle_bytes'] / 1024:.0f} | {ms[0]} | {ms[1]} | "
            f"{ratio} | {' / '.join(f'{x:.3f}' for x in p['spread']) or '–'} | "
            f"{fmt(p['mean_s_cost']) if p['mean_s_cost'] else '–'} |"
        )
    lines.append("")
    best = s["best_base"]
    if best:
        lines.append(f"Best base: {best}.")
    if s["cheapest_apg"]:
        lines.append(
            f"Cheapest APG model whose AUC lies within the best base's interval: {s['cheapest_apg']}, at "
            f"{s['cheapest_ratio']:.2f}× the best base's latency at batch 1024 (target ≤ 0.6×)."
        )
    elif best and s["points"][best]["auc"]["n"] < 2:
        lines.append(f"{best} has one seed: no interval to compare with (`apg experiment front run --seeds 2,3`).")
    elif best:
        lo, hi = s["points"][best]["auc"]["ci"]
        line = f"No APG point's mean AUC lies within the best base's 95 % interval [{lo * 100:.2f}, {hi * 100:.2f}]"
        if s["best_apg_ratio"] is not None:
            top = s["best_apg"]
            line += (
                f"; the best APG point, {top} ({s['points'][top]['auc']['mean'] * 100:.2f}), runs at "
                f"{s['best_apg_ratio']:.2f}× the best base's latency at batch 1024"
            )
        lines.append(line + " (target: an APG model inside the interval at ≤ 0.6×: not met).")
    plot(s, figure)
    lines += ["", f"![efficiency front]({_relative(figure, results)})", ""]
    return "\n".join(lines)


def plot(s: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter, LogLocator

    points = {n: p for n, p in s["points"].items() if p["latency"].get(1024)}
    if not points:
        return
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    for ax, (xlabel, x_of) in zip(
        axes,
        [
            ("ms per batch of 1024 (onnxruntime, 1 thread)", lambda p: p["latency"][1024] * 1000),
            ("parameters", lambda p: p["params"]),
        ],
        strict=True,
    ):
        for name, p in points.items():
            a = p["auc"]
            yerr = [[(a["mean"] - a["ci"][0]) * 100], [(a["ci"][1] - a["mean"]) * 100]] if a["n"] >= 2 else None
            color = "tab:orange" if p["rank"] else "tab:blue"
            ax.errorbar(x_of(p), a["mean"] * 100, yerr=yerr, fmt="o", color=color, capsize=3)
            ax.annotate(name, (x_of(p), a["mean"] * 100), fontsize=7, xytext=(4, 3), textcoords="offset points")
        best = s["points"].get(s["best_base"]) if s["best_base"] else None
        if best and best["auc"]["n"] >= 2:
            ax.axhspan(best["auc"]["ci"][0] * 100, best["auc"]["ci"][1] * 100, color="tab:blue", alpha=0.12)
        ax.set_xscale("log")
        ax.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}" if v < 1e4 else f"{v / 1e3:g}k"))
        ax.xaxis.set_minor_formatter(FuncFormatter(lambda v, _: ""))
        ax.set_xlabel(xlabel)
    axes[0].set_ylabel("test AUC (points)")
    fig.suptitle(
        "ML-1M DeepFM: base towers (blue) and self-wise APG (orange); band: the best base's 95 % CI", fontsize=10
    )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _relative(path: Path, start: Path) -> str:
    import os

    return os.path.relpath(path, start)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "what",
        choices=["run", "measure", "report"],
        help="train the missing points, time the bundles, or write the report",
    )
    p.add_argument(
        "--points",
        default=DEFAULT_POINTS,
        help="comma list of WIDTHS (a base tower) or WIDTHS:K (self-wise APG of rank K)",
    )
    p.add_argument("--seeds", default="1", help="training seeds (more for the best base give its interval)")
    p.add_argument("--rounds", type=int, default=5, help="measure: interleaved rounds over every bundle")
    p.add_argument(
        "--repeats", type=int, default=200, help="measure: timed runs per round at batch 1 (a tenth at 1024)"
    )
    p.add_argument("--results", type=Path, default=RESULTS, help="where the store and the report go")
    p.add_argument("--runs", type=Path, default=RUNS, help="run directories and their bundles")
    p.add_argument("--figure", type=Path, default=FIGURE, help="the plot")
    p.add_argument("--threads", type=int, default=1, help="torch threads for training")
    p.add_argument("--device", default="cpu", help="torch device for training (cuda where a GPU is lent)")


def run_from_args(args) -> int:
    points = [Point.parse(t.strip()) for t in args.points.split(",") if t.strip()]
    seeds = tuple(int(s) for s in args.seeds.split(",") if s)
    if args.what == "run":
        run(points, seeds, args.results, args.runs, args.threads, args.device)
    elif args.what == "measure":
        measure(args.results, args.rounds, args.repeats)
    text = report(args.results, args.figure)
    (args.results / f"front-{DATA}.md").write_text(text)
    print(text)
    return 0
