"""APG's positive control (issue 24, item 3): the synthetic log, whose clicks come from a teacher whose weights differ
by segment (`apg data synth --heterogeneity H`), so the best possible AUC is known and sample-specific parameters
have something to find.

    apg experiment control run --heterogeneity 0,1 --arms base,self,group,static --seeds 1,2,3
    apg experiment control report                    # docs/results/control.md and docs/figures/control.png

At each H one log (generator seed 0, the same rows for every run) and one model (DeepFM by default); the arms are
the base, self-wise APG, group-wise APG keyed on the teacher's own group field (`segment`, with its own condition
embedding) and static-S (one learned S for every row: a low-rank tower without adaptation). Seeds vary the
initialisation and the batch order only, so each arm minus the base on a seed is a paired difference. Every AUC is
also given as the share of the base's gap to the Bayes-optimal AUC that it closes. Resumable: each finished run is
a line of docs/results/control/synth.jsonl keyed by (H, rows, model, arm, seed, budget); a run already there is
skipped.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path

from scripts.experiments.paired import fmt, paired

RESULTS = Path("docs/results")
ARMS = {  # arm -> APGConfig keywords
    "base": {"condition": "none"},
    "self": {"condition": "self"},
    "group": {"condition": "group", "group_field": "segment", "cond_embed": True},
    "static": {"condition": "static"},
}


@dataclass(frozen=True)
class Plan:
    rows: int = 1_000_000
    heterogeneity: tuple[float, ...] = (0.0, 1.0)
    arms: tuple[str, ...] = tuple(ARMS)
    seeds: tuple[int, ...] = (1, 2, 3)
    model: str = "deepfm"
    epochs: int = 2  # with sparse id embeddings the best epoch is the first (39 of the 40 stored runs)
    patience: int = 1
    batch_size: int = 1024
    lr: float = 1e-3
    logs: Path = Path(".data/control")
    runs: Path = Path("runs/control")
    results: Path = RESULTS
    threads: int = 1
    device: str = "cpu"

    def budget(self) -> dict:
        return {
            "model": self.model,
            "epochs": self.epochs,
            "patience": self.patience,
            "batch_size": self.batch_size,
            "lr": self.lr,
            "sparse_embeddings": True,
        }


def store_path(results: Path) -> Path:
    return results / "control" / "synth.jsonl"


def key(h: float, rows: int, arm: str, seed: int, budget: dict) -> str:
    return json.dumps({"heterogeneity": h, "rows": rows, "arm": arm, "seed": seed, "budget": budget}, sort_keys=True)


def read_store(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


def log_for(plan: Plan, h: float) -> Path:
    from scripts.data.synth import SynthConfig, synthesize

    out = plan.logs / f"synth-h{h:g}-{plan.rows}"
    if not (out / "teacher.json").exists():
        synthesize(SynthConfig(rows=plan.rows, heterogeneity=h, seed=0), out)
    return out


def run(plan: Plan, say=print) -> list[dict]:
    """Trains every (H, arm, seed) the store lacks, one at a time; returns the store's records."""
    path = store_path(plan.results)
    path.parent.mkdir(parents=True, exist_ok=True)
    done = {key(r["heterogeneity"], r["rows"], r["arm"], r["seed"], r["budget"]) for r in read_store(path)}
    for h in plan.heterogeneity:
        log = log_for(plan, h)
        for seed in plan.seeds:
            for arm in plan.arms:
                if key(h, plan.rows, arm, seed, plan.budget()) in done:
                    continue
                say(f"control: H={h:g} {plan.model}/{arm} seed {seed}")
                record = train_one(plan, log, h, arm, seed)
                with path.open("a") as f:
                    f.write(json.dumps(record) + "\n")
                say(f"  test AUC {record['test']['auc']:.4f} (Bayes {record['bayes']['bayes_auc']:.4f})")
    return read_store(path)


def run_dir(plan: Plan, h: float, arm: str, seed: int) -> Path:
    """Where one run trains: a log size other than the control's 10^6 rows has directories of its own."""
    size = "" if plan.rows == Plan().rows else f"-{plan.rows}"
    return plan.runs / f"h{h:g}{size}" / f"{plan.model}-{arm}-s{seed}"


