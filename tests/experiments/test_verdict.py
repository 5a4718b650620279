"""RESULTS.md's verdict: each paragraph's numbers come from its store, and a question without runs names the
command that answers it."""

from __future__ import annotations

import json
from dataclasses import asdict

import pytest

from scripts.experiments import control, front, reference
from scripts.experiments.verdict import control_paragraph, front_paragraph, reference_paragraph, verdict


def test_without_runs_every_question_names_its_command(tmp_path):
    pytest.importorskip("torch")  # the ML-1M study plan is built from model/'s dataclasses
    from scripts.experiments.results_report import untuned_plan

    text = "\n".join(verdict(tmp_path, untuned_plan("ml-1m")))
    assert "`apg experiment reference run --fuxictr-zoo PATH`" in text
    assert "`apg experiment control run`" in text and "`apg experiment front run`" in text
    assert "`apg experiment study run --data ml-1m`" in text and "--space strong" in text


def write_lines(path, records):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in records))


def test_the_control_answer_follows_the_intervals(tmp_path):
    budget = control.Plan().budget()

    def rec(h, arm, seed, auc, rows=1000):
        adaptation = None if arm == "base" else {"mean_s_cost": 0.01, "layers": [{"spread": 0.5}, {"spread": 0.25}]}
        test = {"auc": auc}
        return {
            "heterogeneity": h,
            "rows": rows,
            "arm": arm,
            "seed": seed,
            "budget": budget,
            "test": test,
            "bayes": {"bayes_auc": 0.80},
            "adaptation": adaptation,
        }

    records = [rec(1.0, "base", s, 0.70 + 0.001 * s) for s in (1, 2, 3)]
    records += [rec(1.0, "group", s, 0.73 + 0.001 * s + 0.0005 * (s == 2)) for s in (1, 2, 3)]
    records += [rec(1.0, "self", s, 0.70 + 0.001 * s + 0.002 * (s == 2) - 0.002 * (s == 3)) for s in (1, 2, 3)]
    # a larger log with fewer runs: told after the answer, which comes from the control's own size
    records += [
        rec(1.0, a, s, 0.75 + 0.04 * (a == "group") + 0.001 * s, rows=4000) for a in ("base", "group") for s in (1, 2)
    ]
    write_lines(control.store_path(tmp_path), records)
    text = control_paragraph(tmp_path)
    assert text.startswith("**Can APG lift anywhere?** Yes: at the highest heterogeneity group-wise APG lifts")
    assert "(self-wise does not)" in text and "group-wise +3.02 [" in text and "(31 % of the gap to Bayes)" in text
    assert "group-wise +3.02 [" in text and "S_i spread per layer 0.500 / 0.250, mean-S cost +1.00 [" in text
    main, larger = text.split(" With a 4,000-row log (`--rows 4000`): ")
    assert "1,000 rows" in main and "+4.00 [" not in main
    assert "(base 75.15, Bayes-optimal 80.00, 2 seeds): group-wise +4.00 [" in larger and "(82 % of the gap" in larger


def test_reference_parity_and_the_front_are_read_from_their_stores(tmp_path):
    rows = []
    for s in (1, 2, 3):
        for lib, base, lift in (("ours", 0.818, 0.0005 * s), ("fuxictr", 0.815, 0.0002 * s + 0.0001)):
            for arm, auc in (("base", base + 0.001 * s), ("self", base + 0.001 * s + lift)):
                rows.append(
                    {
                        "lib": lib,
                        "arm": arm,
                        "seed": s,
                        "recipe": asdict(reference.Recipe()),
                        "valid": {"auc": 0.8},
                        "test": {"auc": auc, "logloss": 0.5},
                    }
                )
    write_lines(reference.store_path(tmp_path), rows)
    text = reference_paragraph(tmp_path)
    assert "FuxiCTR's own DeepFM scores 81.70 test AUC and ours 82.00" in text
    assert "ours by +0.10 [" in text and "(90 % Welch)" in text
    assert "Chosen per library" not in text  # the grid's runs are not stored yet
    # the grid: BatchNorm wins validation for our base only; the others keep the recipe (seed 0 chooses)
    bn = asdict(reference.Recipe(batch_norm=True))
    for lib in ("ours", "fuxictr"):
        for arm in ("base", "self"):
            won = lib == "ours" and arm == "base"
            rows.append(dict(rows[0], lib=lib, arm=arm, seed=0, valid={"auc": 0.80}))
            rows.append(dict(rows[0], lib=lib, arm=arm, seed=0, recipe=bn, valid={"auc": 0.81 if won else 0.79}))
    rows += [dict(rows[0], seed=s, recipe=bn, test={"auc": 0.820 + 0.001 * s, "logloss": 0.5}) for s in (1, 2, 3)]
    write_lines(reference.store_path(tmp_path), rows)
    text = reference_paragraph(tmp_path)
    assert "from the grid `batch_norm=0,1` (ours base {'batch_norm': True}, self recipe; FuxiCTR base recipe" in text
    assert "ours -0.10 [" in text and "reference-ml-1m-grid.md" in text
    base, apg = front.Point((256, 128)), front.Point((256, 128), 8)
    write_lines(
        front.store_path(tmp_path),
        [
            {
                "point": p.name,
                "hidden": list(p.hidden),
                "rank": p.rank,
                "seed": s,
                "test": {"auc": a},
                "params": 10,
                "bundle_bytes": 100,
            }
            for p, s, a in ((base, 1, 0.81), (base, 2, 0.812), (base, 3, 0.811), (apg, 1, 0.8105))
        ],
    )
    front.latency_path(tmp_path).write_text(
        json.dumps({"seconds": {base.name: {"1": 1e-4, "1024": 2e-3}, apg.name: {"1": 1e-4, "1024": 3e-3}}})
    )
    text = front_paragraph(tmp_path)
    assert "The best base tower is base 256x128 (81.10 test AUC, 95 % CI [" in text
    assert "The cheapest APG model inside its interval is APG 256x128 K=8, at 1.50× its latency" in text


