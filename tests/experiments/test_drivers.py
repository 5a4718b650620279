"""Tiny versions of every experiment driver and the report, so they cannot rot (few rows, one seed, one epoch)."""

import json

import pytest

from scripts.cli import main


@pytest.mark.slow  # trains every experiment's runs on a few rows
def test_experiment_drivers_and_report_end_to_end(tmp_path):
    results = tmp_path / "results"
    assert main(["experiment", "all", "--quick", "--results", str(results)]) == 0
    runs = [json.loads(line) for line in (results / "runs.jsonl").read_text().splitlines()]
    assert {r["model"] for r in runs} == {"dnn", "deepfm"}
    assert {r["condition"] for r in runs} == {"none", "group", "mix", "self", "static"}
    assert {r["variant"] for r in runs} == {"shared", "lowrank", "basic"}
    assert {r["split"] for r in runs} == {"random", "time"}
    assert all(0 < r["test"]["auc"] < 1 and r["by_bucket"] for r in runs)
    # resumable: a second call finds everything done and trains nothing
    before = (results / "runs.jsonl").read_text()
    assert main(["experiment", "all", "--quick", "--results", str(results)]) == 0
    assert (results / "runs.jsonl").read_text() == before
    # more seeds later: only the new seed trains (the seed count is not part of a run's identity)
    assert main(["experiment", "auc", "--quick", "--seeds", "2", "--results", str(results)]) == 0
    added = (results / "runs.jsonl").read_text().splitlines()[len(before.splitlines()) :]
    assert len(added) == 4 and {json.loads(line)["seed"] for line in added} == {1}

    assert main(["experiment", "complexity", "--quick", "--out", str(results / "complexity.json")]) == 0
    cx = json.loads((results / "complexity.json").read_text())
    static, deployed = cx["mlp"][0], next(r for r in cx["mlp"] if "deployed" in r["variant"])
    assert static["variant"] == "static MLP" and deployed["params_deployed"] < 0.05 * static["params_deployed"]
    merged = next(r for r in cx["mlp"] if "over-param" in r["variant"])
    assert merged["params_deployed"] < merged["params_train"]

    out = tmp_path / "docs" / "RESULTS.md"
    assert main(["experiment", "report", "--quick", "--results", str(results), "--out", str(out)]) == 0
    text = out.read_text()
    for heading in ("AUC table", "Condition strategies", "Controls", "Ablation", "Complexity", "Cold start"):
        assert heading in text
    # the paired ML-1M sections come first; with nothing stored for them they say how to train them
    ml1m = text.split("# MovieLens-100K")[0]
    assert "## In short (computed from the stores below)\n\n- nothing stored yet" in ml1m
    assert "`apg experiment study run --data ml-1m`" in ml1m and "`apg experiment tune run --data ml-1m`" in ml1m
    assert "`apg experiment cold-users run" in ml1m and "`apg experiment study run --data ml-1m --split time`" in ml1m
    assert "Not run yet" not in ml1m.split("## 4. Complexity")[1]  # the complexity run above is reported
    assert (out.parent / "figures" / "auc_lift.png").stat().st_size > 1000
    assert (out.parent / "figures" / "coldstart.png").stat().st_size > 1000
