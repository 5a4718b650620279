import torch
from torch import nn

from model.layers import InnerProduct
from model.zoo.base import CTRModel


class PNN(CTRModel):
    """Inner-product PNN: embeddings and all pairwise inner products feed the deep tower."""

    def __init__(self, schema, cfg):
        super().__init__(schema, cfg)
        self.inner = InnerProduct(self.num_fields)
        self.tower = self.make_tower(self.num_fields * cfg.embed_dim + self.inner.out_dim)
        self.out = nn.Linear(self.tower.out_dim, 1)

    def logit(self, x):
        e = self.emb(x)
        h = torch.cat([e.flatten(1), self.inner(e)], dim=1)
        return self.out(self.tower(h, self.condition(e, x))).squeeze(-1)
