"""The paper's maths: decomposed = explicit W_i, merge is exact, outputs depend on z, parameter formulas."""

import pytest

pytest.importorskip("torch")  # training-side tests: skipped where torch is absent (a serving-only install)

import torch

from model.apg import APGMLP, APGConfig, APGLinear, merge_overparam

M, N, D, K, P, B = 12, 10, 5, 3, 6, 7
CASES = [
    APGConfig("group", rank=K),
    APGConfig("group", rank=K, overparam=P),
    APGConfig("group", rank=K, generate_bias=True),
    APGConfig("group", rank=K, variant="lowrank"),
    APGConfig("group", rank=K, variant="basic"),
    APGConfig("group", rank=K, cond_hidden=0),
]


def randomised(layer: torch.nn.Module) -> torch.nn.Module:
    """Non-trivial weights everywhere (G's last layer starts at zero so that S_i = I)."""
    torch.manual_seed(1)
    with torch.no_grad():
        for p in layer.parameters():
            p.copy_(torch.randn_like(p) * 0.3)
    return layer


@pytest.mark.parametrize(
    "cfg", CASES, ids=lambda c: f"{c.variant}-P{c.overparam}-bias{c.generate_bias}-h{c.cond_hidden}"
)
def test_decomposed_equals_explicit_weight_float64(cfg):
    layer = randomised(APGLinear(M, N, D, cfg)).double()
    x, z = torch.randn(B, M, dtype=torch.float64), torch.randn(B, D, dtype=torch.float64)
    w = layer.explicit_weight(z)  # (B, N, M)
    bias = layer.generate(z)["bias"]
    explicit = (w @ x.unsqueeze(-1)).squeeze(-1) + bias
    assert w.shape == (B, N, M)
    assert torch.max(torch.abs(layer(x, z) - explicit)).item() <= 1e-10


def test_s_starts_at_identity():
    layer = APGLinear(M, N, D, APGConfig("group", rank=K))
    s = layer.generate(torch.randn(B, D))["s"]
    assert torch.equal(s, torch.eye(K).expand(B, K, K))


def test_merge_leaves_outputs_unchanged():
    cfg = APGConfig("self", rank=K, overparam=P)
    mlp = randomised(APGMLP(M, (N, 8), 0, cfg))
    merged = merge_overparam(mlp)
    x = torch.randn(64, M)
    assert all(layer.p == 0 and not hasattr(layer, "u_l") for layer in merged.layers)
    assert torch.max(torch.abs(mlp(x, None) - merged(x, None))).item() <= 1e-6
    assert all(layer.p == P for layer in mlp.layers)  # the original is untouched (forward stays pure)


@pytest.mark.parametrize("variant", ["shared", "lowrank", "basic"])
def test_output_depends_on_condition(variant):
    layer = randomised(APGLinear(M, N, D, APGConfig("group", rank=K, variant=variant)))
    x = torch.randn(1, M).expand(2, M)
    z = torch.randn(2, D)
    y = layer(x, z)
    assert torch.max(torch.abs(y[0] - y[1])).item() > 1e-4


def g_params(d: int, h: int, out: int) -> int:
    return d * h + h + h * out + out if h else d * out + out


@pytest.mark.parametrize(
    "cfg", CASES, ids=lambda c: f"{c.variant}-P{c.overparam}-bias{c.generate_bias}-h{c.cond_hidden}"
)
def test_parameter_counts_match_formulas(cfg):
    layer = APGLinear(M, N, D, cfg)
    gen = {"shared": K * K, "lowrank": N * K + K * K + K * M, "basic": N * M}[cfg.variant] + (
        N if cfg.generate_bias else 0
    )
    shared = 0
    if cfg.variant == "shared":
        shared = (N * P + P * K + K * P + P * M) if cfg.overparam else (N * K + K * M)
    expected = g_params(D, cfg.cond_hidden, gen) + shared + N
    assert sum(p.numel() for p in layer.parameters()) == expected
    if cfg.overparam:
        assert (
            sum(p.numel() for p in layer.merged().parameters()) == g_params(D, cfg.cond_hidden, gen) + N * K + K * M + N
        )


def test_config_is_validated():
    with pytest.raises(ValueError, match="condition"):
        APGConfig("user")
    with pytest.raises(ValueError, match="over-parameterisation"):
        APGConfig("self", rank=16, overparam=8)


def test_per_layer_ranks_and_their_checks():
    tower = APGMLP(12, (10, 8), D, APGConfig("self", ranks=(6, 3), overparam=6))
    assert [layer.k for layer in tower.layers] == [6, 3]
    assert tower(torch.randn(B, 12), None).shape == (B, 8)
    with pytest.raises(ValueError, match="2 per-layer ranks"):
        APGMLP(12, (10, 8, 4), D, APGConfig("self", ranks=(6, 3)))
    with pytest.raises(ValueError, match="P=4 must be >= rank K=6"):
        APGConfig("self", ranks=(6, 3), overparam=4)
    with pytest.raises(ValueError, match="rank K must be >= 1"):
        APGConfig("self", ranks=(0,))


def test_xavier_init_keeps_s_at_identity_and_scales_the_factors():
    torch.manual_seed(0)
    layer = APGLinear(M, N, D, APGConfig("group", rank=K))
    before = layer.generate(torch.randn(B, D))["s"]
    layer.xavier_()
    assert torch.equal(layer.generate(torch.randn(B, D))["s"], before)  # G's output still zero: S_i = I
    assert torch.allclose(before, torch.eye(K).expand(B, K, K))
    # xavier normal: std sqrt(2 / (fan_in + fan_out)), here of U (N x K) and V (K x M)
    assert layer.u.std().item() == pytest.approx((2 / (N + K)) ** 0.5, rel=0.35)
    assert layer.v.std().item() == pytest.approx((2 / (K + M)) ** 0.5, rel=0.35)
