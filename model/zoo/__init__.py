"""The model zoo: one small file per base model; APG is an option of every model (``ModelConfig.apg``)."""

from features import Schema
from model.zoo.autoint import AutoInt
from model.zoo.base import CTRModel, ModelConfig, xavier_init
from model.zoo.dcn import DCN, DCNv2
from model.zoo.deepfm import DeepFM
from model.zoo.dnn import DNN
from model.zoo.pnn import PNN
from model.zoo.wdl import WDL

MODELS: dict[str, type[CTRModel]] = {
    "dnn": DNN,
    "wdl": WDL,
    "pnn": PNN,
    "deepfm": DeepFM,
    "dcn": DCN,
    "dcnv2": DCNv2,
    "autoint": AutoInt,
}


def build_model(schema: Schema, cfg: ModelConfig) -> CTRModel:
    if cfg.model not in MODELS:
        raise ValueError(f"unknown model {cfg.model!r}; choose one of {sorted(MODELS)}")
    model = MODELS[cfg.model](schema, cfg)
    return xavier_init(model) if cfg.init == "xavier" else model


__all__ = ["MODELS", "CTRModel", "ModelConfig", "build_model"]