def test_the_strong_recipe_is_told_per_epoch_budget_with_the_runs_the_budget_cut(tmp_path):
    pytest.importorskip("torch")  # the study's Plan is built from model/'s dataclasses
    from dataclasses import replace

    from scripts.experiments import study
    from scripts.experiments.verdict import strong_paragraph

    configs = {m: {a: {"model": {"model": m, "apg": {"condition": c}}, "train": {"lr": 1e-3}} for a, c in
               (("base", "none"), ("self", "self"))} for m in ("deepfm", "dnn")}  # fmt: skip
    first = tmp_path / "tune" / "ml-1m-strong-first.json"
    first.parent.mkdir(parents=True)
    first.write_text(json.dumps({"data": "ml-1m", "configs": configs}))
    untuned = study.Plan(data="ml-1m")

    def rec(plan, arm, seed, auc, epochs_run, tuned=True, model="deepfm", seconds=600.0):
        return {
            "key": f"{model}/{plan.train.epochs}/{tuned}/{arm}/{seed}",
            "model": model,
            "arm": arm,
            "seed": seed,
            "budget": plan.budget(),
            "tuned": configs[model][arm] if tuned else None,
            "test": {"auc": auc},
            "adaptation": None if arm == "base" else {"mean_s_cost": 0.15, "layers": [{"spread": 0.2}]},
            "epochs_run": epochs_run,
            "wall_seconds": seconds,
        }

    short = study.Plan(data="ml-1m", tuned=configs)
    long = replace(short, train=replace(short.train, epochs=30))
    records = [rec(untuned, "base", s, 0.80, 10, tuned=False) for s in (1, 2, 3)]
    records += [rec(short, "base", s, 0.82, 10) for s in (1, 2, 3)]
    records += [rec(short, "self", s, 0.81 - 0.001 * s, 10 if s < 3 else 9) for s in (1, 2, 3)]
    records += [rec(long, "base", s, 0.823, 14) for s in (1, 2)]
    records += [rec(long, "self", s, 0.823 + 0.001 * s, 13) for s in (1, 2, 3)]  # seed 3 unpaired: left out
    write_lines(study.store_path(tmp_path, "ml-1m"), records)
    text = strong_paragraph(tmp_path)
    at10, at30 = text.split("deepfm, 10 epochs at most")[1].split("deepfm, 30 epochs at most")
    assert "the base 82.00 test AUC (3 seeds; the study's default base 80.00)" in at10
    assert "self-wise APG on it -1.20 [" in at10 and "5 of its 6 runs used every epoch" in at10
    assert "`--tuned " in at30 and "--epochs 30`" in at30 and "the base 82.30 test AUC (2 seeds;" in at30
    assert "self-wise APG on it +0.15 [" in at30 and "0 of its 4 runs used every epoch" in at30
    assert "seeds; S_i spread per layer 0.200, mean-S cost +15.00 [" in at30
    assert "study run --models deepfm --arms base,self" in text and "dnn, " not in text
    assert "full budget, 30 epochs at most) has not been run: 80 trials are about 13 hours" in text
    # DNN's runs join: their own line, the command names both, and the estimate is every model's runs' mean
    records += [rec(long, a, s, 0.81, 12, model="dnn", seconds=1200.0) for a in ("base", "self") for s in (1, 2)]
    write_lines(study.store_path(tmp_path, "ml-1m"), records)
    text = strong_paragraph(tmp_path)
    assert "study run --models deepfm,dnn --arms base,self" in text and "dnn, 30 epochs at most" in text
    assert "80 trials are about 20 hours on 2 cores (from 8 such runs' mean" in text
    # a search part-way: its committed trial record says how far, and the estimate covers the rest only
    import argparse

    from scripts.experiments import tune

    parser = argparse.ArgumentParser()
    tune.add_arguments(parser)
    command = ["run", "--models", "dnn,deepfm", "--arms", "base,self", "--space", "strong"]
    search = tune.plan_from_args(parser.parse_args(command))
    other = replace(search, train=replace(search.train, epochs=10))  # another budget's search: not this one
    trials = {
        search.study_name("deepfm", "base"): ["COMPLETE", "PRUNED"],
        search.study_name("dnn", "self"): ["COMPLETE"],
        other.study_name("dnn", "base"): ["COMPLETE"] * 5,
    }
    log = tune.trials_path(tmp_path, "ml-1m", "strong")
    searches = {n: {"trials": [{"state": x} for x in states]} for n, states in trials.items()}
    log.write_text(json.dumps({"searches": searches}))
    text = strong_paragraph(tmp_path)
    assert (
        "--space strong --trials 20`, every trial at the space's full budget, 30 epochs at most) has run 3 of its 80"
        in text
    )
    assert "(dnn base 0, dnn self 1, deepfm base 2, deepfm self 0; 1 pruned; each trial in `" in text
    assert f"`{log}`, from which the same command resumes): its other 77 trials are about 19 hours on 2 cores" in text
    # once its trials carry their times, the estimate is theirs (a pruned trial is short)
    for i, minutes in enumerate((10, 10, 50)):  # the last one's process was paused: the median leaves it out
        t = [t for e in searches.values() for t in e["trials"]][i]
        t |= {"started": "2026-12-06T00:00:00", "finished": f"2026-12-06T00:{minutes:02d}:00"}
    log.write_text(json.dumps({"searches": searches}))
    text = strong_paragraph(tmp_path)
    assert "its other 77 trials are about 13 hours on 2 cores (the median of its 3 trials so far)" in text


