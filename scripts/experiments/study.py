"""The APG study, second edition (issue 11): paired runs on one fixed split, adaptation and calibration per run.

    apg experiment study run --data ml-1m --models dnn,deepfm --arms base,static,self,group --seeds 1,2,3
    apg experiment study report --data ml-1m          # docs/results/study-ml-1m.md

Every run of a dataset shares one split (TrainConfig.split_seed); a seed varies the initialisation and batch order
only, so "arm minus base on seed s" is a paired difference. Resumable: each finished run is one line of
docs/results/study/<data>.jsonl keyed by (model, arm, seed, budget); a run already there is skipped, so a
stopped session loses at most the run in progress. Seed 0 is kept for choices made on validation; the report reads
the seeds it is given. Run directories (checkpoint, metrics, test split) go under runs/study/<data>/.
With ``--tuned FILE`` (written by ``apg experiment tune``) each arm trains with its tuned configuration, which is part
of the run's key: tuned and untuned runs never mix.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from features import FIRST, MISSING, Schema
from model.apg import APGConfig
from model.data import SCHEMAS
from model.train import TrainConfig
from model.zoo import ModelConfig
from scripts.experiments.paired import fmt, paired, pooled, spreads

RESULTS = Path("docs/results")
RUNS = Path("runs/study")
# Each arm is an APGConfig (the base: none). "group" has its own condition embedding: with the model's shared
# embeddings group-wise S_i does not adapt ("group-shared", kept to show it); "static" is the control that learns
# one S for every row (a low-rank tower with APG's parameters and no adaptation).
ARMS: dict[str, APGConfig] = {
    "base": APGConfig("none"),
    "static": APGConfig("static"),
    "self": APGConfig("self"),
    "group": APGConfig("group", group_field="user_activity", cond_embed=True),
    "group-shared": APGConfig("group", group_field="user_activity"),
    "group-item": APGConfig("group", group_field="item_popularity", cond_embed=True),
    "mix": APGConfig("mix"),
}
# The second control, not an APGConfig: a static tower (no APG) resized to about as many parameters as the self-wise
# APG tower (on MovieLens that narrows it: the low-rank APG tower is the smaller one), so "self vs matched" is what
# APG adds over a plain tower of its size (this study only: not searched by `apg experiment tune`, not in the
# cold-start test).
MATCHED = "matched"
CONTROLS = ("static", MATCHED)


@dataclass(frozen=True)
class Plan:
    data: str = "ml-1m"
    models: tuple[str, ...] = ("dnn", "deepfm")
    arms: tuple[str, ...] = ("base", "static", "self", "group")
    seeds: tuple[int, ...] = (1, 2, 3, 4, 5)
    train: TrainConfig = field(default_factory=lambda: TrainConfig(epochs=10, patience=2, batch_size=1024))
    tuned: dict | None = None  # model -> arm -> {"model": ModelConfig dict, "train": {lr, batch_size}}, or untuned

    def budget(self) -> dict:
        """What identifies the training budget of a run (not its seed, device or threads)."""
        from model.train import identity

        leave = ("seed", "device", "threads")
        if self.tuned is not None:  # each arm's tuned configuration sets them (and names them in the run's key)
            leave += ("lr", "batch_size")
        return identity(replace(self.train, data=self.data), leave=leave)


def store_path(results: Path, data: str) -> Path:
    return results / "study" / f"{data}.jsonl"


def stored(plan: Plan, results: Path) -> list[dict]:
    """The plan's stored runs: its budget, and its tuned configurations (or none: then untuned runs only)."""

    def wanted(r: dict) -> bool:
        if plan.tuned is None:
            return r.get("tuned") is None
        return r.get("tuned") is not None and r["tuned"] == plan.tuned.get(r["model"], {}).get(r["arm"])

    records = read_store(store_path(results, plan.data)).values()
    return [r for r in records if r["budget"] == plan.budget() and wanted(r)]


