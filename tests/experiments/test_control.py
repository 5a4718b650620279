"""The positive control's driver: resumable runs on the synthetic log, paired lifts, the gap to Bayes closed."""

from __future__ import annotations

import pytest

from scripts.experiments.control import Plan, plot, read_store, report, run, sizes, store_path, summarise

BUDGET = Plan().budget()


def record(h, arm, seed, auc, bayes=0.80, cost=None, rows=1000):
    return {
        "heterogeneity": h,
        "rows": rows,
        "arm": arm,
        "seed": seed,
        "budget": BUDGET,
        "test": {"auc": auc},
        "bayes": {"bayes_auc": bayes},
        "adaptation": None if cost is None else {"mean_s_cost": cost},
    }


def test_lift_and_gap_closed_are_paired_per_seed():
    records = [record(1.0, "base", s, 0.70 + 0.01 * s) for s in (1, 2, 3)]
    records += [record(1.0, "group", s, 0.75 + 0.01 * s, cost=0.002) for s in (1, 2, 3)]
    records.append(record(1.0, "group", 4, 0.9))  # no base on seed 4: left out of the pairing
    records.append({**record(1.0, "base", 5, 0.1), "budget": {"other": 1}})  # another budget: not this report's
    records += [record(1.0, a, s, 0.2, rows=2000) for a in ("base", "group") for s in (1, 2)]  # another log size
    arms = summarise(records, BUDGET, 1000)[1.0]["arms"]
    assert arms["group"]["seeds"] == [1, 2, 3] and arms["group"]["lift"]["mean"] == pytest.approx(0.05)
    gaps = [0.05 / (0.80 - 0.70 - 0.01 * s) for s in (1, 2, 3)]
    assert arms["group"]["gap_closed"]["mean"] == pytest.approx(sum(gaps) / 3)
    assert arms["group"]["mean_s_cost"]["mean"] == pytest.approx(0.002)
    assert (
        sizes(records, BUDGET) == [1000, 2000] and summarise(records, BUDGET, 2000)[1.0]["arms"]["base"]["auc"] == 0.2
    )
    # a heterogeneity without base runs yet is not reported (nothing to pair with), nor an arm with no paired seed
    records += [record(0.0, "group", 1, 0.7), record(1.0, "self", 9, 0.7)]
    assert (
        set(summarise(records, BUDGET, 1000)) == {1.0} and "self" not in summarise(records, BUDGET, 1000)[1.0]["arms"]
    )


def test_run_directories_keep_the_controls_names_and_part_other_sizes():
    from pathlib import Path

    from scripts.experiments.control import run_dir

    assert run_dir(Plan(), 1.0, "group", 3) == Path("runs/control/h1/deepfm-group-s3")  # the stored runs' own
    assert run_dir(Plan(rows=2_000_000), 1.0, "group", 3) == Path("runs/control/h1-2000000/deepfm-group-s3")


@pytest.mark.slow
def test_a_tiny_control_runs_resumes_and_reports(tmp_path):
    plan = Plan(
        rows=4000,
        heterogeneity=(0.0, 1.0),
        arms=("base", "group"),
        seeds=(1, 2),
        epochs=1,
        batch_size=256,
        logs=tmp_path / "logs",
        runs=tmp_path / "runs",
        results=tmp_path,
    )
    said = []
    assert len(run(plan, said.append)) == 8
    assert len(run(plan, said.append)) == 8 and len(said) == 16  # the second pass trains nothing
    records = read_store(store_path(tmp_path))
    assert {r["arm"] for r in records} == {"base", "group"} and all(r["bayes"]["bayes_auc"] > 0.6 for r in records)
    assert all(r["adaptation"] for r in records if r["arm"] == "group")
    text = report(plan)
    assert "## 4,000 rows, heterogeneity 1 (Bayes-optimal test AUC 0." in text and "| group | 2 |" in text
    plot(plan, tmp_path / "control.png")
    assert (tmp_path / "control.png").stat().st_size > 10_000
    bigger = Plan(**{**plan.__dict__, "rows": 6000, "heterogeneity": (1.0,), "seeds": (1,)})
    assert len(run(bigger, said.append)) == 10  # a larger log: its own runs and run directories, the first kept
    assert {p.name for p in (tmp_path / "runs").iterdir()} == {"h0-4000", "h1-4000", "h1-6000"}
    text = report(bigger)
    assert text.index("## 4,000 rows, heterogeneity 1") < text.index("## 6,000 rows, heterogeneity 1")
    assert "`apg experiment control run --rows 6000 --heterogeneity 1 --arms base,group --seeds 1 --epochs 1" in text
