import torch
from torch import nn

from model.layers import CrossNet, CrossNetV2
from model.zoo.base import CTRModel


class DCN(CTRModel):
    """Deep & Cross: a static cross network beside the deep tower, concatenated into the output unit."""

    cross_cls = CrossNet

    def __init__(self, schema, cfg):
        super().__init__(schema, cfg)
        dim = self.num_fields * cfg.embed_dim
        self.cross = self.cross_cls(dim, cfg.cross_layers)
        self.tower = self.make_tower(dim)
        self.out = nn.Linear(dim + self.tower.out_dim, 1)

    def logit(self, x):
        e = self.emb(x)
        h = e.flatten(1)
        return self.out(torch.cat([self.cross(h), self.tower(h, self.condition(e, x))], dim=1)).squeeze(-1)


class DCNv2(DCN):
    """DCN-V2: full-matrix cross layers (parallel structure)."""

    cross_cls = CrossNetV2
