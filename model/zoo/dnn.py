from torch import nn

from model.zoo.base import CTRModel


class DNN(CTRModel):
    """Embeddings → deep tower → 1 unit."""

    def __init__(self, schema, cfg):
        super().__init__(schema, cfg)
        self.tower = self.make_tower(self.num_fields * cfg.embed_dim)
        self.out = nn.Linear(self.tower.out_dim, 1)

    def logit(self, x):
        e = self.emb(x)  # (B, F, d)
        return self.out(self.tower(e.flatten(1), self.condition(e, x))).squeeze(-1)