def run_key(plan: Plan, model: str, arm: str, seed: int) -> str:
    key = {"model": model, "arm": arm, "seed": seed, "budget": plan.budget()}
    if plan.tuned is not None:
        key["tuned"] = tuned_of(plan, model, arm)
    return json.dumps(key, sort_keys=True)


def tuned_of(plan: Plan, model: str, arm: str) -> dict | None:
    return None if plan.tuned is None else plan.tuned[model][arm]


def load_tuned(path: Path, data: str) -> dict:
    """The tuned configurations of `apg experiment tune`'s best-config file: model -> arm -> {"model", "train"}."""
    saved = json.loads(Path(path).read_text())
    if saved["data"] != data:
        raise ValueError(f"{path} was tuned on {saved['data']}, not {data}")
    return {
        m: {a: {"model": e["model"], "train": e["train"]} for a, e in arms.items()}
        for m, arms in saved["configs"].items()
    }


def check_tuned(plan: Plan, path: Path) -> None:
    missing = [f"{m}/{a}" for m in plan.models for a in plan.arms if a not in plan.tuned.get(m, {})]
    if missing:
        raise ValueError(f"{path} has no tuned configuration for {', '.join(missing)} (apg experiment tune run)")


def arm_configs(plan: Plan, model: str, arm: str, seed: int) -> tuple[ModelConfig, TrainConfig]:
    """What one run trains: the arm as defined above, or its tuned configuration (the plan's epochs and patience)."""
    cfg = replace(plan.train, data=plan.data, seed=seed)
    if arm == MATCHED:
        if plan.tuned is not None:
            raise ValueError(f"the {MATCHED} control has no tuned configuration (run it without --tuned)")
        from scripts.experiments.drivers import matched_hidden

        apg = ModelConfig(model, apg=ARMS["self"])
        return ModelConfig(model, hidden=matched_hidden(apg, plan.train.limit, plan.data)), cfg
    tuned = tuned_of(plan, model, arm)
    if tuned is None:
        return ModelConfig(model, apg=ARMS[arm]), cfg
    model_cfg = ModelConfig.from_dict(tuned["model"])
    if model_cfg.model != model or model_cfg.apg.condition != ARMS[arm].condition:
        raise ValueError(f"the tuned configuration of {model}/{arm} is a {model_cfg.model}/{model_cfg.apg.condition}")
    return model_cfg, replace(cfg, **tuned["train"])


def read_store(path: Path) -> dict[str, dict]:
    if not path.exists():
        return {}
    return {r["key"]: r for r in map(json.loads, path.read_text().splitlines())}


def execute(plan: Plan, model: str, arm: str, seed: int, runs: Path) -> dict:
    """Train one run through `apg train`'s code path and return its record."""
    from model.evaluate import predict
    from model.train import load_run, load_test_split, train_run

    model_cfg, cfg = arm_configs(plan, model, arm, seed)
    out = run_dir(plan, model, arm, seed, runs)
    start = time.perf_counter()
    m = train_run(model_cfg, cfg, out, progress=False)
    net, schema, _ = load_run(out)
    x, y = load_test_split(out, schema)
    return {
        "key": run_key(plan, model, arm, seed),
        "data": plan.data,
        "model": model,
        "arm": arm,
        "seed": seed,
        "valid": m["valid"],
        "test": m["test"],
        "params": m["params"],
        "train_seconds": m["train_seconds"],
        "wall_seconds": round(time.perf_counter() - start, 1),
        "best_epoch": m["best_epoch"],
        "epochs_run": len(m["history"]),
        "adaptation": m.get("adaptation"),
        "by_activity": by_bucket(x, y, predict(net, x), schema, "user_activity"),
        "budget": plan.budget(),
        "tuned": tuned_of(plan, model, arm),
    }


def run_dir(plan: Plan, model: str, arm: str, seed: int, runs: Path = RUNS) -> Path:
    """Where one run trains: each split, and each epoch budget other than the study's 10, has directories of its own
    (the study's own runs keep their original names)."""
    split = "" if plan.train.split == "random" else f"-{plan.train.split}"
    epochs = "" if plan.train.epochs == Plan().train.epochs else f"-e{plan.train.epochs}"
    return runs / plan.data / f"{model}-{arm}{'-tuned' if plan.tuned else ''}{split}{epochs}-s{seed}"


