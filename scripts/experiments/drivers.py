"""Experiment drivers for the paper's claims on ML-100K (AUC table, conditions, controls, ablation, cold start).

Resumable: every finished run is one line of ``docs/results/runs.jsonl`` keyed by its configuration and budget; a run
whose key is already there is skipped, and experiments share runs (the AUC table reuses the selection's seed-0 runs).
``apg experiment report`` turns them into docs/RESULTS.md and its plots. A run is a ModelConfig (with its APGConfig)
and a seed and split; the budget is a TrainConfig: the same dataclasses `apg train` builds from its options.

    apg experiment select | auc | conditions | controls | ablation | coldstart | all   (`apg experiment --help`)
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict, dataclass, field, fields, replace
from functools import lru_cache
from pathlib import Path

import numpy as np
from tqdm import tqdm

from features import FIRST
from model.apg import APGConfig
from model.train import TrainConfig
from model.zoo import ModelConfig
from scripts.cli import EXPERIMENTS  # name -> what it shows, in the order `apg experiment all` runs them

MODELS = ("dnn", "wdl", "pnn", "deepfm", "dcn", "dcnv2", "autoint")
CONDITIONS = ("group", "mix", "self")
RESULTS = Path("docs/results")
# What a stored record always names (runs.jsonl is keyed by these); any other field is named when not at its default
RUN_KEYS = ("model", "condition", "seed", "split", "rank", "overparam", "variant", "hidden")
BUDGET_KEYS = ("epochs", "patience", "batch_size", "lr", "limit")


@dataclass(frozen=True)
class Budget:
    """The same budget for every run, base or APG: APG must not win because the base was cut short."""

    train: TrainConfig = field(default_factory=lambda: TrainConfig(epochs=20, patience=3))  # seed, split: the run's
    seeds: int = 3
    models: tuple[str, ...] = MODELS


QUICK = Budget(TrainConfig(epochs=1, patience=1, limit=4000), seeds=1, models=("dnn", "deepfm"))


@dataclass(frozen=True)
class Run:
    """One training run: the model's configuration, and the seed and split of its TrainConfig (the rest: the budget)."""

    model: ModelConfig
    seed: int = 0
    split: str = "random"

    @classmethod
    def of(cls, model: str, condition: str = "none", seed: int = 0, split: str = "random", **apg) -> Run:
        """Run.of("dnn", "self", variant="lowrank"): a base model with default widths, its APG condition and options."""
        return cls(ModelConfig(model, apg=APGConfig(condition, **apg)), seed, split)


def settings(r: Run) -> dict:
    """The run as flat settings (ModelConfig and APGConfig fields, seed, split): the fields of a stored record."""
    model = {k: v for k, v in asdict(r.model).items() if k != "apg"}
    return {**model, **asdict(r.model.apg), "seed": r.seed, "split": r.split}


def _named(values: dict, defaults: dict, always: tuple[str, ...]) -> dict:
    return {k: v for k, v in values.items() if k in always or v != defaults[k]}


def identity(r: Run) -> dict:
    return _named(settings(r), settings(Run(ModelConfig())), RUN_KEYS)


def budget_identity(budget: Budget) -> dict:
    """The training budget that identifies a run (not how many seeds a plan wants, nor the per-run seed and split)."""
    train = {k: v for k, v in asdict(budget.train).items() if k not in ("seed", "split")}
    return _named(train, asdict(TrainConfig()), BUDGET_KEYS)


def key(r: Run, budget: Budget) -> str:
    """What identifies a finished run: its configuration and the training budget."""
    return json.dumps({**identity(r), "budget": budget_identity(budget)}, sort_keys=True)


def record_key(record: dict) -> str:
    def of(cls, values: dict) -> dict:  # the fields of cls in values, JSON lists back to tuples
        names = {f.name for f in fields(cls)} - {"apg"}
        return {k: tuple(v) if isinstance(v, list) else v for k, v in values.items() if k in names}

    r = Run(
        ModelConfig(**of(ModelConfig, record), apg=APGConfig(**of(APGConfig, record))), record["seed"], record["split"]
    )
    return key(r, Budget(TrainConfig(**of(TrainConfig, record["budget"]))))


class Store:
    """Append-only JSON lines of finished runs; ``get`` answers by (run, budget)."""

    def __init__(self, root: Path):
        self.path = root / "runs.jsonl"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        rows = [json.loads(line) for line in self.path.read_text().splitlines()] if self.path.exists() else []
        self.rows = {record_key(r): r for r in rows}  # re-derived, so older files keep working

    def get(self, r: Run, budget: Budget) -> dict | None:
        return self.rows.get(key(r, budget))

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
    from features.metrics import auc

    rows = data.splits["test"]
    activity = data.schema.field("user_activity")
    buckets = data.x["user_activity"][rows]
    y = data.y[rows]
    out = {}
    for index in np.unique(buckets):
        m = buckets == index
        label = activity.vocab[index - FIRST] if index >= FIRST else "missing"
        out[label] = {"auc": auc(y[m], pred[m]), "rows": int(m.sum())}
    return out


