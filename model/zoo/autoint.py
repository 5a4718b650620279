import torch
from torch import nn

from model.layers import SelfAttention
from model.zoo.base import CTRModel

ATT_DIM = 16  # per-head attention width


class AutoInt(CTRModel):
    """AutoInt+: stacked self-attention over fields (static) beside the deep tower."""

    def __init__(self, schema, cfg):
        super().__init__(schema, cfg)
        layers, d = [], cfg.embed_dim
        for _ in range(cfg.att_layers):
            layers.append(SelfAttention(d, cfg.att_heads, ATT_DIM))
            d = layers[-1].out_dim  # heads × ATT_DIM
        self.att = nn.Sequential(*layers)
        self.tower = self.make_tower(self.num_fields * cfg.embed_dim)
        self.out = nn.Linear(self.num_fields * d + self.tower.out_dim, 1)

    def logit(self, x):
        e = self.emb(x)
        h = torch.cat([self.att(e).flatten(1), self.tower(e.flatten(1), self.condition(e, x))], dim=1)
        return self.out(h).squeeze(-1)