def train_one(plan: Plan, log: Path, h: float, arm: str, seed: int) -> dict:
    from model.apg import APGConfig
    from model.scale import ScaleConfig, train_log_run
    from model.train import TrainConfig
    from model.zoo import ModelConfig

    model_cfg = ModelConfig(plan.model, apg=APGConfig(**ARMS[arm]))
    cfg = TrainConfig(
        data=str(log),
        seed=seed,
        epochs=plan.epochs,
        patience=plan.patience,
        batch_size=plan.batch_size,
        lr=plan.lr,
        threads=plan.threads,
        device=plan.device,
    )
    scale = ScaleConfig(sparse_embeddings=True, checkpoint_steps=0)
    m = train_log_run(model_cfg, cfg, scale, run_dir(plan, h, arm, seed), progress=False)
    return {
        "heterogeneity": h,
        "rows": plan.rows,
        "arm": arm,
        "seed": seed,
        "budget": plan.budget(),
        "test": m["test"],
        "valid": m["valid"],
        "bayes": m["teacher"]["test"],
        "adaptation": m.get("adaptation"),
        "best_epoch": m["best_epoch"],
        "train_seconds": m["train_seconds"],
        "params": m["params"],
    }


def sizes(records: list[dict], budget: dict) -> list[int]:
    """The log sizes (rows) the store holds runs of at `budget`, smallest first."""
    return sorted({r["rows"] for r in records if r["budget"] == budget})


def summarise(records: list[dict], budget: dict, size: int) -> dict:
    """Per H and arm of the `size`-row logs: mean test AUC, the paired lift over the base, and the share of the
    base's gap to the Bayes-optimal AUC that the arm closes (paired per seed: (arm - base) / (bayes - base))."""
    out: dict = {}
    rows = [r for r in records if r["budget"] == budget and r["rows"] == size]
    for h in sorted({r["heterogeneity"] for r in rows}):
        at = {(r["arm"], r["seed"]): r for r in rows if r["heterogeneity"] == h}
        base = {s: r for (a, s), r in at.items() if a == "base"}
        if not base:  # nothing to pair with yet (a run of other arms only): not reported
            continue
        table = {}
        for arm in [a for a in ARMS if any(k[0] == a for k in at)]:
            seeds = sorted(s for (a, s) in at if a == arm and s in base)
            if not seeds:
                continue
            aucs = [at[(arm, s)]["test"]["auc"] for s in seeds]
            lift = [at[(arm, s)]["test"]["auc"] - base[s]["test"]["auc"] for s in seeds]
            gap = [
                (at[(arm, s)]["test"]["auc"] - base[s]["test"]["auc"])
                / (base[s]["bayes"]["bayes_auc"] - base[s]["test"]["auc"])
                for s in seeds
            ]
            adaptations = [at[(arm, s)]["adaptation"] for s in seeds if at[(arm, s)].get("adaptation")]
            costs = [a["mean_s_cost"] for a in adaptations]
            table[arm] = {
                "seeds": seeds,
                "auc": sum(aucs) / len(aucs) if aucs else None,
                "lift": paired(lift),
                "gap_closed": paired(gap),
                "mean_s_cost": paired(costs) if costs else None,
                "adaptations": adaptations,
            }
        out[h] = {"bayes_auc": next(iter(base.values()))["bayes"]["bayes_auc"], "arms": table}
    return out


def report(plan: Plan) -> str:
    """Every log size the store holds at the plan's budget, each H a table."""
    records = read_store(store_path(plan.results))
    lines = [
        "# APG's positive control: the synthetic log with a known teacher",
        "",
        f"Generated by `apg experiment control report` from `{store_path(plan.results)}`; each section's runs by "
        f"the command under its heading. {plan.model}, {plan.budget()}. Lifts in AUC points, paired on seeds, "
        "95 % t intervals; the gap closed is (arm - base) / (Bayes-optimal - base) per seed.",
        "",
    ]
    for size, h, row in sections(records, plan.budget()):
        seeds = sorted({s for a in row["arms"].values() for s in a["seeds"]})
        lines += [
            f"## {size:,} rows, heterogeneity {h:g} (Bayes-optimal test AUC {row['bayes_auc']:.4f})",
            "",
            f"`apg experiment control run --rows {size} --heterogeneity {h:g} --arms {','.join(row['arms'])} "
            f"--seeds {','.join(map(str, seeds))} --epochs {plan.epochs} --patience {plan.patience} "
            f"--model {plan.model}`",
            "",
            "| arm | seeds | test AUC | lift over base | gap to Bayes closed | mean-S cost |",
            "|---|---|---|---|---|---|",
        ]
        for arm, a in row["arms"].items():
            same = arm == "base"
            cost = fmt(a["mean_s_cost"]) if a["mean_s_cost"] else "–"
            lines.append(
                f"| {arm} | {len(a['seeds'])} | {a['auc']:.4f} | {'–' if same else fmt(a['lift'])} | "
                f"{'–' if same else fmt(a['gap_closed'], 100) + ' %'} | {cost} |"
            )
        lines.append("")
    return "\n".join(lines)


