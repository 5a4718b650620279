"""Regenerates docs/RESULTS.md and its plots from docs/results/ (runs.jsonl, complexity.json). Trains nothing.

apg experiment report [--results docs/results] [--out docs/RESULTS.md]
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
from scipy import stats

from scripts.experiments import plots
from scripts.experiments.drivers import QUICK, Budget, Store, choose, plan

MAX_SEEDS = 20
NAMES = {
    "dnn": "DNN",
    "wdl": "WDL",
    "pnn": "PNN",
    "deepfm": "DeepFM",
    "dcn": "DCN",
    "dcnv2": "DCNv2",
    "autoint": "AutoInt",
}


def ms(values: list[float], scale: float = 100.0, digits: int = 2) -> str:
    """mean ± std (sample std over seeds), in AUC points (×100) by default."""
    if not values:
        return "not run"
    v = np.array(values) * scale
    return f"{v.mean():.{digits}f} ± {v.std(ddof=1) if len(v) > 1 else 0:.{digits}f}"


def ratio(row: dict, ref: dict, key: str) -> str:
    return f"{row[key] / ref[key]:.3f}" if row.get(key) and ref.get(key) else "n/a"


def welch(a: list[float], b: list[float]) -> str:
    if len(a) < 2 or len(b) < 2:
        return "n/a"
    return f"{stats.ttest_ind(b, a, equal_var=False).pvalue:.3f}"


def group(records: list[dict | None], **match) -> list[dict]:
    return [r for r in records if r and all(r[k] == v for k, v in match.items())]


def metric(rs: list[dict], split: str, name: str) -> list[float]:
    return [r[split][name] for r in rs]


def auc_section(store: Store, budget: Budget, figs: Path) -> list[str]:
    best = choose([store.get(r, budget) for r in plan("select", budget)])
    recs = [store.get(r, budget) for r in plan("auc", budget, best)]
    lines = [
        "| model | APG condition (chosen on valid) | base test AUC | APG test AUC | lift (pts) | Welch p "
        "| base logloss | APG logloss | base / APG predicted÷observed CTR | seeds |",
        "|" + "---|" * 10,
    ]
    lifts = {}
    for m in budget.models:
        base, apg = group(recs, model=m, condition="none"), group(recs, model=m, condition=best.get(m, "?"))
        if not base or not apg:
            lines.append(f"| {NAMES[m]} | {best.get(m, 'not run')} | not run | | | | | | | |")
            continue
        b, a = metric(base, "test", "auc"), metric(apg, "test", "auc")
        paired = {r["seed"]: r["test"]["auc"] for r in apg}
        diffs = [paired[r["seed"]] - r["test"]["auc"] for r in base if r["seed"] in paired]
        lifts[m] = (100 * (np.mean(a) - np.mean(b)), 100 * np.std(diffs))
        cal = f"{np.mean(metric(base, 'test', 'ctr_ratio')):.3f} / {np.mean(metric(apg, 'test', 'ctr_ratio')):.3f}"
        lines.append(
            f"| {NAMES[m]} | {best[m]} | {ms(b)} | {ms(a)} | {lifts[m][0]:+.2f} | {welch(b, a)} | "
            f"{ms(metric(base, 'test', 'logloss'), 1, 4)} | {ms(metric(apg, 'test', 'logloss'), 1, 4)} | {cal} "
            f"| {len(b)}/{len(a)} |"
        )
    if lifts:
        names = list(lifts)
        plots.bars(
            figs / "auc_lift.png",
            [NAMES[n] for n in names],
            [lifts[n][0] for n in names],
            [lifts[n][1] for n in names],
            "test AUC lift, points",
            "APG (chosen condition) minus base, mean over seeds (± std of paired differences)",
            zero_line=True,
        )
        mean_lift = np.mean([v[0] for v in lifts.values()])
        lines += [
            "",
            f"Mean lift over the {len(lifts)} base models: **{mean_lift:+.2f} AUC points** (paper, MovieLens: +0.25).",
            "",
            "![AUC lift](figures/auc_lift.png)",
        ]
    return lines


def table(recs: list[dict | None], rows: list[tuple[str, dict]], figure: Path | None = None) -> list[str]:
    """A markdown table of runs grouped by ``rows`` (label, match), and a bar chart of test AUC when asked."""
    lines = [
        "| configuration | valid AUC | test AUC | test gAUC | test logloss | params | s / run | seeds |",
        "|" + "---|" * 8,
    ]
    bars = []
    for label, match in rows:
        rs = group(recs, **match)
        if not rs:
            lines.append(f"| {label} | not run | | | | | | |")
            continue
        auc = metric(rs, "test", "auc")
        bars.append((label, 100 * np.mean(auc), 100 * np.std(auc, ddof=1) if len(auc) > 1 else 0.0))
        lines.append(
            f"| {label} | {ms(metric(rs, 'valid', 'auc'))} | {ms(auc)} | "
            f"{ms(metric(rs, 'test', 'gauc'))} | {ms(metric(rs, 'test', 'logloss'), 1, 4)} | "
            f"{rs[0]['params']:,} | {np.mean([r['seconds'] for r in rs]):.0f} | {len(rs)} |"
        )
    if figure is not None and bars:
        plots.bars(figure, *map(list, zip(*bars, strict=True)), "test AUC, points", "test AUC, mean ± std over seeds")
        lines += ["", f"![{figure.stem}](figures/{figure.name})"]
    return lines


def coldstart_section(store: Store, budget: Budget, figs: Path) -> list[str]:
    recs = [store.get(r, budget) for r in plan("coldstart", budget)]
    lines = table(
        recs,
        [
            (f"{NAMES[m]} {c} (time split)", {"model": m, "condition": c})
            for m in ("dnn", "deepfm")
            for c in ("none", "self")
        ],
    )
    lines += [
        "",
        "Test AUC lift of self-wise APG over the base, by user-activity bucket (training interactions; "
        "bucket 0 holds users with < 10, including users unseen in training):",
        "",
        "| model | " + " | ".join(f"bucket {b}" for b in range(7)) + " |",
        "|" + "---|" * 8,
    ]
    series = {}
    for m in ("dnn", "deepfm"):
        base, apg = group(recs, model=m, condition="none"), group(recs, model=m, condition="self")
        if not base or not apg:
            continue
        cells, xs, ys = [], [], []
        for b in map(str, range(7)):
            pb = [r["by_bucket"][b]["auc"] for r in base if b in r["by_bucket"]]
            pa = [r["by_bucket"][b]["auc"] for r in apg if b in r["by_bucket"]]
            if pb and pa and not np.isnan(pb + pa).any():
                lift = 100 * (np.mean(pa) - np.mean(pb))
                rows = base[0]["by_bucket"][b]["rows"]
                cells.append(f"{lift:+.2f} ({rows} rows)")
                xs.append(int(b))
                ys.append(lift)
            else:
                cells.append("–")
        lines.append(f"| {NAMES[m]} | " + " | ".join(cells) + " |")
        series[NAMES[m]] = (xs, ys)
    plots.lines(figs / "coldstart.png", series, "user-activity bucket (0 = coldest)", "test AUC lift, points")
    return lines + ["", "![cold start](figures/coldstart.png)"]


def complexity_section(path: Path, figs: Path) -> list[str]:
    if not path.exists():
        return ["Not run yet: `apg experiment complexity --runs runs/deepfm runs/deepfm-self`."]
    c = json.loads(path.read_text())
    lines = [
        f"Command: `{c['command']}` (onnxruntime CPU, {c['threads']} intra-op thread; latency = median per "
        "`run`; ratios to the first row, measured in the same run).",
        "",
    ]
    for title, rows in (("MLP " + str(c["sizes"]), c["mlp"]), ("Trained models", c["trained"])):
        if not rows:
            continue
        ref = rows[0]
        lines += [
            f"**{title}**",
            "",
            "| variant | params (deployed) | × | ONNX bytes | × | latency b=1 (µs) | × | latency b=1024 (ms) | × |",
            "|" + "---|" * 9,
        ]
        unflushed = all("latency_b1024_unflushed" in r for r in rows)  # trained models: also without the flush
        if unflushed:
            lines[-2] += " b=1024 unflushed (ms) |"
            lines[-1] += "---|"
        for r in rows:
            b1 = f"{r['latency_b1'] * 1e6:.1f}" if r.get("latency_b1") else "n/a"
            b1024 = f"{r['latency_b1024'] * 1e3:.2f}" if r.get("latency_b1024") else "n/a (too large)"
            lines.append(
                f"| {r['variant']} | {r['params_deployed']:,} | {ratio(r, ref, 'params_deployed')} | "
                f"{r['onnx_bytes']:,} | {ratio(r, ref, 'onnx_bytes')} | {b1} | {ratio(r, ref, 'latency_b1')} | "
                f"{b1024} | {ratio(r, ref, 'latency_b1024')} |"
                + (f" {r['latency_b1024_unflushed'] * 1e3:.2f} |" if unflushed else "")
            )
        if unflushed:
            lines += [
                "",
                "*unflushed*: the same model exported with its weights below 1e-30 kept (model/export.py "
                "flushes them to 0: their products are subnormal floats, slow on the CPU).",
            ]
        lines.append("")
        name = "complexity_mlp.png" if title.startswith("MLP") else "complexity_trained.png"
        plots.ratios(
            figs / name,
            rows,
            {
                "params_deployed": "parameters",
                "onnx_bytes": "ONNX bytes",
                "latency_b1": "latency, batch 1",
                "latency_b1024": "latency, batch 1024",
            },
            title,
        )
        lines += [f"![{title}](figures/{name})", ""]
    return lines


def stored_arms(plan, results: Path):
    """``plan`` (a study.Plan) with only the arms its store has runs of (the time split trains a subset)."""
    from scripts.experiments import study

    arms = {r["arm"] for r in study.stored(plan, results)}
    return replace(plan, arms=tuple(a for a in plan.arms if a in arms))


def untuned_plan(data: str, split: str = "random"):
    """The study with every arm's defaults, as RESULTS.md reports it: all seven base models and both controls (each
    model with the arms its store holds)."""
    from scripts.experiments import study

    train = replace(study.Plan().train, split=split)
    return study.Plan(
        data=data, models=tuple(NAMES), arms=("base", "static", study.MATCHED, "self", "group"), train=train
    )


def in_short(results: Path, data: str) -> list[str]:
    """The answers sections 1-3 (or 5, for ML-100K) give, a line each: every stored paired study's pooled lift per
    arm and whether the arm adapts; the cold-start test's pooled lift on the cold users' rows."""
    from scripts.experiments import coldstart, study, tune
    from scripts.experiments.paired import fmt, pooled

    plans = [("random split, default settings", untuned_plan(data))]
    plans.append(("time split", untuned_plan(data, "time")))
    best = tune.best_path(results, data)
    if best.exists():
        plans.append(("each arm tuned", study.Plan(data=data, tuned=study.load_tuned(best, data))))
    lines = []
    for label, p in plans:
        if p.tuned is not None:  # the tuned arms are those of the tuned file
            p = replace(p, arms=tuple(a for a in p.arms if all(a in p.tuned[m] for m in p.tuned)))
        p = stored_arms(p, results)
        records = study.stored(p, results)
        seeds = tuple(sorted({r["seed"] for r in records}))
        lines += [f"{data}, {label}: {line}" for line in study.summary(records, replace(p, seeds=seeds))]
    cplan = coldstart.Plan(data=data)
    runs = coldstart.Paired.of(coldstart.stored(cplan, results), cplan)
    most = max((len(s) for s in runs.seeds.values()), default=0)
    models = [m for m in cplan.models if runs.seeds[m] and len(runs.seeds[m]) == most]  # pooled on common seeds
    for a in (a for a in cplan.arms if a != "base" and models):
        cold = pooled({m: runs.lift(m, a, "cold") for m in models})
        lines.append(f"{data}, cold-start users' rows: {a} {fmt(cold)} over the base ({', '.join(models)})")
    return lines or ["nothing stored yet"]


def ml1m_sections(results: Path, figs: Path, data: str = "ml-1m") -> list[str]:
    """Sections 1-4, from the paired drivers' stores: the study with every arm's defaults, the equal-budget search
    and the study with each arm's tuned configuration, the cold-start test (a section with no stored run says how
    to train it); then the complexity of the models (a synthetic MLP and the trained ML-1M ones)."""
    from scripts.experiments import coldstart, study, tune

    short = in_short(results, data) + (in_short(results, "ml-100k") if ml100k_stored(results) else [])
    lines = ["## In short (computed from the stores below)", ""] + [f"- {line}" for line in short]
    lines += ["", "## 1. MovieLens-1M: does APG lift AUC, and which condition adapts?", ""]
    untuned = study.section(results, stored_arms(untuned_plan(data), results), figures=figs)
    lines += untuned or [f"No run stored yet: `apg experiment study run --data {data}`."]
    timed = stored_arms(untuned_plan(data, "time"), results)
    lines += ["", "### The time split", ""] + (
        study.section(results, timed, figures=figs)
        or [f"No run stored yet: `apg experiment study run --data {data} --split time`."]
    )
    lines += ["", "## 2. MovieLens-1M: each arm with its own tuned configuration", ""]
    best = tune.best_path(results, data)
    saved = json.loads(best.read_text()) if best.exists() else None
    if saved is None:
        lines += [
            f"Not tuned yet: `apg experiment tune run --data {data}`, then `apg experiment study run --data "
            f"{data} --tuned {best}`."
        ]
    else:
        models = tuple(m for m in NAMES if m in saved["configs"])
        arms = tuple(a for a in study.ARMS if all(a in saved["configs"][m] for m in models))
        searched = tune.TunePlan(data=data, models=models, arms=arms)
        lines += [
            f"Search: `{tune.run_command(saved, searched)}` (`apg experiment tune report` writes this table alone).",
            "",
            tune.report(saved, searched),
        ]
        plan = study.Plan(data=data, models=models, arms=arms, tuned=study.load_tuned(best, data))
        lines += study.section(results, plan, figures=figs, tuned=best) or [
            f"No tuned run stored yet: `apg experiment study run --data {data} --models {','.join(models)} --arms "
            f"{','.join(arms)} --tuned {best}`."
        ]
    lines += ["", "## 3. MovieLens-1M: cold start, by user activity", ""]
    cplan = coldstart.Plan(data=data)
    lines += [
        f"Command: `apg experiment cold-users run --data {data} --models {','.join(cplan.models)} --seeds "
        f"{','.join(map(str, cplan.seeds))}` (the report takes the seeds on which every arm has a run).",
        "",
        coldstart.report(coldstart.stored(cplan, results), cplan, figs / f"coldstart-{data}.png", figs.parent),
    ]
    lines += ["", "## 4. Complexity: what would be deployed", ""]
    return lines + complexity_section(results / "complexity.json", figs)


def ml100k_stored(results: Path) -> bool:
    from scripts.experiments import study

    return bool(study.stored(untuned_plan("ml-100k"), results))


def ml100k_section(results: Path, figs: Path) -> list[str]:
    """Section 5: MovieLens-100K under the paired protocol (the first edition's runs follow it, unpaired)."""
    from scripts.experiments import study

    lines = ["## 5. MovieLens-100K under the paired protocol", ""]
    return lines + (
        study.section(results, stored_arms(untuned_plan("ml-100k"), results), figures=figs)
        or [f"No run stored yet: `apg experiment study run --data ml-100k --models {','.join(NAMES)}`."]
    )


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The options of `apg experiment report`."""
    p.add_argument("--results", default="docs/results", help="folder of runs.jsonl and complexity.json")
    p.add_argument("--out", default="docs/RESULTS.md", help="the markdown report (its plots go to ./figures beside it)")
    p.add_argument("--quick", action="store_true", help="report the --quick budget's runs")


def run_from_args(args) -> int:
    # every seed found in the results counts (plans ask for up to MAX_SEEDS; runs not found are left out)
    budget = replace(QUICK if args.quick else Budget(), seeds=MAX_SEEDS)
    results, out = Path(args.results), Path(args.out)
    figs = out.parent / "figures"
    figs.mkdir(parents=True, exist_ok=True)
    store = Store(results)
    sections = render(store, budget, results, figs)
    out.write_text("\n".join(sections) + "\n")
    print(f"wrote {out} and {figs}/")
    return 0


def render(store: Store, budget: Budget, results: Path, figs: Path) -> list[str]:
    from scripts.experiments.verdict import verdict

    t = budget.train
    rec = {n: [store.get(r, budget) for r in plan(n, budget)] for n in ("conditions", "controls", "ablation")}
    two = [(m, NAMES[m]) for m in ("dnn", "deepfm")]
    ml1m = ml1m_sections(results, figs)
    return [
        "# Results: APG on MovieLens-1M, MovieLens-100K and a synthetic log with a known answer",
        "",
        "Generated by `apg experiment report` from `docs/results/` (trains nothing); every table names the command "
        "that trains its runs (each resumable). Sections 1-4 are MovieLens-1M and section 5 MovieLens-100K under the "
        "paired protocol: one fixed split, seeds vary the initialisation only, every lift a paired difference with "
        "its 95 % t interval. Sections 6-10 are the first edition on MovieLens-100K (unpaired: there a seed changed "
        "the split too; the condition was chosen on a seed it then reported): kept for what the paired study does "
        "not cover (mix-wise, the ablation), to be read with that caution.",
        "",
        *verdict(results, stored_arms(untuned_plan("ml-1m"), results)),
        *ml1m,
        "",
        *ml100k_section(results, figs),
        "",
        "# MovieLens-100K, first edition (unpaired)",
        "",
        "Generated by `apg experiment report` from `docs/results/`; the runs come from "
        "`apg experiment all` (resumable). Protocol: random 80/10/10 split unless stated, the same "
        f"budget for every run ({t.epochs} epochs max, early stopping on validation AUC with patience "
        f"{t.patience}, batch {t.batch_size}, Adam lr {t.lr}), seeds 0, 1, 2, … (column *seeds*); the "
        "condition for APG is chosen on validation AUC (seed 0), the test split is only reported. AUC figures are "
        "in points (×100), mean ± std over seeds; Welch p is a two-sided Welch t-test of test AUC, APG vs base.",
        "",
        "## 6. AUC table: every base model without and with APG",
        "",
        *auc_section(store, budget, figs),
        "",
        "## 7. Condition strategies",
        "",
        "Command: `apg experiment conditions`",
        "",
        *table(
            rec["conditions"],
            [(f"{n} {c}", {"model": m, "condition": c}) for m, n in two for c in ("none", "group", "mix", "self")],
            figs / "conditions.png",
        ),
        "",
        "## 8. Controls: is the lift APG's?",
        "",
        "Command: `apg experiment controls`. *static S* is "
        "the same low-rank tower with one learned S for all samples; *matched MLP* is a static tower with about as "
        "many parameters as the APG tower.",
        "",
        *table(
            rec["controls"],
            [
                (f"{n} {lab}", {"model": m, "condition": c})
                for m, n in two
                for lab, c in (
                    ("APG self-wise", "self"),
                    ("static S (control a)", "static"),
                    ("matched MLP (control b)", "none"),
                )
            ],
            figs / "controls.png",
        ),
        "",
        "## 9. Ablation (DNN, self-wise)",
        "",
        "Command: `apg experiment ablation`. The *low-rank* "
        "variant generates U_i, S_i and V_i; its decomposed and explicit forward passes compute the same function "
        "(tests/model/test_apg.py), so they share one AUC row and differ only in cost (section 4).",
        "",
        *table(
            rec["ablation"],
            [
                ("basic (W_i generated)", {"variant": "basic"}),
                ("low-rank (U_i, S_i, V_i generated)", {"variant": "lowrank"}),
                ("+ parameter sharing (U, V shared)", {"variant": "shared", "overparam": 0, "condition": "self"}),
                ("+ over-parameterisation P=32", {"overparam": 32}),
                ("no APG", {"condition": "none"}),
            ],
            figs / "ablation.png",
        ),
        "",
        "## 10. Cold start (time split)",
        "",
        "Command: `apg experiment coldstart` (time-ordered split).",
        "",
        *coldstart_section(store, budget, figs),
    ]
