"""The adaptation report: spread of S_i and the mean-S counterfactual, on hand-built models whose answer is known."""

import pytest

pytest.importorskip("torch")  # training-side tests: skipped where torch is absent (a serving-only install)

import numpy as np
import torch

from model.adaptation import adaptation, fixed_generation, generated, spread
from model.apg import APGConfig
from model.evaluate import predict
from model.zoo import ModelConfig, build_model


def test_spread_of_identical_and_varied_matrices():
    eye = np.repeat(np.eye(3)[None], 5, axis=0)
    assert spread(eye) == 0.0
    varied = eye.copy()
    varied[0] *= 3.0
    assert spread(varied) == pytest.approx((1.6 + 4 * 0.4) / 5 / 1.4)  # S̄ = 1.4 I


@pytest.fixture(scope="module")
def data(ml100k_small):
    x, y = ml100k_small.part("test")
    return ml100k_small.schema, x, y


def test_a_static_control_does_not_adapt_and_its_counterfactual_changes_nothing(data):
    schema, x, y = data
    torch.manual_seed(0)
    model = build_model(schema, ModelConfig("dnn", hidden=(32, 16), apg=APGConfig("static", rank=4))).eval()
    report = adaptation(model, x, y)
    assert [layer["distinct"] for layer in report["layers"]] == [1, 1]
    assert report["mean_s_cost"] == pytest.approx(0.0, abs=1e-9) and not report["adaptive"]


def test_self_wise_generation_is_seen_and_fixing_it_changes_the_scores(data):
    schema, x, y = data
    torch.manual_seed(0)
    model = build_model(schema, ModelConfig("dnn", hidden=(32, 16), apg=APGConfig("self", rank=4))).eval()
    for layer in model.tower.layers:  # a generator that is not at its zero init, so S_i varies with the input
        torch.nn.init.normal_(layer.g[-1].weight, std=0.5)
    gen = generated(model, x)
    assert [g["s"].shape for g in gen] == [(len(y), 4, 4)] * 2
    assert all(spread(g["s"]) > 0.01 for g in gen)
    before = predict(model, x)
    with fixed_generation(model, [{k: v.mean(axis=0) for k, v in g.items()} for g in gen]):
        fixed = predict(model, x)
    assert not np.allclose(before, fixed)
    assert np.array_equal(predict(model, x), before)  # the model is whole again after the block
    assert "generate" not in model.tower.layers[0].__dict__
