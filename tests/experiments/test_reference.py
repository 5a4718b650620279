"""Reference parity's driver: the split exported for FuxiCTR (checked value by value), the configs written from a
recipe, the grid and its choice on validation, the resumable store, our runs taken from the study's store, the
report's Welch intervals. (FuxiCTR's own runs are a benchmark, not CI: they need its venv and model zoo.)"""

from __future__ import annotations

import csv
import json
from dataclasses import asdict, replace

import numpy as np
import pytest
import yaml

from features import Schema
from model.data import Dataset
from scripts.experiments import reference
from scripts.experiments.paired import welch
from scripts.experiments.reference import Plan, Recipe, chosen, parse_grid, read_store, store_path
from scripts.experiments.reference_data import SEQ_SEP, check, dataset_config, export
from scripts.experiments.reference_fuxictr import DATASET_ID, check_zoo, model_config, write_configs

SCHEMA = {
    "name": "tiny",
    "label": {"column": "y"},
    "fields": [
        {"name": "user", "kind": "categorical", "vocab": ["a", "b", "c"]},
        {"name": "age", "kind": "numeric", "edges": [18, 30]},
        {"name": "tags", "kind": "multi", "max_len": 3, "vocab": ["x", "y", "z", "w"]},
    ],
}


def tiny_dataset(n: int = 40) -> Dataset:
    rng = np.random.default_rng(0)
    tags = rng.integers(2, 6, size=(n, 3))
    tags[::3, 1:] = 0  # one tag, padded
    tags[::7] = 0  # none at all
    x = {"user": rng.integers(0, 5, size=n), "age": rng.integers(0, 4, size=n), "tags": tags}
    order = rng.permutation(n)
    splits = {"train": order[: n // 2], "valid": order[n // 2 : 3 * n // 4], "test": order[3 * n // 4 :]}
    y = (rng.random(n) < 0.4).astype(np.float32)
    return Dataset(Schema.from_dict(SCHEMA), x, y, np.zeros(n, dtype=object), splits, None)


def test_export_is_our_encoded_split_value_by_value(tmp_path):
    data = tiny_dataset()
    manifest = export(data, tmp_path)
    assert manifest["rows"] == {"train": 20, "valid": 10, "test": 10}
    assert check(data, tmp_path) == 40
    with (tmp_path / "valid.csv").open() as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["label", "user", "age", "tags"]
    first = data.splits["valid"][0]
    assert rows[1][1] == str(data.x["user"][first])
    assert rows[1][3] == SEQ_SEP.join(str(v) for v in data.x["tags"][first] if v)  # no padding written
    assert export(data, tmp_path) == manifest  # unchanged data: not written again


def test_check_names_the_first_value_that_differs(tmp_path):
    data = tiny_dataset()
    export(data, tmp_path)
    path = tmp_path / "test.csv"
    lines = path.read_text().splitlines()
    cells = lines[3].split(",")
    cells[1] = str(int(cells[1]) + 1)
    path.write_text("\n".join([*lines[:3], ",".join(cells), *lines[4:]]) + "\n")
    with pytest.raises(ValueError, match="test.csv row 3 column user"):
        check(data, tmp_path)
    path.write_text("\n".join(lines[:-1]) + "\n")  # a row short
    with pytest.raises(ValueError, match="test.csv has 9 rows, the encoded test split 10"):
        check(data, tmp_path)


def test_dataset_config_declares_every_field_as_fuxictr_reads_it(tmp_path):
    data = tiny_dataset()
    config = dataset_config(data.schema, tmp_path / "export", DATASET_ID, tmp_path / "data")[DATASET_ID]
    cols = {c["name"]: c for c in config["feature_cols"]}
    assert cols["user"]["type"] == cols["age"]["type"] == "categorical"  # bucket indices, as our model embeds them
    assert cols["tags"] | {} == {
        "name": "tags",
        "active": True,
        "dtype": "str",
        "type": "sequence",
        "splitter": SEQ_SEP,
        "max_len": 3,
        "padding": "post",
    }
    assert config["min_categr_count"] == 1 and config["data_format"] == "csv"
    assert config["test_data"].endswith("export/test.csv") and config["data_root"] == str(tmp_path / "data")


def test_model_config_maps_the_recipe_and_survives_yaml(tmp_path):
    recipe = Recipe(hidden=(400, 400, 400), dropout=0.3, batch_norm=True, lr=1e-4, cond_hidden=0, rank=8)
    config = model_config("self", recipe, 3, tmp_path / "ckpt")
    expid = write_configs(tmp_path / "cfg", {"d": {}}, config)
    assert expid == "APG_DeepFM_self_s3"
    loaded = yaml.safe_load((tmp_path / "cfg" / "model_config.yaml").read_text())[expid]
    # PyYAML reads "1e-04" as a string: every number must come back a number
    assert loaded["learning_rate"] == pytest.approx(1e-4) and isinstance(loaded["learning_rate"], float)
    assert loaded["hidden_units"] == [400, 400, 400] and loaded["net_dropout"] == 0.3 and loaded["batch_norm"]
    assert loaded["hypernet_config"]["hidden_units"] == []  # cond_hidden 0: a linear G, as ours
    assert loaded["rank_k"] == 8 and loaded["overparam_p"] is None and loaded["generate_bias"] is False
    assert loaded["seed"] == 3 and loaded["condition_mode"] == "self-wise"
    base = model_config("base", Recipe(), 1, tmp_path)
    assert "rank_k" not in base["DeepFM_base_s1"] and base["DeepFM_base_s1"]["model"] == "DeepFM"


def test_a_zoo_without_the_models_is_refused(tmp_path):
    with pytest.raises(ValueError, match="--fuxictr-zoo PATH is needed"):
        check_zoo(None)
    with pytest.raises(ValueError, match="model_zoo/APG missing"):
        (tmp_path / "model_zoo/DeepFM/DeepFM_torch/src").mkdir(parents=True)
        (tmp_path / "model_zoo/DeepFM/DeepFM_torch/src/__init__.py").write_text("")
        check_zoo(tmp_path)


def test_grid_points_and_their_names():
    points = parse_grid("batch_norm=0,1; dropout=0,0.2")
    assert len(points) == 4 and points[0] == Recipe()
    assert {tuple(sorted(p.point())) for p in points} == {(), ("batch_norm",), ("dropout",), ("batch_norm", "dropout")}
    assert parse_grid("hidden=400x400x400")[0].hidden == (400, 400, 400)
    assert parse_grid("") == [Recipe()]
    with pytest.raises(ValueError, match="unknown recipe knob 'width'"):
        parse_grid("width=3")


def fake_record(lib, arm, recipe, seed, valid, test):
    metrics = {"valid": {"auc": valid, "logloss": 0.5}, "test": {"auc": test, "logloss": 0.5}}
    return {"lib": lib, "arm": arm, "recipe": asdict(recipe), "seed": seed, **metrics}


def test_runs_choose_on_validation_then_train_the_test_seeds_and_resume(tmp_path, monkeypatch):
    grid = tuple(parse_grid("batch_norm=0,1"))
    plan = Plan(grid=grid, seeds=(1, 2), results=tmp_path)
    trained = []

    def fake_train(plan, lib, arm, recipe, seed):
        trained.append((lib, arm, recipe.batch_norm, seed))
        valid = 0.80 + (0.01 if recipe.batch_norm == (lib == "ours") else 0)  # ours prefers BN, FuxiCTR not
        return {**fake_record(lib, arm, recipe, seed, valid, 0.8 + 0.001 * seed), "source": "fake"}

    monkeypatch.setattr(reference, "train", fake_train)
    done = reference.run(plan, say=lambda _: None)
    selection = [(lib, arm, bn, 0) for lib in ("ours", "fuxictr") for arm in ("base", "self") for bn in (0, 1)]
    assert trained[:8] == selection
    assert chosen(plan, done, "ours", "self").batch_norm and not chosen(plan, done, "fuxictr", "self").batch_norm
    assert ("ours", "base", True, 2) in trained and ("fuxictr", "base", False, 2) in trained and len(trained) == 16
    assert len(read_store(store_path(tmp_path))) == 16
    trained.clear()
    reference.run(plan, say=lambda _: None)
    assert trained == []  # everything stored: nothing trained again


def test_our_runs_at_the_studys_recipe_come_from_the_study_store(tmp_path, monkeypatch):
    pytest.importorskip("torch")  # our configurations are model/'s dataclasses
    from scripts.experiments import study

    plan = Plan(results=tmp_path)
    model_cfg, cfg = reference.ours_configs("self", Recipe(), 2, plan)
    study_plan = study.Plan(data="ml-1m", models=("deepfm",), arms=("self",), seeds=(2,), train=cfg)
    stored = {
        "key": study.run_key(study_plan, "deepfm", "self", 2),
        **{k: {"auc": 0.81} for k in ("valid", "test")},
        **dict(params=7, train_seconds=1.0, best_epoch=3, epochs_run=5, adaptation={"mean_s_cost": 0.01}),
    }
    path = study.store_path(tmp_path, "ml-1m")
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(stored) + "\n")
    assert study.arm_configs(study_plan, "deepfm", "self", 2)[0] == model_cfg
    got = reference.ours(plan, "self", Recipe(), 2)
    assert got["test"] == {"auc": 0.81} and got["source"].startswith("study store")
    monkeypatch.setattr("model.train.train_run", lambda *a, **k: pytest.fail("trained a run the study store has"))
    reference.ours(plan, "self", Recipe(), 2)
    with pytest.raises(pytest.fail.Exception):  # another recipe is not the study's run: it trains
        reference.ours(plan, "self", replace(Recipe(), dropout=0.2), 2)


def test_report_gives_each_librarys_paired_lift_and_welch_differences(tmp_path):
    plan = Plan(seeds=(1, 2, 3), results=tmp_path)
    path = store_path(tmp_path)
    path.parent.mkdir(parents=True)
    rows = []
    for s in (1, 2, 3):
        rows += [fake_record("ours", "base", Recipe(), s, 0.8, 0.81 + 0.001 * s)]
        rows += [fake_record("ours", "self", Recipe(), s, 0.8, 0.812 + 0.001 * s + 0.0002 * (s == 2))]
        rows += [fake_record("fuxictr", "base", Recipe(), s, 0.8, 0.80 + 0.002 * s)]
        rows += [fake_record("fuxictr", "self", Recipe(), s, 0.8, 0.801 + 0.002 * s - 0.0003 * (s == 3))]
    path.write_text("".join(json.dumps({**r, "params": 1, "epochs_run": 2}) + "\n" for r in rows))
    s = reference.summarise(plan, read_store(path))
    assert s["libs"]["ours"]["lift"]["mean"] == pytest.approx((0.002 * 3 + 0.0002) / 3)
    assert s["lift_difference"]["level"] == 0.90
    ours = list(s["libs"]["ours"]["lift_by_seed"].values())
    theirs = list(s["libs"]["fuxictr"]["lift_by_seed"].values())
    assert s["lift_difference"]["mean"] == pytest.approx(np.mean(ours) - np.mean(theirs))
    text = reference.report(plan)
    assert "| ours | self | recipe | 1,2,3 | 81.4" in text and "- our lift minus FuxiCTR's: " in text
    assert "(90 % Welch" in text and "| gradient clipping |" in text


def test_welch_interval_against_scipy():
    from scipy import stats

    a, b = [0.1, 0.3, 0.2, 0.25], [0.0, 0.05, 0.12]
    r = welch(a, b, 0.90)
    t = stats.ttest_ind(a, b, equal_var=False)
    assert r["p"] == pytest.approx(t.pvalue) and r["mean"] == pytest.approx(np.mean(a) - np.mean(b))
    ci = t.confidence_interval(0.90)
    assert r["ci"] == pytest.approx((ci.low, ci.high))


def test_a_knob_only_ours_has_leaves_fuxictrs_runs_as_they_are():
    pytest.importorskip("torch")  # our configurations are model/'s dataclasses
    xavier = replace(Recipe(), init="xavier")
    assert reference.key("fuxictr", "base", xavier, 1) == reference.key("fuxictr", "base", Recipe(), 1)
    assert reference.key("ours", "base", xavier, 1) != reference.key("ours", "base", Recipe(), 1)
    model_cfg, _ = reference.ours_configs("self", xavier, 1, Plan())
    assert model_cfg.init == "xavier"
