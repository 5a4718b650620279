"""RESULTS.md's opening verdict (issue 24, item 5): one paragraph per question, every number computed from the stores
(the reference-parity runs, the positive control, the ML-1M study, the efficiency front, the strong-recipe search);
a question without runs says which command answers it. `apg experiment report` puts it first."""

from __future__ import annotations

import argparse
import json
import statistics
from collections import Counter
from pathlib import Path

from scripts.experiments.paired import adapted, fmt

SEEDS_PER_ARM = 5  # the strong search's test study: paired seeds 1..5
LABEL = "**APG on a strong recipe.**"  # the strong-recipe paragraph's opening


def _pts(x: float) -> str:
    return f"{x * 100:+.2f}"


def reference_paragraph(results: Path) -> str:
    from scripts.experiments import reference

    done = reference.read_store(reference.store_path(results))
    s = reference.summarise(reference.Plan(), done)
    libs = s["libs"]
    if not all(libs.get(lib, {}).get("lift", {}).get("n", 0) >= 2 for lib in reference.LIBS):
        return (
            "**Does our APG match the reference?** Not answered yet: FuxiCTR's runs are not all stored "
            "(`apg experiment reference run --fuxictr-zoo PATH`, docs/results/reference-ml-1m.md)."
        )
    ours, ref, d, b = libs["ours"], libs["fuxictr"], s["lift_difference"], s["base_difference"]
    base_auc = {k: sum(r["test"]["auc"] for r in v["arms"]["base"]["runs"].values()) for k, v in libs.items()}
    n = {k: len(v["arms"]["base"]["runs"]) for k, v in libs.items()}
    within = d["ci"][0] >= -0.001 and d["ci"][1] <= 0.001
    return (
        "**Does our APG match the reference?** On our exact ML-1M split and one shared recipe, FuxiCTR's own "
        f"DeepFM scores {base_auc['fuxictr'] / n['fuxictr'] * 100:.2f} test AUC and ours "
        f"{base_auc['ours'] / n['ours'] * 100:.2f} (ours minus FuxiCTR's {_pts(b['mean'])} "
        f"[{_pts(b['ci'][0])}, {_pts(b['ci'][1])}], 95 % Welch). Self-wise APG moves FuxiCTR's DeepFM by "
        f"{fmt(ref['lift'])} and ours by {fmt(ours['lift'])} AUC points (ours: {_apg_adapts(ours)}; FuxiCTR "
        "measures none); our lift minus FuxiCTR's is "
        f"{_pts(d['mean'])} [{_pts(d['ci'][0])}, {_pts(d['ci'][1])}] (90 % Welch): "
        + (
            "within the ±0.10 target, so the reference shows no more lift than ours."
            if within
            else "the 90 % interval is not inside ±0.10, so parity is not shown at this number of seeds."
        )
        + _with_fuxictr_init(done)
        + _on_a_grid(done)
        + " Details and the recipe differences FuxiCTR's code fixes: [reference-ml-1m.md](results/reference-ml-1m.md)."
    )


def _with_fuxictr_init(done: dict) -> str:
    """Our runs with FuxiCTR's initialisation (the reference's ``init=xavier`` point), where they are stored."""
    from dataclasses import replace

    from scripts.experiments import reference

    plan = reference.Plan(grid=(replace(reference.Recipe(), init="xavier"),))
    s = reference.summarise(plan, done)
    ours = s["libs"]["ours"]
    if ours["lift"]["n"] < 2:
        return ""
    b = s["base_difference"]
    return (
        f" With FuxiCTR's initialisation (xavier layers, embeddings std 1e-4) our base moves to "
        f"{_pts(b['mean'])} [{_pts(b['ci'][0])}, {_pts(b['ci'][1])}] of FuxiCTR's and our APG lift is "
        f"{fmt(ours['lift'])} ([reference-ml-1m-initxavier.md](results/reference-ml-1m-initxavier.md))."
    )