def by_bucket(x: dict, y: np.ndarray, p: np.ndarray, schema, name: str) -> dict[str, dict]:
    """Test AUC per bucket of a derived count field (e.g. the user's training interactions)."""
    from features.metrics import auc

    if name not in x:
        return {}
    labels = schema.field(name).vocab
    out = {}
    for index in np.unique(x[name]):
        rows = x[name] == index
        label = labels[index - FIRST] if index >= FIRST else ("missing" if index == MISSING else "unseen")
        out[label] = {"auc": auc(y[rows], p[rows]), "rows": int(rows.sum())}
    return out


def run(plan: Plan, results: Path = RESULTS, runs: Path = RUNS) -> list[dict]:
    return resume(store_path(results, plan.data), plan, lambda m, a, s: execute(plan, m, a, s, runs))


def resume(path: Path, plan: Plan, execute: Callable[[str, str, int], dict], split: str = "test") -> list[dict]:
    """Train, with ``execute(model, arm, seed)``, the runs of ``plan`` the store at ``path`` lacks, appending each
    record as it finishes; returns every run's record in plan order. ``split``: the record's metrics it prints."""
    path.parent.mkdir(parents=True, exist_ok=True)
    done = read_store(path)
    todo = [(m, a, s) for m in plan.models for s in plan.seeds for a in plan.arms if run_key(plan, m, a, s) not in done]
    print(f"{path.parent.name} {plan.data}: {len(done)} runs stored, {len(todo)} to train", flush=True)
    for i, (m, a, s) in enumerate(todo, 1):
        record = execute(m, a, s)
        with open(path, "a") as f:
            f.write(json.dumps(record) + "\n")
        t = record[split]
        cost = (record["adaptation"] or {}).get("mean_s_cost")
        extra = f"  mean-S cost {cost * 100:+.2f} pts" if cost is not None else ""
        print(
            f"[{i}/{len(todo)}] {m} {a} seed {s}: {split} AUC {t['auc']:.4f} logloss {t['logloss']:.4f}"
            f"  ({record['epochs_run']} epochs, {record['wall_seconds']} s){extra}",
            flush=True,
        )
    done = read_store(path)
    return [done[run_key(plan, m, a, s)] for m in plan.models for s in plan.seeds for a in plan.arms]


# ---------------------------------------------------------------- the report
def coverage(records: list[dict], plan: Plan) -> tuple[dict, dict[str, tuple[str, ...]], Callable[..., list[int]]]:
    """The records by (model, arm, seed); per model the plan's arms it has runs of (none without its base: nothing
    to pair with); and ``common(model, *arms)``, the plan's seeds on which the model has a run of every one of those
    arms: a comparison is paired on those (a model may be run with fewer arms, an arm with fewer seeds)."""
    by = {(r["model"], r["arm"], r["seed"]): r for r in records}
    arms = {m: tuple(a for a in plan.arms if any((m, a, s) in by for s in plan.seeds)) for m in plan.models}

    def common(model: str, *names: str) -> list[int]:
        return [s for s in plan.seeds if all((model, a, s) in by for a in names)]

    arms = {m: tuple(a for a in arms[m] if common(m, a, "base")) if "base" in arms[m] else () for m in arms}
    return by, arms, common


def pooled_lines(diffs: dict[str, dict[int, float]]) -> list[str]:
    """The pooled lift over every model on the seeds they share, named; and, where some models have more seeds than
    that, over those models on all of their seeds (so adding a model run on fewer seeds never hides the others')."""

    def line(d: dict[str, dict[int, float]]) -> str:
        r = pooled(d)
        return f"{fmt(r)} over {', '.join(d)} (seeds {', '.join(map(str, r['seeds']))})"

    out = [line(diffs)]
    most = max(len(d) for d in diffs.values())
    top = {m: d for m, d in diffs.items() if len(d) == most}
    if len(top) < len(diffs) and most > len(pooled(diffs)["seeds"]) and len(set(map(frozenset, top.values()))) == 1:
        out.append(line(top))
    return out