def sections(records: list[dict], budget: dict) -> list[tuple[int, float, dict]]:
    """(rows, H, summary) for every log size and heterogeneity stored at `budget`."""
    return [(n, h, row) for n in sizes(records, budget) for h, row in summarise(records, budget, n).items()]


def plot(plan: Plan, path: Path) -> None:
    """Each arm's paired lift over the base with its 95 % CI, one panel per log size and heterogeneity."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    s = sections(read_store(store_path(plan.results)), plan.budget())
    if not s:
        return
    fig, axes = plt.subplots(1, len(s), figsize=(max(6.5, 4.5 * len(s)), 3.6), sharey=True, squeeze=False)
    for ax, (size, h, row) in zip(axes[0], s, strict=True):
        arms = [a for a in row["arms"] if a != "base"]
        means = [row["arms"][a]["lift"]["mean"] * 100 for a in arms]
        lows = [row["arms"][a]["lift"]["ci"][0] * 100 for a in arms]
        highs = [row["arms"][a]["lift"]["ci"][1] * 100 for a in arms]
        errors = [
            [m - lo if lo == lo else 0 for m, lo in zip(means, lows, strict=True)],
            [hi - m if hi == hi else 0 for m, hi in zip(means, highs, strict=True)],
        ]
        ax.bar(arms, means, yerr=errors, capsize=4, color="tab:blue")
        ax.axhline(0, color="black", linewidth=0.8)
        gap = (row["bayes_auc"] - row["arms"]["base"]["auc"]) * 100
        title = f"{size:,} rows, H = {h:g}: base {row['arms']['base']['auc']:.4f}, {gap:.2f} pts below Bayes"
        ax.set_title(title, fontsize=9)
        ax.set_ylabel("test AUC lift over the base (points)")
    fig.suptitle(f"Positive control: {plan.model} on the synthetic log, paired seeds, 95 % CI", fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)


def add_arguments(p: argparse.ArgumentParser) -> None:
    d = Plan()
    p.add_argument("what", choices=["run", "report"], help="train the missing runs, or write the report")
    p.add_argument("--rows", type=int, default=d.rows, help="rows of each synthetic log")
    p.add_argument("--heterogeneity", default="0,1", help="the logs' H values, comma-separated")
    p.add_argument("--arms", default=",".join(d.arms), help=f"comma list of {', '.join(ARMS)}")
    p.add_argument("--seeds", default="1,2,3", help="training seeds (the log's generator seed is 0)")
    p.add_argument("--model", default=d.model, help="base model")
    p.add_argument("--epochs", type=int, default=d.epochs, help="epochs at most")
    p.add_argument("--patience", type=int, default=d.patience, help="early stopping patience")
    p.add_argument("--logs", type=Path, default=d.logs, help="where the synthetic logs go (made once)")
    p.add_argument("--runs", type=Path, default=d.runs, help="where run directories go")
    p.add_argument("--results", type=Path, default=d.results, help="where the store and the report go")
    p.add_argument("--figure", type=Path, default=Path("docs/figures/control-synth.png"), help="the plot")
    p.add_argument("--threads", type=int, default=d.threads, help="torch threads")
    p.add_argument("--device", default=d.device, help="torch device (cuda where a GPU is lent)")


def run_from_args(args) -> int:
    arms = tuple(a for a in args.arms.split(",") if a)
    unknown = set(arms) - set(ARMS)
    if unknown:
        raise ValueError(f"unknown arms {sorted(unknown)} (known: {', '.join(ARMS)})")
    plan = Plan(
        rows=args.rows,
        heterogeneity=tuple(float(h) for h in args.heterogeneity.split(",")),
        arms=arms,
        seeds=tuple(int(s) for s in args.seeds.split(",")),
        model=args.model,
        epochs=args.epochs,
        patience=args.patience,
        logs=args.logs,
        runs=args.runs,
        results=args.results,
        threads=args.threads,
        device=args.device,
    )
    if args.what == "run":
        run(plan)
    text = report(plan)
    (plan.results / "control.md").write_text(text + f"\n![paired lifts]({_relative(args.figure, plan.results)})\n")
    plot(plan, args.figure)
    print(text)
    return 0


def _relative(path: Path, start: Path) -> str:
    import os

    return os.path.relpath(path, start)