# The reference's grid (`apg experiment reference run --grid ...`) the verdict tells where its runs are stored
REFERENCE_GRID = "batch_norm=0,1"


def _apg_adapts(lib: dict) -> str:
    """A library's APG runs' adaptation (reference.summarise's entry)."""
    return adapted([r.get("adaptation") for r in lib["arms"]["self"]["runs"].values()])


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _on_a_grid(done: dict) -> str:
    """Each library's point per arm chosen on validation (seed 0) from REFERENCE_GRID, and the parity numbers at the
    chosen points, once every library's lift has at least two seeds there."""
    from scripts.experiments import reference

    plan = reference.Plan(grid=tuple(reference.parse_grid(REFERENCE_GRID)))
    s = reference.summarise(plan, done)
    libs = s["libs"]
    if not all(libs[lib]["lift"]["n"] >= 2 for lib in reference.LIBS):
        return ""
    picks = "; ".join(
        f"{'FuxiCTR' if lib == 'fuxictr' else 'ours'} "
        + ", ".join(f"{arm} {reference._point_name(lib, a['recipe'])}" for arm, a in row["arms"].items())
        for lib, row in libs.items()
    )
    d, b = s["lift_difference"], s["base_difference"]
    return (
        f" Chosen per library and arm on validation (seed 0) from the grid `{REFERENCE_GRID}` ({picks}): "
        f"FuxiCTR's lift {fmt(libs['fuxictr']['lift'])}, ours {fmt(libs['ours']['lift'])} "
        f"({_apg_adapts(libs['ours'])}), ours minus FuxiCTR's "
        f"{_pts(d['mean'])} [{_pts(d['ci'][0])}, {_pts(d['ci'][1])}] (90 %); our base minus FuxiCTR's "
        f"{_pts(b['mean'])} [{_pts(b['ci'][0])}, {_pts(b['ci'][1])}] ([reference-ml-1m-grid.md]"
        "(results/reference-ml-1m-grid.md))."
    )


def control_paragraph(results: Path) -> str:
    """The answer comes from the control's own log size (else the size with the most runs); other sizes follow."""
    from scripts.experiments import control

    records = control.read_store(control.store_path(results))
    if not records:
        return "**Can APG lift anywhere?** Not answered yet: `apg experiment control run`."
    budget = json.loads(Counter(json.dumps(r["budget"], sort_keys=True) for r in records).most_common(1)[0][0])
    counts = Counter(r["rows"] for r in records if r["budget"] == budget)
    main = control.Plan().rows if control.Plan().rows in counts else counts.most_common(1)[0][0]

    def told(size: int) -> list[str]:
        parts = []
        for h, row in control.summarise(records, budget, size).items():
            arms = row["arms"]
            said = ", ".join(
                f"{a}-wise {fmt(v['lift'])}"
                + (f", {adapted(v['adaptations'])}" if v["adaptations"] else "")
                + (f" ({v['gap_closed']['mean'] * 100:.0f} % of the gap to Bayes)" if h else "")
                for a, v in arms.items()
                if a != "base" and v["lift"]["n"]
            )
            parts.append(
                f"at heterogeneity {h:g} (base {arms['base']['auc'] * 100:.2f}, Bayes-optimal "
                f"{row['bayes_auc'] * 100:.2f}, {_count(len(arms['base']['seeds']), 'seed')}): {said}"
            )
        return parts

    s = control.summarise(records, budget, main)
    if not s:
        return "**Can APG lift anywhere?** Not answered yet: no base runs to pair with (`apg experiment control run`)."
    top = s[max(s)]["arms"]
    lifting = [a for a, v in top.items() if a != "base" and v["lift"]["n"] >= 2 and v["lift"]["ci"][0] > 0]
    flat = [a for a, v in top.items() if a != "base" and a not in lifting and v["lift"]["n"]]
    answer = (
        f"Yes: at the highest heterogeneity {', '.join(lifting)}-wise APG lifts with an interval above 0"
        + (f" ({' and '.join(f'{a}-wise' for a in flat)} {'does' if len(flat) == 1 else 'do'} not)" if flat else "")
        if lifting
        else "No arm's lift has an interval above 0"
    )
    others = "".join(
        f" With a {size:,}-row log (`--rows {size}`): " + "; ".join(told(size)) + "."
        for size in sorted(counts)
        if size != main and told(size)
    )
    return (
        f"**Can APG lift anywhere?** {answer}. On the synthetic log whose clicks come from a teacher whose weights "
        f"differ by segment ({budget['model']}, {budget['epochs']} epochs, {main:,} rows; AUC points, paired on "
        "seeds): " + "; ".join(told(main)) + "." + others + " Details: [control.md](results/control.md)."
    )


