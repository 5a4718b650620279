"""A real cold-start test (issue 11 item 5): held-out users who keep 1-5 interactions in training, and a trained
rare/unknown-user embedding; base vs group-wise vs self-wise APG by user activity, paired on seeds.

    apg experiment cold-users run --data ml-1m --models dnn,deepfm --seeds 1,2,3
    apg experiment cold-users report --data ml-1m    # docs/results/coldstart-ml-1m.md, docs/figures/coldstart-ml-1m.png

The split (model.data.Holdout, cached with the encoded split): a seeded 10 % of the users is held out of the usual
random split; each keeps its *earliest* k interactions (k uniform in 1..5) in training, as a new user's first
ratings are all a service knows of them (a random k would let their later taste leak into training), and the rest of
their rows are the cold test set. Every other row keeps its place, so the warm users' random test rows are the
reference. Users with fewer than 6 training interactions (all held-out users) are left out of the user vocabulary:
they share the OOV row in training, which is therefore trained, and which an unseen user hits when served (the same
encoder maps both). Validation (early stopping, the learning-rate plateau) holds warm users' rows only: no choice
sees a cold user. A row's activity bucket is its user's number of training interactions.

Resumable like the study (scripts/experiments/study.py, whose arms and store this reuses): one line per finished run
in docs/results/coldstart/<data>.jsonl keyed by (model, arm, seed, budget); a run already there is skipped.
"""

from __future__ import annotations

import argparse
import os
import time
from dataclasses import asdict, dataclass, field, replace
from functools import lru_cache
from pathlib import Path

import numpy as np

from features import OOV
from model.data import Dataset, Holdout, load_dataset
from model.zoo import ModelConfig
from scripts.experiments import study
from scripts.experiments.paired import fmt, paired, pooled

RESULTS = Path("docs/results")
FIGURES = Path("docs/figures")
# Activity buckets: a user's training interactions n is in LABELS[i] where EDGES[i-1] <= n < EDGES[i]
EDGES = (1, 2, 3, 6, 50, 200)
LABELS = ("0", "1", "2", "3-5", "6-49", "50-199", "200+")
ADAPTATION_ROWS = 20_000  # cold rows (a seeded sample: the split is sorted by user) the S spread is measured on


@dataclass(frozen=True)
class Plan(study.Plan):
    arms: tuple[str, ...] = ("base", "group", "self")
    holdout: Holdout = field(default_factory=Holdout)

    def budget(self) -> dict:
        return {**super().budget(), "holdout": asdict(self.holdout)}


def store_path(results: Path, data: str) -> Path:
    return results / "coldstart" / f"{data}.jsonl"


@lru_cache(maxsize=1)
def dataset(plan: Plan) -> Dataset:
    """The encoded split with its "cold" rows, read once per process (the data cache keeps it across processes)."""
    t = plan.train
    return load_dataset(plan.data, t.schema, t.split, t.split_seed, t.limit, cache=True, holdout=plan.holdout)


def activity(data: Dataset) -> np.ndarray:
    """Each row's user's number of interactions in the training split."""
    _, codes = np.unique(data.users.astype(str), return_inverse=True)
    return np.bincount(codes[data.splits["train"]], minlength=codes.max() + 1)[codes]


def bucket_labels(n: np.ndarray) -> np.ndarray:
    return np.array(LABELS)[np.searchsorted(EDGES, n, side="right")]


def by_activity(data: Dataset, rows: np.ndarray, p: np.ndarray) -> dict[str, dict]:
    """AUC, rows and users per activity bucket of the scored ``rows`` (their predictions ``p``)."""
    from features.metrics import auc

    labels, y, users = bucket_labels(activity(data)[rows]), data.y[rows], data.users[rows].astype(str)
    out = {}
    for b in LABELS:
        m = labels == b
        if m.any():
            out[b] = {"auc": auc(y[m], p[m]), "rows": int(m.sum()), "users": len(np.unique(users[m]))}
    return out


