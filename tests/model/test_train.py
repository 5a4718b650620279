"""A short real training run writes a checkpoint and metrics; it is deterministic for a seed."""

import pytest

pytest.importorskip("torch")  # training-side tests: skipped where torch is absent (a serving-only install)

import json

from model.apg import APGConfig
from model.evaluate import predict
from model.train import TrainConfig, load_run, train_run
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

    from model.evaluate import blank, optional_fields

    names = optional_fields(ml100k_small.schema)
    assert names == ["age", "gender", "occupation", "zip_prefix", "release_year", "genres"]  # user_activity stays
    x, _ = ml100k_small.part("test")
    b = blank(x, ["genres", "age"], np.array([0, 2]))
    assert not b["genres"][[0, 2]].any() and (b["age"][[0, 2]] == 0).all()
    assert np.array_equal(b["genres"][1], x["genres"][1]) and x["genres"][0].any()  # the original is untouched
    cfg = TrainConfig(limit=3000, epochs=1, batch_size=128, missing_rate=0.2)
    m = train_run(ModelConfig("dnn", hidden=(16,)), cfg, tmp_path, progress=False)
    assert 0 < m["test_ids_only"]["auc"] < 1 and m["config"]["train"]["missing_rate"] == 0.2


def test_seeds_vary_the_initialisation_not_the_split_and_the_run_keeps_its_test_split(tmp_path):
    import numpy as np

    from model.train import load_test_split

    mc = ModelConfig("dnn", hidden=(16,), apg=APGConfig("group", rank=4, cond_embed=True))
    runs = {
        s: train_run(mc, TrainConfig(limit=3000, epochs=1, seed=s), tmp_path / str(s), progress=False) for s in (0, 1)
    }
    assert runs[0]["test"]["auc"] != runs[1]["test"]["auc"]  # another initialisation...
    schema = load_run(tmp_path / "0")[1]
    (x0, y0), (x1, y1) = (load_test_split(tmp_path / str(s), schema) for s in (0, 1))
    assert np.array_equal(y0, y1) and all(np.array_equal(x0[k], x1[k]) for k in x0)  # ...on the same test rows
    assert runs[0]["schema_sha256"] == schema.digest()
    report = runs[0]["adaptation"]
    assert len(report["layers"]) == 1 and report["auc"] == runs[0]["test"]["auc"] and "mean_s_cost" in report


def test_the_learning_rate_is_reduced_on_a_validation_plateau(tmp_path):
    m = train_run(
        ModelConfig("dnn", hidden=(8,)),
        TrainConfig(limit=2000, epochs=6, patience=3, lr=0.05, lr_decay=0.5),
        tmp_path,
        progress=False,
    )
    lrs = [h["lr"] for h in m["history"]]
    aucs = [h["valid_auc"] for h in m["history"]]
    assert lrs[0] == 0.05
    for i in range(1, len(lrs)):  # the rate after epoch i halves exactly when epoch i brought no new best
        improved = aucs[i - 1] > max(aucs[: i - 1], default=-1.0)
        assert lrs[i] == (lrs[i - 1] if improved else lrs[i - 1] * 0.5)


def test_embedding_regularisation_is_half_l2_of_whole_tables_and_refuses_sparse_tables(ml100k_small):
    import torch

    from model.train import embedding_penalty, identity, make_optimiser, sparse_embeddings
    from model.zoo import build_model

    model = build_model(ml100k_small.schema, ModelConfig("deepfm"))
    tables = [m.weight for m in model.modules() if isinstance(m, torch.nn.Embedding)]
    expected = 0.01 / 2 * sum(float(t.detach().pow(2).sum()) for t in tables)
    assert float(embedding_penalty(model, 0.01).detach()) == pytest.approx(expected, rel=1e-5)
    assert embedding_penalty(model, 0.0) == 0.0
    with pytest.raises(ValueError, match="cannot train with sparse embeddings"):
        make_optimiser(sparse_embeddings(model), TrainConfig(emb_reg=0.01))
    # a run's identity in the stores names emb_reg only when it is set (stores written before it still match)
    assert "emb_reg" not in identity(TrainConfig()) and identity(TrainConfig(emb_reg=0.01))["emb_reg"] == 0.01
    assert "seed" not in identity(TrainConfig(), leave=("seed",))


def test_embedding_regularisation_shrinks_the_tables(ml100k_small):
    import torch

    from model.train import fit, seed_everything
    from model.zoo import build_model

    norms = []
    for reg in (0.0, 1.0):
        seed_everything(0, 1)
        model = build_model(ml100k_small.schema, ModelConfig("deepfm", hidden=(16,)))
        fit(model, ml100k_small, TrainConfig(epochs=1, emb_reg=reg), progress=False)
        norms.append(sum(float(m.weight.detach().norm()) for m in model.modules() if isinstance(m, torch.nn.Embedding)))
    assert norms[1] < 0.8 * norms[0]
