"""Shared building blocks of the base models: embeddings, MLP, FM, inner products, cross nets, self-attention.

Inputs arrive as a dict of int64 tensors, one per schema field (docs/BUNDLE.md): ``[B]`` or ``[B, max_len]``.
"""

from __future__ import annotations

import torch
from torch import nn

from features import Schema


class FieldEmbedding(nn.Module):
    """One table per field; multi-valued fields are mean-pooled over their non-zero (non-padding) positions."""

    def __init__(self, schema: Schema, dim: int, std: float = 0.01):
        super().__init__()
        self.names = [f.name for f in schema.fields]
        self.multi = {f.name for f in schema.fields if f.kind == "multi"}
        self.tables = nn.ModuleDict({f.name: nn.Embedding(f.cardinality, dim) for f in schema.fields})
        for t in self.tables.values():
            nn.init.normal_(t.weight, std=std)

    def forward(self, x: dict[str, torch.Tensor]) -> torch.Tensor:
        return torch.stack([self.embed(name, x[name]) for name in self.names], dim=1)  # (B, F, d)

    def embed(self, name: str, ids: torch.Tensor) -> torch.Tensor:
        e = self.tables[name](ids)
        if name not in self.multi:
            return e  # (B, d)
        mask = (ids != 0).unsqueeze(-1).to(e.dtype)  # (B, L, 1)
        return (e * mask).sum(1) / mask.sum(1).clamp(min=1.0)  # (B, d)


class Linear1(nn.Module):
    """First-order (wide) term: a scalar weight per feature value, summed over fields."""

    def __init__(self, schema: Schema):
        super().__init__()
        self.emb = FieldEmbedding(schema, 1)
        for t in self.emb.tables.values():
            nn.init.zeros_(t.weight)

    def forward(self, x: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.emb(x).sum(dim=(1, 2))  # (B,)


class MLP(nn.Module):
    """Static deep tower: Linear → (BatchNorm) → ReLU → Dropout per hidden layer. ``forward(x, z)`` ignores z
    (APG-compatible)."""

    def __init__(self, in_dim: int, hidden: tuple[int, ...], dropout: float = 0.0, batch_norm: bool = False):
        super().__init__()
        layers, d = [], in_dim
        for h in hidden:
            layers += [nn.Linear(d, h), *([nn.BatchNorm1d(h)] if batch_norm else []), nn.ReLU(), nn.Dropout(dropout)]
            d = h
        self.net = nn.Sequential(*layers)
        self.out_dim = d

    def forward(self, x: torch.Tensor, z: torch.Tensor | None = None) -> torch.Tensor:
        return self.net(x)


class FM(nn.Module):
    """Second-order factorisation machine term over field embeddings (B, F, d) → (B,)."""

    def forward(self, e: torch.Tensor) -> torch.Tensor:
        square_of_sum = e.sum(1).pow(2)
        sum_of_square = e.pow(2).sum(1)
        return 0.5 * (square_of_sum - sum_of_square).sum(1)


class InnerProduct(nn.Module):
    """All pairwise field inner products (B, F, d) → (B, F(F-1)/2), as in PNN's IPNN."""

    def __init__(self, num_fields: int):
        super().__init__()
        rows, cols = torch.triu_indices(num_fields, num_fields, offset=1)
        self.register_buffer("rows", rows, persistent=False)
        self.register_buffer("cols", cols, persistent=False)
        self.out_dim = len(rows)

    def forward(self, e: torch.Tensor) -> torch.Tensor:
        return (e[:, self.rows] * e[:, self.cols]).sum(-1)


class CrossNet(nn.Module):
    """DCN cross layers: x_{l+1} = x_0 (w_l · x_l) + b_l + x_l (vector weights)."""

    def __init__(self, dim: int, layers: int):
        super().__init__()
        self.w = nn.ParameterList(nn.Parameter(torch.randn(dim) * 0.01) for _ in range(layers))
        self.b = nn.ParameterList(nn.Parameter(torch.zeros(dim)) for _ in range(layers))

    def forward(self, x0: torch.Tensor) -> torch.Tensor:
        x = x0
        for w, b in zip(self.w, self.b, strict=True):
            x = x0 * (x @ w).unsqueeze(1) + b + x  # (B, D)
        return x


class CrossNetV2(nn.Module):
    """DCN-V2 cross layers: x_{l+1} = x_0 ⊙ (W_l x_l + b_l) + x_l (full matrices)."""

    def __init__(self, dim: int, layers: int):
        super().__init__()
        self.layers = nn.ModuleList(nn.Linear(dim, dim) for _ in range(layers))

    def forward(self, x0: torch.Tensor) -> torch.Tensor:
        x = x0
        for lin in self.layers:
            x = x0 * lin(x) + x
        return x


class SelfAttention(nn.Module):
    """AutoInt interacting layer: multi-head self-attention over fields with a residual projection."""

    def __init__(self, dim: int, heads: int = 2, att_dim: int = 16):
        super().__init__()
        self.heads, self.att_dim = heads, att_dim
        self.qkv = nn.Linear(dim, 3 * heads * att_dim, bias=False)
        self.res = nn.Linear(dim, heads * att_dim, bias=False)
        self.out_dim = heads * att_dim

    def forward(self, e: torch.Tensor) -> torch.Tensor:
        b, f, _ = e.shape
        q, k, v = self.qkv(e).view(b, f, 3, self.heads, self.att_dim).permute(2, 0, 3, 1, 4)  # 3×(B, H, F, a)
        att = torch.softmax(q @ k.transpose(-1, -2) / self.att_dim**0.5, dim=-1)  # (B, H, F, F)
        out = (att @ v).transpose(1, 2).reshape(b, f, -1)  # (B, F, H·a)
        return torch.relu(out + self.res(e))