def split_summary(data: Dataset) -> dict:
    """Rows and users per split, and how the rare-user row is used: training rows on it, cold rows that hit it."""
    user = next(f.name for f in data.schema.fields if f.min_count is not None)
    on_oov = {s: int((data.x[user][rows] == OOV).sum()) for s, rows in data.splits.items()}
    return {
        "rows": {s: len(rows) for s, rows in data.splits.items()},
        "users": {s: len(np.unique(data.users[rows].astype(str))) for s, rows in data.splits.items()},
        "rare_rows": on_oov,  # per split, rows whose user id is the shared rare/unknown row
        "user_vocab": len(data.schema.field(user).vocab),
    }


def execute(plan: Plan, model: str, arm: str, seed: int) -> dict:
    """Train one run (model.train.fit: the recipe of `apg train`) and score valid, the warm test rows and the cold."""
    from features.metrics import evaluate
    from model.adaptation import adaptation
    from model.evaluate import predict
    from model.train import count_params, fit, seed_everything
    from model.zoo import build_model

    start = time.perf_counter()
    cfg = replace(plan.train, data=plan.data, seed=seed)
    seed_everything(seed, cfg.threads)
    data = dataset(plan)
    net = build_model(data.schema, ModelConfig(model, apg=study.ARMS[arm]))
    fit_start = time.perf_counter()
    result = fit(net, data, cfg, progress=False)
    train_seconds = time.perf_counter() - fit_start
    rows = {s: data.splits[s] for s in ("valid", "test", "cold")}
    p = {s: predict(net, data.part(s)[0]) for s in rows}
    scored = np.concatenate([rows["test"], rows["cold"]])
    sample = np.random.default_rng(0).permutation(len(rows["cold"]))[:ADAPTATION_ROWS]
    x_cold, y_cold = data.part("cold")
    adapt = adaptation(net, {k: v[sample] for k, v in x_cold.items()}, y_cold[sample]) if net.cfg.apg.enabled else None
    return {
        "key": study.run_key(plan, model, arm, seed),
        "data": plan.data,
        "model": model,
        "arm": arm,
        "seed": seed,
        **{s: evaluate(data.y[r], p[s], data.users[r]) for s, r in rows.items()},
        "by_activity": by_activity(data, scored, np.concatenate([p["test"], p["cold"]])),
        "adaptation": adapt,
        "params": count_params(net),
        "train_seconds": round(train_seconds, 1),
        "wall_seconds": round(time.perf_counter() - start, 1),
        "best_epoch": result["best_epoch"],
        "epochs_run": len(result["history"]),
        "split": split_summary(data),
        "budget": plan.budget(),
    }


def run(plan: Plan, results: Path = RESULTS) -> list[dict]:
    return study.resume(store_path(results, plan.data), plan, lambda m, a, s: execute(plan, m, a, s), split="cold")


def stored(plan: Plan, results: Path) -> list[dict]:
    return [r for r in study.read_store(store_path(results, plan.data)).values() if r["budget"] == plan.budget()]


# ---------------------------------------------------------------- the report
@dataclass(frozen=True)
class Paired:
    """Stored runs by (model, arm, seed), and per model the seeds on which every arm of the plan has a run."""

    by: dict[tuple[str, str, int], dict]
    seeds: dict[str, list[int]]

    @classmethod
    def of(cls, records: list[dict], plan: Plan) -> Paired:
        by = {(r["model"], r["arm"], r["seed"]): r for r in records}
        return cls(by, {m: [s for s in plan.seeds if all((m, a, s) in by for a in plan.arms)] for m in plan.models})

    def aucs(self, model: str, arm: str, *where: str) -> dict[int, float]:
        """Seed -> test AUC at ``where`` (a split, or "by_activity" and a bucket); absent or NaN ones left out."""
        out = {}
        for s in self.seeds[model]:
            r = self.by[(model, arm, s)]
            for key in where:
                r = r.get(key) or {}
            if r.get("auc") is not None and not np.isnan(r["auc"]):
                out[s] = r["auc"]
        return out

    def lift(self, model: str, arm: str, *where: str) -> dict[int, float]:
        """Seed -> AUC of ``arm`` minus AUC of the base, on the seeds where both have one."""
        a, b = self.aucs(model, arm, *where), self.aucs(model, "base", *where)
        return {s: a[s] - b[s] for s in a if s in b}


