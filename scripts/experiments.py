"""Experiment drivers for the paper's claims on ML-100K (AUC table, conditions, controls, ablation, cold start).

Resumable: every finished run is one line of ``docs/results/runs.jsonl`` keyed by its configuration and budget; a run
whose key is already there is skipped, and experiments share runs (the AUC table reuses the selection's seed-0 runs).
``python -m scripts.report`` turns them into docs/RESULTS.md and its plots.

    python -m scripts.experiments select      # every base model x {group, mix, self}, seed 0: choose on validation
    python -m scripts.experiments auc         # every base model without / with its chosen APG condition, N seeds
    python -m scripts.experiments conditions  # group vs mix vs self on DNN and DeepFM, N seeds
    python -m scripts.experiments controls    # static-S low-rank MLP and a parameter-matched wider MLP
    python -m scripts.experiments ablation    # basic -> low-rank -> shared -> + over-parameterisation
    python -m scripts.experiments coldstart   # time-ordered split (mostly cold users), base vs APG
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict, dataclass, replace
from functools import lru_cache
from pathlib import Path

import numpy as np
from tqdm import tqdm

MODELS = ("dnn", "wdl", "pnn", "deepfm", "dcn", "dcnv2", "autoint")
CONDITIONS = ("group", "mix", "self")
RESULTS = Path("docs/results")


@dataclass(frozen=True)
class Budget:
    """The same budget for every run, base or APG: APG must not win because the base was cut short."""

    epochs: int = 20
    patience: int = 3
    batch_size: int = 256
    lr: float = 1e-3
    limit: int | None = None
    seeds: int = 3
    models: tuple[str, ...] = MODELS


QUICK = Budget(epochs=1, patience=1, limit=4000, seeds=1, models=("dnn", "deepfm"))


@dataclass(frozen=True)
class Run:
    model: str
    condition: str = "none"
    seed: int = 0
    split: str = "random"
    rank: int = 16
    overparam: int = 0
    variant: str = "shared"
    hidden: tuple[int, ...] = (256, 128)


def key(run: Run, budget: Budget) -> str:
    """What identifies a finished run: its configuration and the training budget (not how many seeds a plan wants)."""
    training = {k: v for k, v in asdict(budget).items() if k not in ("seeds", "models")}
    return json.dumps({**asdict(run), "budget": training}, sort_keys=True)


def record_key(record: dict) -> str:
    run = Run(**{f: record[f] for f in Run.__dataclass_fields__})
    return key(run, Budget(**{k: v for k, v in record["budget"].items() if k not in ("seeds", "models")}))


class Store:
    """Append-only JSON lines of finished runs; ``get`` answers by (run, budget)."""

    def __init__(self, root: Path):
        self.path = root / "runs.jsonl"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        rows = [json.loads(line) for line in self.path.read_text().splitlines()] if self.path.exists() else []
        self.rows = {record_key(r): r for r in rows}  # re-derived, so older files keep working

    def get(self, run: Run, budget: Budget) -> dict | None:
        return self.rows.get(key(run, budget))

    def put(self, record: dict) -> None:
        self.rows[record_key(record)] = record
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")


@lru_cache(maxsize=4)
def dataset(split: str, seed: int, limit: int | None):
    from model.data import load_dataset

    return load_dataset("ml-100k", split=split, seed=seed, limit=limit)


def by_bucket(data, pred: np.ndarray) -> dict[str, dict]:
    """Test AUC per user-activity bucket (training interactions of the user; bucket 0 = fewest, unseen users too)."""
    from model.metrics import auc

    rows = data.splits["test"]
    field = data.schema.field("user_activity")
    buckets = data.x["user_activity"][rows]
    y = data.y[rows]
    out = {}
    for index in np.unique(buckets):
        m = buckets == index
        label = field.vocab[index - 2] if index >= 2 else "missing"
        out[label] = {"auc": auc(y[m], pred[m]), "rows": int(m.sum())}
    return out


def execute(run: Run, budget: Budget) -> dict:
    """Train one configuration under the budget and return its record (metrics, cost, per-bucket test AUC)."""
    from model.apg import APGConfig
    from model.metrics import evaluate
    from model.train import TrainConfig, count_params, fit, predict, seed_everything
    from model.zoo import ModelConfig, build_model

    data = dataset(run.split, run.seed, budget.limit)
    cfg = TrainConfig(
        split=run.split,
        seed=run.seed,
        limit=budget.limit,
        epochs=budget.epochs,
        batch_size=budget.batch_size,
        lr=budget.lr,
        patience=budget.patience,
    )
    seed_everything(run.seed, cfg.threads)
    apg = APGConfig(run.condition, rank=run.rank, overparam=run.overparam, variant=run.variant)
    model = build_model(data.schema, ModelConfig(run.model, hidden=run.hidden, apg=apg))
    start = time.perf_counter()
    result = fit(model, data, cfg, progress=False)
    seconds = time.perf_counter() - start
    scores = {}
    for split in ("valid", "test"):
        x, y = data.part(split)
        scores[split] = evaluate(y, pred := predict(model, x), data.users[data.splits[split]])
    return {
        "key": key(run, budget),
        **asdict(run),
        **scores,
        "params": count_params(model),
        "seconds": round(seconds, 2),
        "best_epoch": result["best_epoch"],
        "epochs_run": len(result["history"]),
        "by_bucket": by_bucket(data, pred),
        "budget": asdict(budget),
    }


def run_all(name: str, runs: list[Run], budget: Budget, root: Path) -> list[dict]:
    store = Store(root)
    todo = [r for r in runs if store.get(r, budget) is None]
    bar = tqdm(todo, desc=f"{name}: {len(runs) - len(todo)} done, {len(todo)} to run")
    for run in bar:
        bar.set_postfix_str(f"{run.model} {run.condition} {run.variant} seed {run.seed}")
        store.put(execute(run, budget))
    return [store.get(r, budget) for r in runs]


def choose(records: list[dict | None]) -> dict[str, str]:
    """Each model's APG condition with the best validation AUC among the ``select`` runs (never the test split)."""
    best: dict[str, dict] = {}
    for r in filter(None, records):
        if r["model"] not in best or r["valid"]["auc"] > best[r["model"]]["valid"]["auc"]:
            best[r["model"]] = r
    return {m: r["condition"] for m, r in best.items()}