def report(records: list[dict], plan: Plan) -> str:
    """Markdown: per model and arm, test AUC and paired lift over the base with 95 % CIs, calibration, adaptation;
    pooled lift over models (those run with the arm); AUC by user activity. Each arm's row is over the seeds it
    shares with the base (its n)."""
    by, arms, common = coverage(records, plan)
    lines = [
        f"Dataset {plan.data}, "
        + (
            f"one fixed random split (split seed {plan.train.split_seed})"
            if plan.train.split == "random"
            else "the time split (the earliest 80 % of the ratings train, the next 10 % validate, the last 10 % test)"
        )
        + ", seeds "
        + "; ".join(f"{m} {common(m, 'base')}" for m in plan.models if arms[m])
        + " "
        "(initialisation and batch order only; each arm on the seeds it shares with its base); budget: "
        f"{plan.train.epochs} epochs at most, early stopping "
        f"(patience {plan.train.patience}) and learning rate ×{plan.train.lr_decay} on a validation plateau, "
        + (
            f"batch {plan.train.batch_size}, lr {plan.train.lr}, the same for every arm"
            if plan.tuned is None
            else "each arm with its tuned learning rate, batch size and configuration"
        )
        + ". Lifts are paired differences "
        "(arm − base on the same seed) in AUC points, mean [95 % t interval] (p, n); `mde` is the smallest lift this "
        "design detects with 80 % power. `vs static` (with the static arm): the APG arm minus the same low-rank tower"
        " with one learned S shared by every row, on the same seed: what sample-specific S adds; `matched` (where "
        "run) is a static tower resized to the self-wise APG tower's parameter count (column params in the store; "
        "here narrower than the base's), and `vs matched` below is the APG arm minus it: what APG adds over a plain "
        "tower of its size. A pooled line names its models and seeds; where some models have more seeds, a second "
        "line pools those on all of theirs.",
        "",
        "| model | arm | test AUC | lift vs base | mde | Δ logloss | pred/obs CTR | spread S (layers) "
        "| mean-S cost | adaptive | vs static |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    lifts: dict[str, dict[str, dict[int, float]]] = {a: {} for a in plan.arms if a != "base"}
    over: dict[str, dict[str, dict[str, dict[int, float]]]] = {  # control -> APG arm -> model -> seed -> lift
        c: {a: {} for a in plan.arms if a not in ("base", *CONTROLS)} for c in CONTROLS
    }
    for m in plan.models:
        for a in arms[m]:
            seeds = common(m, a, "base")
            rs = [by[(m, a, s)] for s in seeds]
            if not rs:
                continue
            aucs = np.array([r["test"]["auc"] for r in rs]) * 100
            row = f"| {m} | {a} | {aucs.mean():.2f} ± {aucs.std(ddof=1) if len(aucs) > 1 else 0:.2f} |"
            if a == "base":
                row += " | | |"
            else:
                d = {s: by[(m, a, s)]["test"]["auc"] - by[(m, "base", s)]["test"]["auc"] for s in seeds}
                lifts[a][m] = d
                ll = paired([by[(m, a, s)]["test"]["logloss"] - by[(m, "base", s)]["test"]["logloss"] for s in seeds])
                p = paired(list(d.values()))
                mde = "–" if np.isnan(p["mde"]) else f"{p['mde'] * 100:.2f}"  # one seed: no interval, no power
                row += f" {fmt(p)} | {mde} | {ll['mean']:+.4f} |"
            row += f" {np.mean([r['test']['ctr_ratio'] for r in rs]):.3f} |"
            row += adaptation_cells(rs)
            for c in (c for c in CONTROLS if c in arms[m] and a in over[c]):
                over[c][a][m] = {
                    s: by[(m, a, s)]["test"]["auc"] - by[(m, c, s)]["test"]["auc"] for s in common(m, a, c)
                }
            row += f" {fmt(paired(list(over['static'][a][m].values())))} |" if m in over["static"].get(a, {}) else " |"
            lines.append(row)
    lines += ["", "Pooled over models (seed as the unit):", ""]
    for a, d in lifts.items():
        if d:
            lines += [f"- {a}: {x}" for x in pooled_lines(d)]
    for c, arms_over in over.items():
        for a, d in arms_over.items():
            if d:
                lines += [f"- {a} vs {c}: {x}" for x in pooled_lines(d)]
    edges = [int(e) for e in Schema.load(SCHEMAS / f"{plan.data}.json").field("user_activity").edges]
    lines += [
        "",
        "Test AUC by the user's training interactions (`user_activity` bucket b holds users with "
        f"edges[b-1] ≤ n < edges[b] ratings in the training split, edges {edges}), mean over seeds:",
        "",
    ]
    lines += activity_table(by, arms, common)
    cells, _ = activity_lifts(by, arms, common, plan)
    if cells:
        names = [a for a in plan.arms if a != "base" and any(a in arms[m] for m in arms)]
        lines += [
            "",
            "Paired lift over the base by user-activity bucket (arm − base on the same seed and the same test rows, "
            "pooled over the models run with the arm, seed as the unit), AUC points, mean [95 % t interval]:",
            "",
            "| bucket | training ratings | rows | " + " | ".join(names) + " |",
            "|---|---|---|" + "---|" * len(names),
        ]
        for b, (span, rows) in cells["buckets"].items():
            lines.append(f"| {b} | {span} | {rows} | " + " | ".join(cells[a]["cells"][b] for a in names) + " |")
        lines += ["", "Pooled over: " + "; ".join(f"{a} {cells[a]['over']}" for a in names) + "."]
    return "\n".join(lines) + "\n"


def activity_lifts(by: dict, arms: dict[str, tuple[str, ...]], common: Callable[..., list[int]], plan: Plan):
    """Per APG arm (and control) and user-activity bucket, the paired lift over the base pooled over the models run
    with the arm (on the seeds they share): the table's cells ({arm: {"over": "models, seeds", "cells": {bucket:
    text}}, "buckets": {bucket: (training ratings, rows)}}) and the plot's series ({arm: [(mean, lo, hi)]} in
    points, one per bucket). Empty when the runs carry no buckets."""
    rows = activity_buckets(list(by.values()))
    if not rows:
        return {}, {}
    edges = [int(e) for e in Schema.load(SCHEMAS / f"{plan.data}.json").field("user_activity").edges]
    cells: dict = {"buckets": {b: (_span(b, edges), n or "") for b, n in rows.items()}}
    series = {}
    for a in (a for a in plan.arms if a != "base"):
        models = [m for m in arms if a in arms[m]]
        if not models:
            continue
        points, texts, seeds = [], {}, []
        for b in rows:
            diffs = {}
            for m in models:
                d = {}
                for s in common(m, a, "base"):
                    x, y = (by[(m, arm, s)]["by_activity"].get(b, {}).get("auc") for arm in (a, "base"))
                    if x is not None and y is not None and not np.isnan(x) and not np.isnan(y):
                        d[s] = x - y
                if d:
                    diffs[m] = d
            r = pooled(diffs) if diffs else {"n": 0}
            if r["n"] == 0:
                texts[b] = ""
                points.append((np.nan, np.nan, np.nan))
                continue
            seeds = seeds or r["seeds"]
            lo, hi = r["ci"]
            texts[b] = (
                f"{r['mean'] * 100:+.2f} [{lo * 100:+.2f}, {hi * 100:+.2f}]"
                if r["n"] > 1
                else f"{r['mean'] * 100:+.2f} (n 1)"
            )
            points.append((r["mean"] * 100, lo * 100, hi * 100))
        over = f"over {', '.join(models)} (seeds {', '.join(map(str, seeds))})"
        cells[a] = {"over": over, "cells": texts}
        series[f"{a} - base"] = points
    return cells, series


def _span(bucket: str, edges: list[int]) -> str:
    """The training ratings of a user-activity bucket: bucket b holds edges[b-1] <= n < edges[b]."""
    if not bucket.isdigit():
        return bucket
    b = int(bucket)
    if b == 0:
        return f"< {edges[0]}"
    return f"≥ {edges[-1]}" if b >= len(edges) else f"{edges[b - 1]}–{edges[b] - 1}"


def adaptation_cells(rs: list[dict]) -> str:
    ad = [r["adaptation"] for r in rs if r.get("adaptation")]
    if not ad:
        return " | | |"
    cost = paired([a["mean_s_cost"] for a in ad])
    verdict = "yes" if all(a["adaptive"] for a in ad) else ("no" if not any(a["adaptive"] for a in ad) else "mixed")
    return f" {' / '.join(f'{s:.3f}' for s in spreads(ad))} | {fmt(cost)} | {verdict} |"


def activity_table(by: dict, arms: dict[str, tuple[str, ...]], common: Callable[..., list[int]]) -> list[str]:
    rows = activity_buckets(list(by.values()))
    buckets = list(rows)
    lines = ["| model | arm | " + " | ".join(buckets) + " |", "|---|---|" + "---|" * len(buckets)]
    for m in arms:
        for a in arms[m]:
            cells = []
            for b in buckets:
                vals = [by[(m, a, s)]["by_activity"].get(b, {}).get("auc") for s in common(m, a, "base")]
                vals = [v for v in vals if v is not None and not np.isnan(v)]
                cells.append(f"{np.mean(vals) * 100:.2f}" if vals else "")
            lines.append(f"| {m} | {a} | " + " | ".join(cells) + " |")
    lines.append("| rows | | " + " | ".join(str(rows[b] or "") for b in buckets) + " |")
    return lines


def activity_buckets(records: list[dict]) -> dict[str, int | None]:
    """The user-activity buckets the runs report, in order, with their test rows (the same rows in every run)."""
    buckets = sorted({b for r in records for b in r.get("by_activity", {})}, key=_bucket_order)
    return {b: records[0]["by_activity"].get(b, {}).get("rows") for b in buckets}


def _bucket_order(label: str) -> tuple[int, str]:
    return (int(label), "") if label.isdigit() else (99, label)


def summary(records: list[dict], plan: Plan) -> list[str]:
    """A line per APG arm (and the static control): its lift over the base pooled over models, and whether its S
    adapts (the mean-S counterfactual) in all, some or none of its runs; pooled over the models run with the arm."""
    by, arms, common = coverage(records, plan)
    lines = []
    for a in (a for a in plan.arms if a != "base"):
        models = [m for m in plan.models if a in arms[m]]
        if not models:
            continue
        runs = [by[(m, a, s)] for m in models for s in common(m, a, "base")]
        diffs = {
            m: {s: by[(m, a, s)]["test"]["auc"] - by[(m, "base", s)]["test"]["auc"] for s in common(m, a, "base")}
            for m in models
        }
        adaptive = [r["adaptation"]["adaptive"] for r in runs if r.get("adaptation")]
        verdict = (
            "adaptive in every run"
            if all(adaptive)
            else "adaptive in none"
            if not any(adaptive)
            else (f"adaptive in {sum(adaptive)} of {len(adaptive)} runs")
        )
        if a == MATCHED:
            verdict = "no generated weights"
        elif len(adaptive) < len(runs):
            verdict += f" measured ({len(runs) - len(adaptive)} of {len(runs)} runs without the measure)"
        first, *more = pooled_lines(diffs)
        lines += [f"{a}: {first} against the base; {verdict}"] + [f"{a}: {x} against the base" for x in more]
    return lines


def lift_figure(records: list[dict], plan: Plan, path: Path) -> None:
    """The paired lifts with their 95 % CIs, per model and pooled: each APG arm and the static control against the
    base, and each APG arm against the static control."""
    from scripts.experiments import plots

    by, arms, common = coverage(records, plan)
    models = [m for m in plan.models if arms[m]]
    pairs = [(a, "base") for a in plan.arms if a != "base"]
    pairs += [(a, c) for c in CONTROLS if c in plan.arms for a in plan.arms if a not in ("base", *CONTROLS)]
    series = {}
    nothing = {"mean": np.nan, "ci": (np.nan, np.nan)}  # a model run without the arm: no point
    for arm, ref in pairs:
        have = [m for m in models if arm in arms[m] and ref in arms[m]]
        if not have:
            continue
        diffs = {
            m: {s: by[(m, arm, s)]["test"]["auc"] - by[(m, ref, s)]["test"]["auc"] for s in common(m, arm, ref)}
            for m in have
        }
        cells = [paired(list(diffs[m].values())) if m in diffs else nothing for m in models] + [pooled(diffs)]
        series[f"{arm} - {ref}"] = [(c["mean"] * 100, c["ci"][0] * 100, c["ci"][1] * 100) for c in cells]
    plots.intervals(path, [*models, "pooled"], series, "base model", "test AUC lift, points (paired 95 % CI)")


def activity_figure(records: list[dict], plan: Plan, path: Path) -> bool:
    """The by-activity paired lifts with their 95 % CIs, pooled over models, one series per arm; False (and no
    file) when the runs carry no buckets."""
    from scripts.experiments import plots

    by, arms, common = coverage(records, plan)
    cells, series = activity_lifts(by, arms, common, plan)
    if not series:
        return False
    labels = [f"{b}\n{span}" for b, (span, _) in cells["buckets"].items()]
    plots.intervals(
        path, labels, series, "user-activity bucket (training ratings)", "test AUC lift, points (paired 95 % CI)"
    )
    return True


def section(
    results: Path, plan: Plan | None = None, figures: Path | None = None, tuned: Path | None = None
) -> list[str]:
    """The study's report as a section of docs/RESULTS.md (empty when no run is stored yet); with `figures`, its
    plot of the paired lifts goes there too. It reports the models and seeds stored for the plan (its command
    trains those); a tuned plan's configurations were read from the file `tuned`."""
    plan = plan or Plan()
    records = stored(plan, results)
    if not records:
        return []
    models = tuple(m for m in plan.models if any(r["model"] == m for r in records))
    plan = replace(plan, models=models, seeds=tuple(sorted({r["seed"] for r in records})))
    figure = []
    if figures is not None:
        split = "" if plan.train.split == "random" else f"-{plan.train.split}"
        name = f"study-{plan.data}{'-tuned' if plan.tuned else ''}{split}.png"
        lift_figure(records, plan, figures / name)
        figure = ["", f"![paired lifts on {plan.data}]({figures.name}/{name})"]
        activity = name.replace(".png", "-activity.png")
        if activity_figure(records, plan, figures / activity):
            figure += ["", f"![paired lifts on {plan.data} by user activity]({figures.name}/{activity})"]
    return [
        f"{'Command' if len(commands(records, plan, tuned)) == 1 else 'Commands'}: "
        + ", ".join(f"`{c}`" for c in commands(records, plan, tuned))
        + f" (then `apg experiment report`); {len(records)} runs stored.",
        "",
        report(records, plan),
        *figure,
    ]


def commands(records: list[dict], plan: Plan, tuned: Path | None = None) -> list[str]:
    """The `apg experiment study run` commands that train the stored runs: one per group of models run with the same
    arms on the same seeds (an arm stored on fewer of its model's seeds is completed by it: the command resumes)."""
    by, arms, _ = coverage(records, plan)
    groups: dict[tuple, list[str]] = {}
    for m in (m for m in plan.models if arms[m]):
        seeds = tuple(s for s in plan.seeds if any((m, a, s) in by for a in arms[m]))
        groups.setdefault((arms[m], seeds), []).append(m)
    tail = (
        (f" --split {plan.train.split}" if plan.train.split != "random" else "")
        + (f" --epochs {plan.train.epochs}" if plan.train.epochs != Plan().train.epochs else "")
        + (f" --tuned {tuned}" if plan.tuned is not None else "")
    )
    return [
        f"apg experiment study run --data {plan.data} --models {','.join(ms)} --arms {','.join(a)} "
        f"--seeds {','.join(map(str, s))}{tail}"
        for (a, s), ms in groups.items()
    ]


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_plan_arguments(p, Plan.arms, (MATCHED,))
    p.add_argument("--runs", type=Path, default=RUNS, help="where run directories go")
    p.add_argument("--tuned", type=Path, help="each arm's tuned configuration (apg experiment tune's JSON file)")
    p.add_argument(
        "--split",
        choices=("random", "time"),
        default="random",
        help="the fixed split every run shares: random (split seed 0) or ordered by time",
    )


def add_plan_arguments(p: argparse.ArgumentParser, arms: tuple[str, ...], extra: tuple[str, ...] = ()) -> None:
    """The options of a paired driver (this study, the cold-start test): what to do, on which data, models, arms
    and seeds, and the training budget every arm shares (read back by ``arms_and_budget``)."""
    p.add_argument("what", choices=["run", "report"], help="train the missing runs, or write the report")
    p.add_argument("--data", default="ml-1m", help="a named dataset (ml-100k, ml-1m)")
    p.add_argument("--models", default="dnn,deepfm", help="base models, comma-separated")
    p.add_argument("--arms", default=",".join(arms), help=f"arms, comma-separated, of: {', '.join((*ARMS, *extra))}")
    p.add_argument(
        "--seeds",
        default=",".join(map(str, Plan.seeds)),
        help="initialisation seeds (0 is kept for choices on validation)",
    )
    p.add_argument("--epochs", type=int, default=10, help="epochs at most")
    p.add_argument("--patience", type=int, default=2, help="early stopping patience (epochs)")
    p.add_argument("--batch-size", type=int, default=1024, help="rows per training step")
    p.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate")
    p.add_argument("--limit", type=int, help="first N rows only (smoke runs)")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads (1 leaves a core for other work)")
    p.add_argument("--device", default="cpu", help="torch device (cuda where a GPU is lent)")
    p.add_argument("--results", type=Path, default=RESULTS, help="where the run store and the report go")


def arms_and_budget(a: argparse.Namespace, extra: tuple[str, ...] = ()) -> tuple[tuple[str, ...], TrainConfig]:
    """The checked arms (of ARMS, and the driver's ``extra`` ones) and the TrainConfig of ``add_plan_arguments``'
    options."""
    arms, known = tuple(a.arms.split(",")), (*ARMS, *extra)
    unknown = [x for x in arms if x not in known]
    if unknown or "base" not in arms:
        raise ValueError(f"--arms must include base and name known arms ({', '.join(known)}); unknown: {unknown}")
    train = TrainConfig(
        epochs=a.epochs,
        patience=a.patience,
        batch_size=a.batch_size,
        lr=a.lr,
        limit=a.limit,
        threads=a.threads,
        device=a.device,
    )
    return arms, train


def run_from_args(a: argparse.Namespace) -> int:
    arms, train = arms_and_budget(a, (MATCHED,))
    train = replace(train, split=a.split)
    tuned = load_tuned(a.tuned, a.data) if a.tuned else None
    plan = Plan(a.data, tuple(a.models.split(",")), arms, tuple(int(s) for s in a.seeds.split(",")), train, tuned)
    if tuned is not None:
        if MATCHED in arms:
            raise ValueError(f"the {MATCHED} control has no tuned configuration: run it without --tuned")
        check_tuned(plan, a.tuned)
    if a.what == "run":
        run(plan, a.results, a.runs)
        return 0
    records = stored(plan, a.results)
    split = "" if a.split == "random" else f"-{a.split}"
    out = a.results / f"study-{plan.data}{'-tuned' if tuned else ''}{split}.md"
    note = f"Each arm with its tuned configuration from `{a.tuned}` (lr and batch size too).\n\n" if tuned else ""
    out.write_text(note + report(records, plan))
    print(out.read_text())
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m scripts.experiments.study",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    add_arguments(p)
    return run_from_args(p.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