def ml1m_paragraph(results: Path, plan) -> str:
    """``plan``: the untuned ML-1M study as RESULTS.md's section 1 reports it (results_report.untuned_plan)."""
    from dataclasses import replace

    from scripts.experiments import study
    from scripts.experiments.paired import pooled

    records = study.stored(plan, results)
    if not records:
        return "**Does APG lift on ML-1M?** Not answered yet: `apg experiment study run --data ml-1m`."
    plan = replace(plan, seeds=tuple(sorted({r["seed"] for r in records})))
    by, arms, common = study.coverage(records, plan)
    said = {}
    for a in ("self", "group"):
        models = [m for m in plan.models if a in arms[m]]
        diffs = {
            m: {s: by[(m, a, s)]["test"]["auc"] - by[(m, "base", s)]["test"]["auc"] for s in common(m, a, "base")}
            for m in models
        }
        if models:
            said[a] = (pooled(diffs), models, [by[(m, a, s)]["adaptation"] for m in models for s in diffs[m]])
    if "self" not in said:
        return "**Does APG lift on ML-1M?** Not answered yet: `apg experiment study run --data ml-1m --arms base,self`."
    lift, models, cost = said["self"]
    shown = lift["ci"][0] > 0
    text = (
        f"**Does APG lift on MovieLens-1M?** {'Yes' if shown else 'No lift shown'}. Self-wise APG at the study's "
        f"defaults, pooled over {len(models)} base models ({', '.join(models)}): {fmt(lift)} AUC points, though its "
        f"S_i adapts ({adapted(cost)}: the AUC with every S_i replaced by its mean is lower by that cost)."
    )
    if "group" in said:
        group, group_models, group_cost = said["group"]
        text += (
            f" Group-wise APG keyed on user activity ({', '.join(group_models)}): {fmt(group)}, {adapted(group_cost)}."
        )
    return text + " Section 1 below; the tuned arms in section 2."


