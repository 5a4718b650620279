"""A tiny version of the paired study driver: resumable, paired on common seeds, the report's columns filled."""

import pytest

pytest.importorskip("torch")  # training-side tests: skipped where torch is absent (a serving-only install)

import json

from scripts.experiments.study import Plan, lift_figure, main, summary


def test_study_runs_pairs_resumes_and_reports(tmp_path):
    args = ["--data", "ml-100k", "--limit", "3000", "--epochs", "1", "--seeds", "1,2", "--models", "dnn",
            "--arms", "base,static,group", "--results", str(tmp_path), "--runs", str(tmp_path / "runs")]  # fmt: skip
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
    assert [line.split(":")[0] for line in short] == ["static", "group"] and all("(dnn)" in x for x in short)
    assert "adaptive in none" in short[0] and "n 2)" in short[1]
    assert (tmp_path / "lifts.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_time_split_is_a_study_of_its_own(tmp_path):
    args = ["--data", "ml-100k", "--limit", "3000", "--epochs", "1", "--seeds", "1", "--models", "dnn",
            "--arms", "base,self", "--results", str(tmp_path), "--runs", str(tmp_path / "runs")]  # fmt: skip
    assert main(["run", *args]) == 0 and main(["run", *args, "--split", "time"]) == 0
    records = [json.loads(line) for line in (tmp_path / "study" / "ml-100k.jsonl").read_text().splitlines()]
    assert sorted(r["budget"]["split"] for r in records) == ["random", "random", "time", "time"]  # nothing reused
    assert sorted(p.name for p in (tmp_path / "runs" / "ml-100k").iterdir()) == [
        "dnn-base-s1", "dnn-base-time-s1", "dnn-self-s1", "dnn-self-time-s1"]  # fmt: skip
    random_test = {r["test"]["auc"] for r in records if r["budget"]["split"] == "random"}
    assert not random_test & {r["test"]["auc"] for r in records if r["budget"]["split"] == "time"}
    assert main(["report", *args, "--split", "time"]) == 0
    text = (tmp_path / "study-ml-100k-time.md").read_text()
    assert "the time split" in text and text.count("| dnn |") == 4  # the arm table and the activity table
