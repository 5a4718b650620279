"""A short real training run writes a checkpoint and metrics; it is deterministic for a seed."""

import json

from model.apg import APGConfig
from model.train import TrainConfig, load_run, predict, train_run
from model.zoo import ModelConfig


def test_short_real_run_writes_checkpoint_and_metrics(tmp_path):
    cfg = TrainConfig(limit=5000, epochs=2, batch_size=128)
    m = train_run(ModelConfig("deepfm", hidden=(32, 16), apg=APGConfig("self", rank=4)), cfg, tmp_path, progress=False)
    on_disk = json.loads((tmp_path / "metrics.json").read_text())
    assert on_disk["test"]["auc"] == m["test"]["auc"] > 0.5
    assert {"auc", "logloss", "gauc", "ctr_ratio"} <= set(on_disk["valid"])
    assert on_disk["params"] > 0 and on_disk["config"]["model"]["apg"]["condition"] == "self"
    assert len(on_disk["history"]) >= 1 and on_disk["train_seconds"] > 0
    model, schema, _ = load_run(tmp_path)
    assert schema.fitted and not model.training


def test_training_is_deterministic_for_a_seed(tmp_path):
    cfg = TrainConfig(limit=3000, epochs=1, batch_size=128, seed=3)
    mc = ModelConfig("dnn", hidden=(16,), apg=APGConfig("group", rank=4))
    a = train_run(mc, cfg, tmp_path / "a", progress=False)
    b = train_run(mc, cfg, tmp_path / "b", progress=False)
    assert a["test"] == b["test"]
    from model.data import load_dataset

    x, _ = load_dataset(limit=3000, seed=3).part("test")
    assert (predict(load_run(tmp_path / "a")[0], x) == predict(load_run(tmp_path / "b")[0], x)).all()


def test_optional_fields_and_feature_dropout(ml100k_small, tmp_path):
    import numpy as np

    from model.train import blank, optional_fields

    names = optional_fields(ml100k_small.schema)
    assert names == ["age", "gender", "occupation", "zip_prefix", "release_year", "genres"]  # user_activity stays
    x, _ = ml100k_small.part("test")
    b = blank(x, ["genres", "age"], np.array([0, 2]))
    assert not b["genres"][[0, 2]].any() and (b["age"][[0, 2]] == 0).all()
    assert np.array_equal(b["genres"][1], x["genres"][1]) and x["genres"][0].any()  # the original is untouched
    cfg = TrainConfig(limit=3000, epochs=1, batch_size=128, missing_rate=0.2)
    m = train_run(ModelConfig("dnn", hidden=(16,)), cfg, tmp_path, progress=False)
    assert 0 < m["test_ids_only"]["auc"] < 1 and m["config"]["train"]["missing_rate"] == 0.2