def report(records: list[dict], plan: Plan, figure: Path | None = None, where: Path = RESULTS) -> str:
    """Markdown: per model and arm, cold and warm test AUC and the paired lift over the base; per activity bucket the
    AUC of every arm and each APG arm's paired lift with its 95 % CI; pooled over models; the figure (if given),
    linked from a report in the folder ``where``."""
    runs = Paired.of(records, plan)
    models = [m for m in plan.models if runs.seeds[m]]
    if not models:
        return "No complete set of arms on any seed yet (`apg experiment cold-users run`).\n"
    buckets = [b for b in LABELS if any(b in r["by_activity"] for r in records)]
    lines = protocol(records[0]["split"], plan, runs) + arm_table(runs, plan.arms, models)
    for m in models:
        lines += bucket_table(runs, m, plan.arms, buckets)
    lines += pooled_table(runs, [a for a in plan.arms if a != "base"], models, buckets)
    if figure is not None and buckets:
        plot(figure, runs, [a for a in plan.arms if a != "base"], models, buckets)
        lines += ["", f"![cold start by activity]({os.path.relpath(figure, where)})"]
    return "\n".join(lines) + "\n"


def protocol(split: dict, plan: Plan, runs: Paired) -> list[str]:
    h, t, rows, users = plan.holdout, plan.train, split["rows"], split["users"]
    seeds = "; ".join(f"{m} {s}" for m, s in runs.seeds.items())
    return [
        f"Dataset {plan.data}: {h.share:.0%} of the users held out of the random split (seed {h.seed}; split seed "
        f"{t.split_seed}); each keeps its earliest k interactions in training (k uniform in 1..{h.keep}), its other "
        f"rows are the cold test set ({rows['cold']} rows of {users['cold']} users); the warm users' random test rows "
        f"({rows['test']}) are the reference. Users with fewer than {h.min_count} training interactions share one "
        f"trained user-id row ({split['rare_rows']['train']} training rows, {split['rare_rows']['cold']} cold rows; "
        f"{split['user_vocab']} users keep their own), the row an unseen user hits when served. Validation holds warm "
        f"rows only. Seeds {seeds} vary the initialisation and batch order only; budget: {t.epochs} epochs at most, "
        f"early stopping (patience {t.patience}) and learning rate ×{t.lr_decay} on a validation plateau, batch "
        f"{t.batch_size}, lr {t.lr}, the same for every arm. Lifts are paired differences (arm − base on the same "
        "seed) in AUC points, mean [95 % t interval] (p, n); S spread and mean-S cost on 20,000 cold rows.",
        "",
    ]


