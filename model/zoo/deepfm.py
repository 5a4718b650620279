from torch import nn

from model.layers import FM, Linear1
from model.zoo.base import CTRModel


class DeepFM(CTRModel):
    """First-order + FM second-order terms (static) plus the deep tower (APG when enabled)."""

    def __init__(self, schema, cfg):
        super().__init__(schema, cfg)
        self.linear, self.fm = Linear1(schema), FM()
        self.tower = self.make_tower(self.num_fields * cfg.embed_dim)
        self.out = nn.Linear(self.tower.out_dim, 1)

    def logit(self, x):
        e = self.emb(x)
        deep = self.out(self.tower(e.flatten(1), self.condition(e, x))).squeeze(-1)
        return self.linear(x) + self.fm(e) + deep
