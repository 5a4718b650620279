"""Paired statistics against hand-computed values."""

import math

import pytest

from scripts.experiments.paired import fmt, paired, pooled


def test_paired_interval_matches_a_hand_computed_t_interval():
    r = paired([0.01, 0.02, 0.03])
    assert r["mean"] == pytest.approx(0.02) and r["sd"] == pytest.approx(0.01)
    half = 4.302652729911275 * 0.01 / math.sqrt(3)  # t(0.975, 2)
    assert r["ci"] == pytest.approx((0.02 - half, 0.02 + half))
    assert r["p"] == pytest.approx(0.0742, abs=1e-3)  # t = 0.02 / (0.01 / √3) = 3.46 on 2 df
    assert r["mde"] > half  # 80 % power needs more than the half-width


def test_paired_with_one_seed_reports_no_interval():
    r = paired([0.5])
    assert r["n"] == 1 and math.isnan(r["ci"][0]) and fmt(r) == "+50.00 (n 1)"


def test_pooled_uses_the_seed_as_unit_and_only_common_seeds():
    r = pooled({"a": {0: 0.02, 1: 0.04, 2: 0.0}, "b": {0: 0.0, 1: 0.02}})
    assert r["seeds"] == [0, 1] and r["models"] == 2
    assert r["mean"] == pytest.approx(0.02)  # seed 0: 0.01, seed 1: 0.03


def test_fmt_in_points():
    assert fmt(paired([0.01, 0.03])).startswith("+2.00 [")


def test_an_apg_figures_adaptation_gives_the_spread_per_layer_and_the_mean_s_cost():
    from scripts.experiments.paired import adapted, spreads

    runs = [{"mean_s_cost": 0.01 * s, "layers": [{"spread": 0.1 * s}, {"spread": None}]} for s in (1, 2, 3)]
    assert spreads(runs) == pytest.approx([0.2, 0.0])
    assert adapted([*runs, None]).startswith("S_i spread per layer 0.200 / 0.000, mean-S cost +2.00 [")
    deeper = {"mean_s_cost": 0.02, "layers": [{"spread": 0.5}, {"spread": 0.05}, {"spread": 0.7}]}
    assert adapted([*runs, deeper]).startswith("S_i spread 0.000-0.700 over the layers")  # towers of other depths
    assert adapted([None]) == "no adaptation measured"
