from torch import nn

from model.layers import Linear1
from model.zoo.base import CTRModel


class WDL(CTRModel):
    """Wide & Deep: a first-order wide part plus the deep tower."""

    def __init__(self, schema, cfg):
        super().__init__(schema, cfg)
        self.wide = Linear1(schema)
        self.tower = self.make_tower(self.num_fields * cfg.embed_dim)
        self.out = nn.Linear(self.tower.out_dim, 1)

    def logit(self, x):
        e = self.emb(x)
        return self.wide(x) + self.out(self.tower(e.flatten(1), self.condition(e, x))).squeeze(-1)