def front_paragraph(results: Path) -> str:
    from scripts.experiments import front

    if not front.store_path(results).exists():
        return "**The efficiency front.** Not measured yet: `apg experiment front run`, then `measure` and `report`."
    s = front.summarise(results)
    best = s["best_base"]
    if not best or not any(p["latency"] for p in s["points"].values()):
        return "**The efficiency front.** Runs stored, latency not measured yet: `apg experiment front measure`."
    b = s["points"][best]
    head = (
        f"**The efficiency front.** The best base tower is {best} ({b['auc']['mean'] * 100:.2f} test AUC"
        + (f", 95 % CI [{b['auc']['ci'][0] * 100:.2f}, {b['auc']['ci'][1] * 100:.2f}]" if b["auc"]["n"] >= 2 else "")
        + f", {b['latency'][1024] * 1000:.2f} ms per batch of 1024). "
    )
    if s["cheapest_apg"]:
        head += (
            f"The cheapest APG model inside its interval is {s['cheapest_apg']}, at {s['cheapest_ratio']:.2f}× its "
            "latency at batch 1024 (the target was ≤ 0.6×)."
        )
    else:
        head += "No APG point's AUC lies inside the best base's interval"
        if s["best_apg_ratio"] is not None:
            top = s["points"][s["best_apg"]]
            head += (
                f"; the best APG point, {s['best_apg']} ({top['auc']['mean'] * 100:.2f}, mean-S cost "
                f"{fmt(top['mean_s_cost']) if top['mean_s_cost'] else '–'}, {top['params']:,} "
                f"parameters against {b['params']:,}), runs at {s['best_apg_ratio']:.2f}× its latency at batch 1024"
            )
        head += " (target: an APG model inside the interval at ≤ 0.6× its latency: not met)."
    apg = [n for n, p in s["points"].items() if p["rank"] and p["latency"]]
    if apg and len(s["dominated"]) == len(apg):
        head += " Every APG point (one seed each) is dominated: a base tower is at least as accurate and as fast."
    elif s["dominated"]:
        head += f" {len(s['dominated'])} of the {len(apg)} APG points are dominated by a base tower."
    return head + " Details and the plot: [front-ml-1m.md](results/front-ml-1m.md)."


def _strong_lines(
    results: Path, path: Path, budgets, seconds: list, shown: set, told: tuple = ()
) -> tuple[list[str], dict]:
    """One line per model and epoch budget for the study runs tuned by ``path`` (base vs self-wise, paired on the
    seeds both arms have), but none for the models in ``told`` (their runs were told already); adds the longest
    budget's run times to ``seconds`` and the models given a line to ``shown``. Returns the lines and, per model at
    the longest budget, its paired lift with its base's mean test AUC."""
    from dataclasses import replace

    from scripts.experiments import study
    from scripts.experiments.paired import paired

    tuned = study.load_tuned(path, "ml-1m")
    models = tuple(tuned)
    untuned = study.stored(replace(study.Plan(data="ml-1m"), models=models, arms=("base",)), results)
    lines, lifts = [], {}
    for epochs in budgets:
        plan = replace(study.Plan(data="ml-1m", tuned=tuned), models=models, arms=("base", "self"))
        plan = replace(plan, train=replace(plan.train, epochs=epochs))
        by = {(r["model"], r["arm"], r["seed"]): r for r in study.stored(plan, results)}
        for m in models:
            seeds = sorted(s for (mm, a, s) in by if mm == m and a == "base" and (m, "self", s) in by)
            if not seeds:
                continue
            runs = [by[(m, a, s)] for s in seeds for a in ("base", "self")]
            base = [by[(m, "base", s)]["test"]["auc"] for s in seeds]
            lift = paired([by[(m, "self", s)]["test"]["auc"] - by[(m, "base", s)]["test"]["auc"] for s in seeds])
            old = [r["test"]["auc"] for r in untuned if r["model"] == m and r["arm"] == "base"]
            limited = sum(r["epochs_run"] == epochs for r in runs)
            seconds += [r["wall_seconds"] for r in runs] if epochs == budgets[-1] else []
            lifts |= {m: lift | {"base": sum(base) / len(base)}} if epochs == budgets[-1] else {}
            if m in told:
                continue
            shown.add(m)
            rerun = f" --epochs {epochs}" if epochs != study.Plan().train.epochs else ""
            lines.append(
                f"{m}, {epochs} epochs at most (`--tuned {path}{rerun}`): the base "
                f"{sum(base) / len(base) * 100:.2f} test AUC ({len(seeds)} seeds; the study's default base "
                f"{sum(old) / max(len(old), 1) * 100:.2f}), self-wise APG on it {fmt(lift)} (paired on those "
                f"seeds; {adapted([by[(m, 'self', s)]['adaptation'] for s in seeds])}); {limited} of its "
                f"{len(runs)} runs used every epoch (not ended "
                "by early stopping)"
            )
    return lines, lifts


