"""A tiny version of the paired study driver: resumable, paired on common seeds, the report's columns filled."""

import pytest

pytest.importorskip("torch")  # training-side tests: skipped where torch is absent (a serving-only install)

import json
from dataclasses import replace

from scripts.experiments.study import Plan, commands, lift_figure, main, summary


def test_study_runs_pairs_resumes_and_reports(tmp_path):
    args = [
        "--data",
        "ml-100k",
        "--limit",
        "3000",
        "--epochs",
        "1",
        "--seeds",
        "1,2",
        "--models",
        "dnn",
        "--arms",
        "base,static,group",
        "--results",
        str(tmp_path),
        "--runs",
        str(tmp_path / "runs"),
    ]
    assert main(["run", *args]) == 0
    store = tmp_path / "study" / "ml-100k.jsonl"
    records = [json.loads(line) for line in store.read_text().splitlines()]
    assert {(r["arm"], r["seed"]) for r in records} == {(a, s) for a in ("base", "static", "group") for s in (1, 2)}
    assert all(r["adaptation"] is None for r in records if r["arm"] == "base")
    static = [r["adaptation"] for r in records if r["arm"] == "static"]
    assert all(a["layers"][0]["distinct"] == 1 and not a["adaptive"] for a in static)  # the control cannot adapt
    assert all(r["by_activity"] and r["test"]["rows"] == 300 for r in records)
    before = store.read_text()
    assert main(["run", *args]) == 0 and store.read_text() == before  # resumable: nothing trains twice
    assert main(["report", *args]) == 0
    text = (tmp_path / "study-ml-100k.md").read_text()
    lines = [line for line in text.splitlines() if line.startswith("| dnn |")]
    assert len(lines) == 6 and all(line.count("|") == 12 for line in lines[:3])
    assert "(p " in lines[1] and "- group:" in text and "seeds dnn [1, 2]" in text
    assert lines[2].rstrip(" |").endswith("n 2)") and "- group vs static:" in text  # group minus static, paired
    plan = Plan(data="ml-100k", models=("dnn",), arms=("base", "static", "group"), seeds=(1, 2))
    lift_figure(records, plan, tmp_path / "lifts.png")  # RESULTS.md section 1's plot
    short = summary(records, plan)  # RESULTS.md's "In short": a line per arm, pooled over models, its adaptation
    assert [line.split(":")[0] for line in short] == ["static", "group"] and all(
        "over dnn (seeds 1, 2)" in x for x in short
    )
    assert "adaptive in none" in short[0] and "n 2)" in short[1]
    assert (tmp_path / "lifts.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_time_split_is_a_study_of_its_own(tmp_path):
    args = [
        "--data",
        "ml-100k",
        "--limit",
        "3000",
        "--epochs",
        "1",
        "--seeds",
        "1",
        "--models",
        "dnn",
        "--arms",
        "base,self",
        "--results",
        str(tmp_path),
        "--runs",
        str(tmp_path / "runs"),
    ]
    assert main(["run", *args]) == 0 and main(["run", *args, "--split", "time"]) == 0
    records = [json.loads(line) for line in (tmp_path / "study" / "ml-100k.jsonl").read_text().splitlines()]
    assert sorted(r["budget"]["split"] for r in records) == ["random", "random", "time", "time"]  # nothing reused
    # each split, and a budget of other than the study's 10 epochs, has run directories of its own
    assert sorted(p.name for p in (tmp_path / "runs" / "ml-100k").iterdir()) == [
        "dnn-base-e1-s1",
        "dnn-base-time-e1-s1",
        "dnn-self-e1-s1",
        "dnn-self-time-e1-s1",
    ]
    random_test = {r["test"]["auc"] for r in records if r["budget"]["split"] == "random"}
    assert not random_test & {r["test"]["auc"] for r in records if r["budget"]["split"] == "time"}
    assert main(["report", *args, "--split", "time"]) == 0
    text = (tmp_path / "study-ml-100k-time.md").read_text()
    assert "the time split" in text and text.count("| dnn |") == 4  # the arm table and the activity table


def test_the_studys_own_runs_keep_their_directory_names():
    from pathlib import Path

    from scripts.experiments.study import run_dir

    plan = Plan(data="ml-1m")
    assert run_dir(plan, "dnn", "self", 2, Path("r")) == Path("r/ml-1m/dnn-self-s2")
    longer = replace(plan, tuned={"dnn": {}}, train=replace(plan.train, epochs=30))
    assert run_dir(longer, "dnn", "self", 2, Path("r")) == Path("r/ml-1m/dnn-self-tuned-e30-s2")


def test_the_matched_control_is_a_static_tower_as_large_as_the_apg_one(tmp_path, capsys):
    from model.data import load_dataset
    from model.zoo import ModelConfig, build_model
    from scripts.experiments.study import ARMS, arm_configs

    plan = Plan(data="ml-100k", models=("dnn",), arms=("base", "matched", "self"), seeds=(1,))
    plan = Plan(**{**plan.__dict__, "train": plan.train.__class__(**{**plan.train.__dict__, "limit": 3000})})
    matched, _ = arm_configs(plan, "dnn", "matched", 1)
    schema = load_dataset("ml-100k", split="random", seed=0, limit=3000).schema
    size = lambda cfg: sum(p.numel() for p in build_model(schema, cfg).tower.parameters())  # noqa: E731
    apg, base = size(ModelConfig("dnn", apg=ARMS["self"])), size(ModelConfig("dnn"))
    assert matched.apg.condition == "none" and matched.hidden != ModelConfig("dnn").hidden
    assert abs(size(matched) - apg) < 0.1 * apg and base > 1.2 * apg  # matched where the base is not: it is narrowed
    args = [
        "--data",
        "ml-100k",
        "--limit",
        "3000",
        "--epochs",
        "1",
        "--seeds",
        "1",
        "--models",
        "dnn",
        "--arms",
        "base,matched",
        "--results",
        str(tmp_path),
        "--runs",
        str(tmp_path / "runs"),
    ]
    assert main(["run", *args]) == 0
    records = [json.loads(line) for line in (tmp_path / "study" / "ml-100k.jsonl").read_text().splitlines()]
    assert [r["arm"] for r in records] == ["base", "matched"] and records[1]["adaptation"] is None
    with pytest.raises(ValueError, match="unknown"):
        main(["run", *args[:-4], "--arms", "base,nope"])
    from scripts.cli import main as apg

    cold = ["experiment", "cold-users", "run", "--data", "ml-100k", "--arms", "base,matched"]
    assert apg([*cold, "--results", str(tmp_path)]) == 2  # the cold-start driver does not know it
    assert "unknown: ['matched']" in capsys.readouterr().err
    best = tmp_path / "best.json"
    best.write_text(json.dumps({"data": "ml-100k", "configs": {"dnn": {}}}))
    with pytest.raises(ValueError, match="without --tuned"):  # nor a tuned study: it has no tuned configuration
        main(["run", *args, "--tuned", str(best)])


def fake(model: str, arm: str, seed: int, auc: float, adaptive: bool | None = None) -> dict:
    """A stored study record with what the report reads (no training)."""
    layers = [{"spread": 0.1 if adaptive else 0.0, "distinct": 100 if adaptive else 1}]
    adaptation = None if adaptive is None else {"layers": layers, "mean_s_cost": 0.01 * adaptive, "adaptive": adaptive}
    test = {"auc": auc, "logloss": 0.5, "ctr_ratio": 1.0}
    return {
        "model": model,
        "arm": arm,
        "seed": seed,
        "test": test,
        "adaptation": adaptation,
        "by_activity": {"0": {"auc": auc, "rows": 10}},
    }


def test_models_run_with_fewer_arms_are_reported_with_those_they_have(tmp_path):
    from scripts.experiments.study import report

    # dnn: every arm on seeds 1-3; wdl: base and self on seeds 1-2 (its static, matched and seed 3 never run)
    records = [fake("dnn", "base", s, 0.80) for s in (1, 2, 3)]
    records += [
        fake("dnn", a, s, 0.80 + d + 0.001 * s, ad)
        for s in (1, 2, 3)
        for a, d, ad in (("static", -0.01, False), ("matched", 0.0, None), ("self", 0.01, True))
        if (a, s) != ("matched", 3)
    ]  # fmt: skip  (an arm with fewer seeds: compared on those it has)
    records += [fake("wdl", "base", s, 0.79) for s in (1, 2)] + [fake("wdl", "self", s, 0.78) for s in (1, 2)]
    plan = Plan(data="ml-100k", models=("dnn", "wdl"), arms=("base", "static", "matched", "self"), seeds=(1, 2, 3))
    text = report(records, plan)
    rows = [line for line in text.splitlines() if line.startswith("| wdl |")]
    arms = [r.split("|")[2].strip() for r in rows]
    assert arms == ["base", "self", "base", "self"]  # the arm table, then the activity table
    one = report([r for r in records if r["seed"] == 1], plan)  # one seed: a lift without interval or power
    assert "nan" not in one and "| -1.00 (n 1) | – |" in one
    assert "seeds dnn [1, 2, 3]; wdl [1, 2]" in text
    pooled_self = next(line for line in text.splitlines() if line.startswith("- self:"))
    assert pooled_self.startswith("- self: +0.08") and "n 2)" in pooled_self  # dnn +1.1/+1.2, wdl -1 on seeds 1, 2
    vs_matched = [line for line in text.splitlines() if line.startswith("- self vs matched:")]
    assert vs_matched == ["- self vs matched: +1.00 [+1.00, +1.00] (p 0, n 2) over dnn (seeds 1, 2)"]  # its seeds
    # pooled self: over both models on their common seeds, then over dnn on all three of its own
    assert [line for line in text.splitlines() if line.startswith("- self:")][1].startswith("- self: +1.20")
    dnn = {r.split("|")[2].strip(): r for r in text.splitlines() if r.startswith("| dnn |") and "±" in r}  # arm table
    assert dnn["self"].split("|")[4].strip().endswith("n 3)") and dnn["matched"].split("|")[4].strip().endswith("n 2)")
    assert "- self vs static: +2.00" in text and "- static:" in text and "- matched:" in text
    short = summary(records, plan)
    assert [line.split(":")[0] for line in short] == ["static", "matched", "self", "self"]
    assert "over dnn (seeds 1, 2, 3)" in short[0] and "no generated weights" in short[1]
    assert "over dnn, wdl (seeds 1, 2) against the base; adaptive in every run" in short[2]
    assert short[3].startswith("self: +1.20") and "over dnn (seeds 1, 2, 3)" in short[3]
    # the commands that train exactly these runs: one per group of models sharing arms and seeds
    assert commands(records, plan) == [
        "apg experiment study run --data ml-100k --models dnn --arms base,static,matched,self --seeds 1,2,3",
        "apg experiment study run --data ml-100k --models wdl --arms base,self --seeds 1,2",
    ]
    longer = replace(plan, train=replace(plan.train, epochs=30))  # another budget: its command says so
    assert (
        commands(records, longer)[1]
        == "apg experiment study run --data ml-100k --models wdl --arms base,self --seeds 1,2 --epochs 30"
    )
    lift_figure(records, plan, tmp_path / "lifts.png")  # a model without an arm leaves its point out
    assert (tmp_path / "lifts.png").stat().st_size > 1000


def test_the_lift_by_user_activity_is_paired_per_bucket_and_pooled_over_models(tmp_path):
    from scripts.experiments.study import activity_figure, report

    def run(model, arm, seed, coldest, busiest):  # bucket 0: < 10 training ratings; 6: >= 400 (ml-100k's edges)
        r = fake(model, arm, seed, 0.8)
        r["by_activity"] = {"0": {"auc": coldest, "rows": 7}, "6": {"auc": busiest, "rows": 90}}
        return r

    records = []
    for s in (1, 2, 3):
        records += [run(m, "base", s, 0.70, 0.85) for m in ("dnn", "wdl")]
        records += [run("dnn", "self", s, 0.72 + 0.001 * s, 0.84), run("wdl", "self", s, 0.70, 0.84)]
    records.append(run("dnn", "group", 1, 0.75, 0.85))  # one seed: a lift without an interval
    plan = Plan(data="ml-100k", models=("dnn", "wdl"), arms=("base", "self", "group"), seeds=(1, 2, 3))
    text = report(records, plan)
    table = text[text.index("Paired lift over the base by user-activity bucket") :].splitlines()
    rows = {
        line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:-1]]
        for line in table
        if line.startswith("| ") and not line.startswith("| bucket")
    }
    # bucket 0: dnn +2.1/+2.2/+2.3, wdl 0 -> per seed +1.05/+1.10/+1.15, pooled +1.10; bucket 6: -1 on every seed
    assert rows["0"][:3] == ["< 10", "7", "+1.10 [+0.98, +1.22]"] and rows["0"][3] == "+5.00 (n 1)"
    assert rows["6"][:3] == ["≥ 400", "90", "-1.00 [-1.00, -1.00]"]
    assert "self over dnn, wdl (seeds 1, 2, 3); group over dnn (seeds 1)" in text
    assert activity_figure(records, plan, tmp_path / "activity.png")
    assert (tmp_path / "activity.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    bare = [{**r, "by_activity": {}} for r in records]  # runs without buckets: no table, no plot
    assert "by user-activity bucket" not in report(bare, plan) and not activity_figure(bare, plan, tmp_path / "no.png")
    assert not (tmp_path / "no.png").exists()


def test_a_tuned_plans_budget_leaves_the_tuned_learning_rate_and_batch_to_the_configuration():
    from scripts.experiments import study

    tuned = study.Plan(tuned={"deepfm": {"base": {"model": {}, "train": {"lr": 0.004, "batch_size": 2048}}}})
    assert "lr" not in tuned.budget() and "batch_size" not in tuned.budget()
    assert study.Plan().budget()["lr"] == 0.001  # untuned: every arm trains with the plan's
    # the stored tuned runs say so too (they once recorded the plan's lr 0.001 beside their tuned one)
    stored = study.read_store(study.store_path(study.RESULTS, "ml-1m")).values()
    assert all("lr" not in r["budget"] for r in stored if r.get("tuned") is not None)
