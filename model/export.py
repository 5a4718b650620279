"""ONNX export of a trained model and its parity with PyTorch.

The graph takes one int64 tensor per schema field (docs/BUNDLE.md) and returns ``score`` [batch]. Over-parameterised
APG factors are merged first, so the graph holds only U and V; the condition network G is inside the graph and
computes S_i for every row of every request batch.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from features import Schema
from model.apg import APGLinear, merge_overparam
from model.evaluate import predict

OPSET = 17


class GraphModule(nn.Module):
    """Positional tensors in schema order → ``score`` (and, for tests, the first APG layer's generated S_i − I)."""

    def __init__(self, model: nn.Module, schema: Schema, expose_s: bool = False):
        super().__init__()
        self.model, self.names = model, [f.name for f in schema.fields]
        self.captured: list[torch.Tensor] = []
        if expose_s:
            first = next(m for m in model.modules() if isinstance(m, APGLinear))
            first.g.register_forward_hook(lambda _m, _i, out: self.captured.append(out))
        self.expose_s = expose_s

    def forward(self, *tensors: torch.Tensor):
        self.captured.clear()
        score = self.model(dict(zip(self.names, tensors, strict=True)))
        return (score, self.captured[-1]) if self.expose_s else score


# Weights below this magnitude are written as 0. Weight decay leaves thousands of them near 1e-35 in a trained model's
# embedding rows and first layer; their products are subnormal floats, which the CPU computes ~10x slower: flushing
# them took a trained ML-1M DNN from ~17 ms to ~1.4 ms a batch of 1024 on onnxruntime (docs/OPTIMISATIONS.md section
# 13). Against activations of order 1e-3 a term of 1e-30 is far below float32's resolution, so scores do not change.
TINY = 1e-30


def flush_tiny(model: nn.Module) -> nn.Module:
    """``model`` with every floating-point parameter and buffer entry smaller than TINY in magnitude set to 0."""
    with torch.no_grad():
        for t in (*model.parameters(), *model.buffers()):
            if t.is_floating_point():
                t.masked_fill_(t.abs() < TINY, 0.0)
    return model


def export_onnx(model: nn.Module, schema: Schema, path: str | Path, expose_s: bool = False, flush: bool = True) -> Path:
    """Merge over-parameterised factors, flush tiny weights to 0 (both on a copy; ``flush=False`` keeps them, to
    measure what flushing saves) and write the ONNX graph with a dynamic batch axis."""
    path = Path(path)
    merged = merge_overparam(model)
    module = GraphModule((flush_tiny(merged) if flush else merged).eval(), schema, expose_s)
    dummy = tuple(torch.zeros((2, f.width) if f.width else (2,), dtype=torch.long) for f in schema.fields)
    outputs = ["score", "apg_s"] if expose_s else ["score"]
    return torch_to_onnx(module, dummy, path, [f.name for f in schema.fields], outputs)


def torch_to_onnx(module: nn.Module, args: tuple, path: str | Path, inputs: list[str], outputs: list[str]) -> Path:
    """ONNX (opset 17) with a dynamic batch axis on every input and output."""
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
        # The TorchScript-based exporter: exact for these ops and far faster than the dynamo path on this model.
        torch.onnx.export(
            module.eval(),
            args,
            str(path),
            input_names=inputs,
            output_names=outputs,
            dynamic_axes={name: {0: "batch"} for name in inputs + outputs},
            opset_version=OPSET,
            dynamo=False,
        )
    return path


def ort_session(path: str | Path, threads: int = 1):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def ort_predict(session, x: dict[str, np.ndarray], batch_size: int = 8192) -> np.ndarray:
    n = len(next(iter(x.values())))
    parts = [
        session.run(["score"], {k: v[i : i + batch_size] for k, v in x.items()})[0] for i in range(0, n, batch_size)
    ]
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.float32)


def parity(model: nn.Module, session, x: dict[str, np.ndarray], batch_sizes=(1, 7, 1000)) -> dict:
    """Max |PyTorch − onnxruntime| over the first rows of ``x`` at each batch size."""
    worst = {}
    for b in batch_sizes:
        part = {k: v[:b] for k, v in x.items()}
        worst[b] = float(np.max(np.abs(predict(model, part) - ort_predict(session, part))))
    return {"max_abs_diff": max(worst.values()), "by_batch_size": worst}