def test_a_finished_strong_search_tells_its_paired_test_study_and_the_target(tmp_path):
    pytest.importorskip("torch")  # the study's Plan is built from model/'s dataclasses
    from dataclasses import replace

    from scripts.experiments import study, tune
    from scripts.experiments.verdict import strong_paragraph

    def arms(lr, self_lr=None):
        return {a: {"model": {"model": "x", "apg": {"condition": c}}, "train": {"lr": x}} for a, c, x in
                (("base", "none", lr), ("self", "self", self_lr or lr))}  # fmt: skip

    budget = {"train": {"epochs": 30, "patience": 2, "split_seed": 0}, "sampler_seed": 0, "prune_from": 2}
    searched = tune.best_path(tmp_path, "ml-1m", "strong")
    searched.parent.mkdir(parents=True)
    tuned = {m: arms(3e-3) for m in ("deepfm", "dnn")}
    best = {m: {a: c | {"valid_auc": 0.822, "trials": 20, "budget": budget, "params": {}} for a, c in x.items()}
            for m, x in tuned.items()}  # fmt: skip
    searched.write_text(json.dumps({"data": "ml-1m", "configs": best}))
    text = strong_paragraph(tmp_path)
    assert "No run of the recipe untuned (`apg experiment tune first --space strong`) is stored." in text
    assert "chose each arm's configuration on validation (best AUC: deepfm base 82.20 (20 trials);" in text
    command = (
        f"`apg experiment study run --data ml-1m --models deepfm,dnn --arms base,self --tuned {searched} "
        "--epochs 30 --seeds 1,2,3,4,5`"
    )
    assert f"its 5-seed test study ({command}, 20 runs) has no paired runs yet." in text
    assert "every value in" not in text and "kept the recipe" not in text
    (tmp_path / "tune-ml-1m-strong.md").write_text("the search's table")
    text = strong_paragraph(tmp_path)
    assert "(20 trials); every value in [tune-ml-1m-strong.md](results/tune-ml-1m-strong.md))" in text

    # the recipe untuned: DNN's search kept it only where every arm's configuration is the recipe's
    first = tmp_path / "tune" / "ml-1m-strong-first.json"
    recipe = {"deepfm": arms(1e-3), "dnn": arms(3e-3, self_lr=1e-3)}
    first.write_text(json.dumps({"data": "ml-1m", "configs": recipe}))
    assert "kept the recipe" not in strong_paragraph(tmp_path)  # dnn's self arm differs from the recipe's
    recipe["dnn"] = arms(3e-3)
    first.write_text(json.dumps({"data": "ml-1m", "configs": recipe}))
    assert "; for dnn it kept the recipe untuned in every arm (its test runs are those above);" in (
        strong_paragraph(tmp_path)
    )

    def rec(configs, model, arm, seed, auc, seconds=300.0):
        plan = study.Plan(data="ml-1m", tuned=configs)
        plan = replace(plan, train=replace(plan.train, epochs=30))
        return {
            "key": f"{model}/{arm}/{seed}/{configs[model][arm]['train']['lr']}",
            "model": model,
            "arm": arm,
            "seed": seed,
            "budget": plan.budget(),
            "tuned": configs[model][arm],
            "test": {"auc": auc},
            "adaptation": None if arm == "base" else {"mean_s_cost": 0.01, "layers": [{"spread": 0.2}]},
            "epochs_run": 14,
            "wall_seconds": seconds,
        }

    # the recipe's own 30-epoch DeepFM runs: the unrun study's estimate is their mean time
    records = [rec(recipe, "deepfm", a, s, 0.81, seconds=600.0) for a in ("base", "self") for s in (1, 2)]
    write_lines(study.store_path(tmp_path, "ml-1m"), records)
    text = strong_paragraph(tmp_path)
    assert f"its 5-seed test study ({command}, 20 runs, about 3.3 hours on 2 cores) has no paired runs yet." in text
    # one model with more seeds than the study's and the other with none: not whole
    lift = {"deepfm": [0.002, 0.003, 0.002, 0.004, 0.003], "dnn": [0.001, -0.002, 0.002, 0.0, 0.001]}
    searched_runs = [rec(tuned, "deepfm", a, s, 0.82 + (a == "self") * 0.002) for a in ("base", "self") for s in
                     range(1, 11)]  # fmt: skip
    write_lines(study.store_path(tmp_path, "ml-1m"), records + searched_runs)
    text = strong_paragraph(tmp_path)
    assert "10 of the study's 20 runs are paired so far; the same command resumes." in text
    assert "The target" not in text and "No lift shown" not in text and "A lift" not in text
    searched_runs = [rec(tuned, m, "base", s, 0.82) for m in lift for s in range(1, 6)]
    searched_runs += [rec(tuned, m, "self", s, 0.82 + lift[m][s - 1]) for m in lift for s in range(1, 6)]
    write_lines(study.store_path(tmp_path, "ml-1m"), records + searched_runs)
    text = strong_paragraph(tmp_path)
    on_test = text.split(f"; on test ({command}): ")[1]
    assert on_test.startswith(f"deepfm, 30 epochs at most (`--tuned {searched} --epochs 30`)")
    assert "dnn, " not in on_test  # the recipe's runs: told once, in the recipe's own line
    assert f"dnn, 30 epochs at most (`--tuned {first} --epochs 30`)" in text.split("Its search")[0]
    assert "(self-wise APG above the base with a 95 % CI above 0, for deepfm and dnn) is not met." in text
    assert text.startswith(
        "**APG on a strong recipe.** A lift for deepfm. On the bases tuned by a 20-trial search per arm (deepfm "
        "82.00, dnn 82.00 test AUC; dnn the recipe itself), self-wise APG moves deepfm by +0.28 ["
    )
    answer, rest = text.split("AUC points (paired on seeds; below).")
    assert "dnn by +0.04 [" in answer and rest.startswith(" BARS's MovieLens recipe untuned (")
    # APG below the base on DeepFM: no lift, and said so
    searched_runs = [r if r["arm"] == "base" or r["model"] == "dnn" else r | {"test": {"auc": 0.818 - r["seed"] * 1e-4}}
                     for r in searched_runs]  # fmt: skip
    write_lines(study.store_path(tmp_path, "ml-1m"), records + searched_runs)
    text = strong_paragraph(tmp_path)
    assert text.startswith("**APG on a strong recipe.** No lift shown. On the bases")
    assert "AUC points (paired on seeds; below): APG trails the base on deepfm. BARS's" in text
    assert "is not met." in text
    # both lifted: the target is met
    lift = {"deepfm": [0.002, 0.003, 0.002, 0.004, 0.003], "dnn": [0.001, 0.002, 0.002, 0.001, 0.001]}
    searched_runs = [rec(tuned, m, "base", s, 0.82) for m in lift for s in range(1, 6)]
    searched_runs += [rec(tuned, m, "self", s, 0.82 + lift[m][s - 1]) for m in lift for s in range(1, 6)]
    write_lines(study.store_path(tmp_path, "ml-1m"), records + searched_runs)
    text = strong_paragraph(tmp_path)
    assert "for deepfm and dnn) is met." in text and "recipe.** A lift for deepfm and dnn. On the bases" in text
    assert "No lift shown." not in text and "trails" not in text