def arm_table(runs: Paired, arms: tuple[str, ...], models: list[str]) -> list[str]:
    lines = [
        "| model | arm | cold AUC | lift (cold) | warm test AUC | lift (warm) | spread S (layers) | mean-S cost "
        "| adaptive |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for m in models:
        for a in arms:
            cells = []
            for split in ("cold", "test"):
                cells += [mean_sd(runs.aucs(m, a, split)), "" if a == "base" else cell(paired_lift(runs, m, a, split))]
            adapt = study.adaptation_cells([runs.by[(m, a, s)] for s in runs.seeds[m]])
            lines.append(f"| {m} | {a} | " + " | ".join(cells) + " |" + adapt)
    return lines


def bucket_table(runs: Paired, model: str, arms: tuple[str, ...], buckets: list[str]) -> list[str]:
    apg = [a for a in arms if a != "base"]
    sizes = runs.by[(model, "base", runs.seeds[model][0])]["by_activity"]  # the same rows in every run
    lines = [
        "",
        f"{model}: test AUC by the user's training interactions (mean ± sd over seeds {runs.seeds[model]}) and each "
        "APG arm's paired lift over the base:",
        "",
        "| interactions | users | rows | " + " | ".join([*arms, *(f"{a} − base" for a in apg)]) + " |",
        "|---|---|---|" + "---|" * (len(arms) + len(apg)),
    ]
    for b in buckets:
        size = sizes.get(b, {})
        aucs = [mean_sd(runs.aucs(model, a, "by_activity", b)) for a in arms]
        lifts = [cell(paired_lift(runs, model, a, "by_activity", b)) for a in apg]
        lines.append(f"| {b} | {size.get('users', '')} | {size.get('rows', '')} | " + " | ".join(aucs + lifts) + " |")
    return lines


def pooled_table(runs: Paired, apg: list[str], models: list[str], buckets: list[str]) -> list[str]:
    lines = [
        "",
        "Pooled over models (seed as the unit), the lift over the base by the user's training interactions:",
        "",
        "| interactions | " + " | ".join(f"{a} − base" for a in apg) + " |",
        "|---|" + "---|" * len(apg),
    ]
    rows = [("all cold rows", ("cold",)), ("all warm test rows", ("test",))]
    rows += [(b, ("by_activity", b)) for b in buckets]
    for label, where in rows:
        cells = [cell(pooled({m: runs.lift(m, a, *where) for m in models})) for a in apg]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return lines


def paired_lift(runs: Paired, model: str, arm: str, *where: str) -> dict:
    return paired(list(runs.lift(model, arm, *where).values()))


def cell(r: dict) -> str:
    return fmt(r) if r["n"] else ""


def mean_sd(aucs: dict[int, float]) -> str:
    v = np.array(list(aucs.values())) * 100
    if not len(v):
        return ""
    return f"{v.mean():.2f} ± {v.std(ddof=1):.2f}" if len(v) > 1 else f"{v.mean():.2f}"


def plot(path: Path, runs: Paired, apg: list[str], models: list[str], buckets: list[str]) -> None:
    from scripts.experiments import plots

    series = {}
    for m in models:
        for a in apg:
            fits = [paired_lift(runs, m, a, "by_activity", b) for b in buckets]
            series[f"{m} {a}"] = [(f["mean"] * 100, f["ci"][0] * 100, f["ci"][1] * 100) for f in fits]
    path.parent.mkdir(parents=True, exist_ok=True)
    plots.intervals(path, buckets, series, "the user's training interactions", "AUC lift over base, points (95 % CI)")


# ---------------------------------------------------------------- the command
def add_arguments(p: argparse.ArgumentParser) -> None:
    study.add_plan_arguments(p, Plan.arms)
    p.add_argument("--share", type=float, default=Holdout.share, help="share of the users held out (cold)")
    p.add_argument("--keep", type=int, default=Holdout.keep, help="a held-out user keeps k in 1..KEEP interactions")
    p.add_argument(
        "--min-count",
        type=int,
        default=Holdout.min_count,
        help="users with fewer training interactions share the trained rare/unknown-user row",
    )
    p.add_argument("--holdout-seed", type=int, default=Holdout.seed, help="seed of the held-out users and their k")
    p.add_argument("--figures", type=Path, default=FIGURES, help="where the report's figure goes")


def plan_from_args(a: argparse.Namespace) -> Plan:
    arms, train = study.arms_and_budget(a)
    holdout = Holdout(a.share, a.keep, a.min_count, a.holdout_seed)
    models, seeds = tuple(a.models.split(",")), tuple(int(s) for s in a.seeds.split(","))
    return Plan(data=a.data, models=models, arms=arms, seeds=seeds, train=train, holdout=holdout)


def run_from_args(a: argparse.Namespace) -> int:
    plan = plan_from_args(a)
    if a.what == "run":
        run(plan, a.results)
        return 0
    out = a.results / f"coldstart-{plan.data}.md"
    out.write_text(report(stored(plan, a.results), plan, a.figures / f"coldstart-{plan.data}.png", a.results))
    print(out.read_text())
    return 0