def strong_paragraph(results: Path) -> str:
    from scripts.experiments import study, tune

    searched = tune.best_path(results, "ml-1m", "strong")
    first = results / "tune" / "ml-1m-strong-first.json"
    lines, seconds, shown = [], [], set()
    budgets = (study.Plan().train.epochs, tune.EPOCHS["strong"])  # the study's, and the strong recipe's own
    if first.exists():
        lines, _ = _strong_lines(results, first, budgets, seconds, shown)
    if lines:
        head = (
            "BARS's MovieLens recipe untuned (embedding regularisation 0.01, "
            "BatchNorm, dropout 0.3, a [400, 400, 400] tower, xavier init; APG with a linear G, generated bias, "
            "K 32/16/8, over-parameterisation 64; `apg experiment tune first --space strong`, then `apg experiment "
            f"study run --models {','.join(sorted(shown))} --arms base,self --tuned ...`): " + "; ".join(lines) + "."
        )
    else:
        head = "No run of the recipe untuned (`apg experiment tune first --space strong`) is stored."
    args = ["--data", "ml-1m", "--models", "dnn,deepfm", "--arms", "base,self", "--space", "strong"]
    parser = argparse.ArgumentParser()
    tune.add_arguments(parser)
    plan = tune.plan_from_args(parser.parse_args(["run", *args, "--trials", "20"]))
    command = f"`apg experiment tune run {' '.join(args)} --trials {plan.trials}`"
    budget = f"every trial at the space's full budget, {budgets[-1]} epochs at most"
    if not searched.exists():
        log = tune.trials_path(results, "ml-1m", "strong")
        done = {(m, a): tune.logged_trials(log, plan.study_name(m, a)) for m in plan.models for a in plan.arms}
        done = {k: ts[: plan.trials] for k, ts in done.items()}  # a search run on past 20 counts its first 20
        total, ran = plan.trials * len(done), sum(map(len, done.values()))
        cost, took = "", [_took(t) for ts in done.values() for t in ts if t.get("started") and t.get("finished")]
        left = f"{total} trials are" if not ran else f"its other {total - ran} trials are"
        if took:  # the search's own trials, pruned ones included; the median, as a paused process's trial is long
            hours = (total - ran) * statistics.median(took) / 3600
            so_far = _count(len(took), "trial")
            cost = f": {left} about {hours:.0f} hours on 2 cores (the median of its {so_far} so far)"
        elif seconds:  # what the longest budget's runs took here: the search's trials are such runs, or pruned ones
            hours = (total - ran) * sum(seconds) / len(seconds) / 3600
            n = len(seconds)
            cost = f": {left} about {hours:.0f} hours on 2 cores (from {n} such runs' mean; pruning aside)"
        if not ran:
            return f"{LABEL} {head} Its search ({command}, {budget}) has not been run{cost}."
        pruned = sum(t["state"] == "PRUNED" for ts in done.values() for t in ts)
        per_arm = ", ".join(f"{m} {a} {len(ts)}" for (m, a), ts in done.items())
        return f"{LABEL} {head}" + (
            f" Its search ({command}, {budget}) has run {ran} of its {total} trials so far ({per_arm}; {pruned} "
            f"pruned; each trial in `{log}`, from which the same command resumes){cost}."
        )
    text, answer = _searched_sentence(results, searched, first, command, budget, seconds)
    return " ".join(x for x in (LABEL, answer, head, text) if x)  # the answer, once there is one, leads