def plan(name: str, budget: Budget, best: dict[str, str] | None = None) -> list[Run]:
    """The runs an experiment needs; ``auc`` needs ``best`` (each model's chosen condition)."""
    seeds = range(budget.seeds)
    two = [m for m in ("dnn", "deepfm") if m in budget.models]
    if name == "select":
        return [Run(m, c) for m in budget.models for c in CONDITIONS]
    if name == "auc":
        return [Run(m, c, s) for m in budget.models if m in best for c in ("none", best[m]) for s in seeds]
    if name == "conditions":
        return [Run(m, c, s) for m in two for c in ("none", *CONDITIONS) for s in seeds]
    if name == "controls":
        return [r for m in two for s in seeds for r in controls(m, s)]
    if name == "ablation":
        # basic APG generates every W_i (N·M values per sample): ~12 min a run on 2 cores, so one seed only
        steps = [
            Run("dnn", "self", variant="lowrank"),
            Run("dnn", "self"),
            Run("dnn", "self", overparam=32),
            Run("dnn"),
        ]
        return [Run("dnn", "self", variant="basic")] + [replace(r, seed=s) for r in steps for s in seeds]
    if name == "coldstart":
        return [Run(m, c, s, split="time") for m in two for c in ("none", "self") for s in seeds]
    raise SystemExit(f"unknown experiment {name!r}")


def controls(model: str, seed: int) -> list[Run]:
    """APG self-wise, the same low-rank layers with one learned S (static), and a static MLP of matched size."""
    apg = Run(model, "self", seed)
    return [apg, Run(model, "static", seed), Run(model, "none", seed, hidden=matched_hidden(apg))]


def matched_hidden(apg: Run) -> tuple[int, ...]:
    """Widths (same shape as apg.hidden) of a static tower with about as many parameters as the APG tower."""
    from model.apg import APGMLP, APGConfig
    from model.layers import MLP

    in_dim = 16 * 9  # 9 ML-100K fields x embedding 16
    cfg = APGConfig(apg.condition, rank=apg.rank)
    target = sum(p.numel() for p in APGMLP(in_dim, apg.hidden, 0, cfg).parameters())
    scales = np.linspace(0.05, 4.0, 400)
    sizes = [
        sum(p.numel() for p in MLP(in_dim, tuple(max(1, int(h * s)) for h in apg.hidden)).parameters()) for s in scales
    ]
    s = scales[int(np.argmin(np.abs(np.array(sizes) - target)))]
    return tuple(max(1, int(h * s)) for h in apg.hidden)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "experiments", nargs="+", choices=["select", "auc", "conditions", "controls", "ablation", "coldstart", "all"]
    )
    p.add_argument("--seeds", type=int, help="seeds per configuration (default 3)")
    p.add_argument("--models", help="comma-separated subset of base models")
    p.add_argument("--quick", action="store_true", help="tiny smoke version: 4000 rows, 1 epoch, 1 seed")
    p.add_argument("--results", default=str(RESULTS), help="folder of the JSON-lines results")
    args = p.parse_args(argv)
    root = Path(args.results)
    budget = QUICK if args.quick else Budget()
    if args.seeds:
        budget = replace(budget, seeds=args.seeds)
    if args.models:
        budget = replace(budget, models=tuple(args.models.split(",")))
    names = (
        ["select", "auc", "conditions", "controls", "ablation", "coldstart"]
        if "all" in args.experiments
        else args.experiments
    )
    for name in names:
        best = choose(run_all("select", plan("select", budget), budget, root)) if name == "auc" else None
        run_all(name, plan(name, budget, best), budget, root)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
