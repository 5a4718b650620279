import torch
from torch import nn

from model.layers import SelfAttention
from model.zoo.base import CTRModel


class AutoInt(CTRModel):
    """AutoInt+: stacked self-attention over fields (static) beside the deep tower."""

    def __init__(self, schema, cfg):
        super().__init__(schema, cfg)
        dims = [cfg.embed_dim] + [cfg.att_heads * 16] * cfg.att_layers
        self.att = nn.Sequential(*(SelfAttention(a, cfg.att_heads, 16) for a in dims[:-1]))
        self.tower = self.make_tower(self.num_fields * cfg.embed_dim)
        self.out = nn.Linear(self.num_fields * dims[-1] + self.tower.out_dim, 1)

    def logit(self, x):
        e = self.emb(x)
        h = torch.cat([self.att(e).flatten(1), self.tower(e.flatten(1), self.condition(e))], dim=1)
        return self.out(h).squeeze(-1)
