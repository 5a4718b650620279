"""Every base model × every APG condition builds, runs forward and backward on a real ML-100K batch."""

import pytest

pytest.importorskip("torch")  # training-side tests: skipped where torch is absent (a serving-only install)

import torch

from model.apg import APGConfig
from model.evaluate import to_tensors
from model.zoo import MODELS, ModelConfig, build_model


@pytest.mark.parametrize("condition", ["none", "group", "mix", "self"])
@pytest.mark.parametrize("name", sorted(MODELS))
def test_model_forward_backward_on_real_batch(ml100k_small, name, condition):
    torch.manual_seed(0)
    cfg = ModelConfig(name, hidden=(32, 16), apg=APGConfig(condition, rank=4))
    model = build_model(ml100k_small.schema, cfg)
    x, y = ml100k_small.part("train")
    batch = to_tensors({k: v[:64] for k, v in x.items()})
    logit = model.logit(batch)
    assert logit.shape == (64,)
    loss = torch.nn.functional.binary_cross_entropy_with_logits(logit, torch.from_numpy(y[:64]))
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    p = model(batch)
    assert ((p > 0) & (p < 1)).all()


def test_apg_replaces_only_the_deep_tower(ml100k_small):
    from model.apg import APGLinear

    model = build_model(ml100k_small.schema, ModelConfig("dcn", hidden=(32, 16), apg=APGConfig("self")))
    apg_layers = [n for n, m in model.named_modules() if isinstance(m, APGLinear)]
    assert apg_layers == ["tower.layers.0", "tower.layers.1"]
    assert isinstance(model.out, torch.nn.Linear)


def test_unknown_model_and_condition_fields_are_refused(ml100k_small):
    with pytest.raises(ValueError, match="unknown model"):
        build_model(ml100k_small.schema, ModelConfig("xgboost"))
    with pytest.raises(ValueError, match="not in the schema"):
        build_model(ml100k_small.schema, ModelConfig("dnn", apg=APGConfig("group", group_field="country")))


def test_model_config_round_trips():
    cfg = ModelConfig("pnn", hidden=(8, 4), apg=APGConfig("mix", mix_fields=("user_id", "age"), overparam=32))
    assert ModelConfig.from_dict(cfg.to_dict()) == cfg


def test_xavier_init_is_fuxictrs(ml100k_small):
    from model.apg import APGConfig

    torch.manual_seed(0)
    model = build_model(ml100k_small.schema, ModelConfig("deepfm", init="xavier", apg=APGConfig("self")))
    tables = [m.weight for m in model.modules() if isinstance(m, torch.nn.Embedding)]
    assert all(t.std().item() < 3e-4 for t in tables if t.numel() > 100)  # normal, std 1e-4
    assert torch.equal(model.out.bias, torch.zeros_like(model.out.bias))
    g_out = model.tower.layers[0].g[-1]
    assert torch.equal(g_out.weight, torch.zeros_like(g_out.weight))  # S_i = I at the start, as by default
    with pytest.raises(ValueError, match="init must be one of"):
        ModelConfig(init="he")