def _searched_sentence(
    results: Path, searched: Path, first: Path, command: str, budget: str, seconds: list
) -> tuple[str, str]:
    """What the finished strong search chose, and its arms' paired test study (or the command that runs it); and,
    once that study has every model's seeds, the paragraph's answer."""
    from scripts.experiments import study

    saved = json.loads(searched.read_text())["configs"]
    entries = [(m, a, e) for m, x in saved.items() for a, e in x.items()]
    epochs = max(e["budget"]["train"]["epochs"] for _, _, e in entries)
    models = sorted(saved)
    cells = "; ".join(f"{m} {a} {e['valid_auc'] * 100:.2f} ({e['trials']} trials)" for m, a, e in entries)
    table = results / f"tune-{searched.stem}.md"  # `apg experiment tune report --space strong` writes it
    link = f"; every value in [{table.name}](results/{table.name})" if table.exists() else ""
    head = f"Its search ({command}, {budget}) chose each arm's configuration on validation (best AUC: {cells}{link})"
    seeds = SEEDS_PER_ARM
    runs = 2 * seeds * len(models)
    study_command = (
        f"`apg experiment study run --data ml-1m --models {','.join(models)} --arms base,self --tuned {searched} "
        f"--epochs {epochs} --seeds {','.join(map(str, range(1, seeds + 1)))}`"
    )
    recipe = study.load_tuned(first, "ml-1m") if first.exists() else {}
    searched_tuned = study.load_tuned(searched, "ml-1m")
    kept = [m for m in models if recipe.get(m) == searched_tuned[m]]  # the same configurations: the same runs
    if kept:
        head += f"; for {' and '.join(kept)} it kept the recipe untuned in every arm (its test runs are those above)"
    told, lifts = _strong_lines(results, searched, (epochs,), [], set(), told=tuple(kept))
    if not lifts:
        cost = f", about {runs * sum(seconds) / len(seconds) / 3600:.1f} hours on 2 cores" if seconds else ""
        return head + f"; its {seeds}-seed test study ({study_command}, {runs} runs{cost}) has no paired runs yet.", ""
    text = head + f"; on test ({study_command})" + (": " + "; ".join(told) if told else "") + "."
    short = [m for m in models if lifts.get(m, {"n": 0})["n"] < seeds]
    if short:
        paired_runs = sum(min(lifts.get(m, {"n": 0})["n"], seeds) for m in models) * 2
        return text + f" {paired_runs} of the study's {runs} runs are paired so far; the same command resumes.", ""
    lifted = [m for m in models if lifts[m]["ci"][0] > 0]
    trails = [m for m in models if lifts[m]["ci"][1] < 0]
    trials = sorted({e["trials"] for _, _, e in entries})
    answer = (f"A lift for {' and '.join(lifted)}." if lifted else "No lift shown.") + (
        f" On the bases tuned by a {'/'.join(map(str, trials))}-trial search per arm ("
        + ", ".join(f"{m} {lifts[m]['base'] * 100:.2f}" for m in models)
        + " test AUC"
        + (f"; {' and '.join(kept)} the recipe itself" if kept else "")
        + "), self-wise APG moves "
        + ", ".join(f"{m} by {fmt(lifts[m])}" for m in models)
        + " AUC points (paired on seeds; below)"
        + (f": APG trails the base on {' and '.join(trails)}." if trails else ".")
    )
    return text + (
        f" The target (self-wise APG above the base with a 95 % CI above 0, for {' and '.join(models)}) is "
        + ("met." if lifted == models else "not met.")
    ), answer


def _took(trial: dict) -> float:
    """A recorded trial's wall-clock seconds."""
    from datetime import datetime

    return (datetime.fromisoformat(trial["finished"]) - datetime.fromisoformat(trial["started"])).total_seconds()


def verdict(results: Path, ml1m_plan) -> list[str]:
    """The section; ``ml1m_plan``: the untuned ML-1M study plan of section 1 (each model with its stored arms)."""
    return [
        "## Verdict (third edition)",
        "",
        reference_paragraph(results),
        "",
        control_paragraph(results),
        "",
        ml1m_paragraph(results, ml1m_plan),
        "",
        front_paragraph(results),
        "",
        strong_paragraph(results),
        "",
        "The second edition's sections follow unchanged.",
        "",
    ]