def execute(r: Run, budget: Budget) -> dict:
    """Train one configuration under the budget and return its record (metrics, cost, per-bucket test AUC)."""
    from features.metrics import evaluate
    from model.evaluate import predict
    from model.train import count_params, fit, seed_everything
    from model.zoo import build_model

    cfg = replace(budget.train, seed=r.seed, split=r.split)
    data = dataset(cfg.split, cfg.seed, cfg.limit)
    seed_everything(cfg.seed, cfg.threads)
    model = build_model(data.schema, r.model)
    start = time.perf_counter()
    result = fit(model, data, cfg, progress=False)
    seconds = time.perf_counter() - start
    scores = {}
    for split in ("valid", "test"):
        x, y = data.part(split)
        scores[split] = evaluate(y, pred := predict(model, x), data.users[data.splits[split]])
    return {
        "key": key(r, budget),
        **identity(r),
        **scores,
        "params": count_params(model),
        "seconds": round(seconds, 2),
        "best_epoch": result["best_epoch"],
        "epochs_run": len(result["history"]),
        "by_bucket": by_bucket(data, pred),
        "budget": {**budget_identity(budget), "seeds": budget.seeds, "models": budget.models},
    }


def run_all(name: str, runs: list[Run], budget: Budget, root: Path) -> list[dict]:
    store = Store(root)
    todo = [r for r in runs if store.get(r, budget) is None]
    tty = sys.stderr.isatty()  # written to a log: a line per run instead of a bar of carriage returns
    bar = tqdm(todo, desc=f"{name}: {len(runs) - len(todo)} done, {len(todo)} to run", disable=not tty)
    for r in bar:
        what = f"{r.model.model} {r.model.apg.condition} {r.model.apg.variant} seed {r.seed}"
        bar.set_postfix_str(what)
        if not tty:
            print(f"{name}: {what}", flush=True)
        store.put(execute(r, budget))
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
        return [Run.of(m, c) for m in budget.models for c in CONDITIONS]
    if name == "auc":
        return [Run.of(m, c, s) for m in budget.models if m in best for c in ("none", best[m]) for s in seeds]
    if name == "conditions":
        return [Run.of(m, c, s) for m in two for c in ("none", *CONDITIONS) for s in seeds]
    if name == "controls":
        return [r for m in two for s in seeds for r in controls(m, s, budget)]
    if name == "ablation":
        # basic APG generates every W_i (N·M values per sample): ~12 min a run on 2 cores, so one seed only
        steps = [
            Run.of("dnn", "self", variant="lowrank"),
            Run.of("dnn", "self"),
            Run.of("dnn", "self", overparam=32),
            Run.of("dnn"),
        ]
        return [Run.of("dnn", "self", variant="basic")] + [replace(r, seed=s) for r in steps for s in seeds]
    if name == "coldstart":
        return [Run.of(m, c, s, split="time") for m in two for c in ("none", "self") for s in seeds]
    raise ValueError(f"unknown experiment {name!r}")


def controls(model: str, seed: int, budget: Budget) -> list[Run]:
    """APG self-wise, the same low-rank layers with one learned S (static), and a static MLP of matched size."""
    apg = Run.of(model, "self", seed)
    static = replace(apg.model, apg=APGConfig(), hidden=matched_hidden(apg.model, budget.train.limit))
    return [apg, Run.of(model, "static", seed), Run(static, seed)]


@lru_cache(maxsize=8)
def matched_hidden(apg: ModelConfig, limit: int | None, data: str = "ml-100k") -> tuple[int, ...]:
    """Widths (same shape as apg.hidden) of a static tower with about as many parameters as the APG tower; both
    towers take the input width the zoo gives them on the data's schema."""
    from model.data import load_dataset
    from model.layers import MLP
    from model.zoo import build_model

    schema = load_dataset(data, split="random", seed=0, limit=limit).schema
    target = sum(p.numel() for p in build_model(schema, apg).tower.parameters())
    in_dim = build_model(schema, replace(apg, apg=APGConfig())).tower.net[0].in_features  # the static tower's MLP

    def widths(scale: float) -> tuple[int, ...]:
        return tuple(max(1, int(h * scale)) for h in apg.hidden)

    scales = np.linspace(0.05, 4.0, 400)
    sizes = [sum(p.numel() for p in MLP(in_dim, widths(s)).parameters()) for s in scales]
    return widths(scales[int(np.argmin(np.abs(np.array(sizes) - target)))])


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The options of `apg experiment NAME` for every driver (NAME: one of EXPERIMENTS, or all)."""
    p.add_argument("--seeds", type=int, help=f"seeds per configuration (default {Budget().seeds}; --quick: 1)")
    p.add_argument("--models", help="comma-separated subset of base models (default: all seven)")
    p.add_argument("--quick", action="store_true", help="tiny smoke version: 4000 rows, 1 epoch, 1 seed")
    p.add_argument("--results", default=str(RESULTS), help="folder of the JSON-lines results")


def run_from_args(args) -> int:
    root = Path(args.results)
    budget = QUICK if args.quick else Budget()
    if args.seeds:
        budget = replace(budget, seeds=args.seeds)
    if args.models:
        budget = replace(budget, models=tuple(args.models.split(",")))
    for name in [n for n in EXPERIMENTS if n != "all"] if args.experiment == "all" else [args.experiment]:
        best = choose(run_all("select", plan("select", budget), budget, root)) if name == "auc" else None
        run_all(name, plan(name, budget, best), budget, root)
    return 0
