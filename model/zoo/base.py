"""What every base model shares: typed config, field embeddings, the APG condition and the deep tower."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from features import Schema
from model.apg import APGMLP, APGConfig, APGLinear, Condition
from model.layers import MLP, FieldEmbedding

INITS = ("default", "xavier")


@dataclass(frozen=True)
class ModelConfig:
    # `help` in the metadata becomes the options of `apg train` (scripts/config_args.py); the model names are the zoo's
    model: str = field(default="deepfm", metadata={"help": "base model"})
    embed_dim: int = field(default=16, metadata={"help": "embedding width per field"})
    hidden: tuple[int, ...] = field(
        default=(256, 128), metadata={"help": "deep tower widths (APG replaces these layers)"}
    )
    dropout: float = field(default=0.0, metadata={"help": "dropout after each deep tower layer"})
    batch_norm: bool = field(
        default=False, metadata={"help": "BatchNorm after each deep tower layer, before its ReLU (static and APG)"}
    )
    cross_layers: int = field(default=2, metadata={"help": "cross layers (DCN, DCNv2)"})
    att_layers: int = field(default=2, metadata={"help": "self-attention layers (AutoInt)"})
    att_heads: int = field(default=2, metadata={"help": "attention heads per layer (AutoInt)"})
    init: str = field(
        default="default",
        metadata={
            "choices": INITS,
            "help": "initialisation: default (embeddings normal std 0.01, PyTorch's layers) or xavier (FuxiCTR's: "
            "embeddings normal std 1e-4, every dense layer and APG's U, V xavier normal with zero biases)",
        },
    )
    apg: APGConfig = field(default_factory=APGConfig)

    def __post_init__(self):
        if self.init not in INITS:
            raise ValueError(f"init must be one of {INITS}, got {self.init!r}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> ModelConfig:
        d = dict(d)
        apg = dict(d.pop("apg", {}))
        apg["mix_fields"] = tuple(apg.get("mix_fields", APGConfig.mix_fields))
        apg["ranks"] = tuple(apg.get("ranks", ()))
        return cls(**{**d, "hidden": tuple(d.get("hidden", cls.hidden))}, apg=APGConfig(**apg))


class CTRModel(nn.Module):
    """Base: ``logit(x)`` is each model's own; ``forward(x)`` is the click probability (B,)."""

    def __init__(self, schema: Schema, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.field_names = [f.name for f in schema.fields]
        self.num_fields = len(schema.fields)
        self.emb = FieldEmbedding(schema, cfg.embed_dim)
        self.condition = Condition(cfg.apg, schema, cfg.embed_dim)

    def make_tower(self, in_dim: int) -> nn.Module:
        """A static MLP, or an APG MLP when the config enables APG (variants are configuration, not copies)."""
        if self.cfg.apg.enabled:
            return APGMLP(
                in_dim, self.cfg.hidden, self.condition.dim, self.cfg.apg, self.cfg.dropout, self.cfg.batch_norm
            )
        return MLP(in_dim, self.cfg.hidden, self.cfg.dropout, self.cfg.batch_norm)

    def logit(self, x: dict[str, torch.Tensor]) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: dict[str, torch.Tensor]) -> torch.Tensor:
        return torch.sigmoid(self.logit(x))


def xavier_init(model: nn.Module) -> nn.Module:
    """FuxiCTR's initialisation (``ModelConfig.init == "xavier"``): every embedding table normal with std 1e-4,
    every dense layer xavier normal with a zero bias, APG layers' static factors xavier normal (APGLinear.xavier_);
    an APG generator's output layer keeps its zeros, so S_i = I at the start as before."""
    keep = set()
    for m in model.modules():
        if isinstance(m, APGLinear):
            m.xavier_()
            keep |= {id(x) for x in m.g.modules()}  # G: xavier_() did its hidden layer, its output stays
    for m in model.modules():
        if isinstance(m, nn.Embedding):
            nn.init.normal_(m.weight, std=1e-4)
        elif isinstance(m, nn.Linear) and id(m) not in keep:
            nn.init.xavier_normal_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
    return model
