"""A Triton Inference Server model repository from a bundle, for users who outgrow one machine.

Triton serves the same ``model.onnx`` with its own dynamic batching; it takes the *encoded* int64 tensors, so clients
encode raw rows with the bundle's schema (``features.Encoder`` does exactly that, without torch).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

DTYPES = {"int64": "TYPE_INT64", "float32": "TYPE_FP32"}


def _tensor(spec: dict) -> str:
    dims = spec["shape"][1:]  # Triton's dims exclude the batch axis
    # a [batch] tensor has no dims left: declare [1] and reshape to a scalar per row
    body = f'  name: "{spec["name"]}"\n  data_type: {DTYPES[spec["dtype"]]}\n'
    body += f"  dims: [ {', '.join(map(str, dims))} ]\n" if dims else "  dims: [ 1 ]\n  reshape: { shape: [ ] }\n"
    return "{\n" + body + "}"


def triton_config(manifest: dict, max_batch_size: int = 4096, max_delay_us: int = 500) -> str:
    """config.pbtxt text: ONNX Runtime backend, dynamic batching, tensor specs from the manifest."""
    name = manifest["model"]["name"]
    inputs = ",\n".join(_tensor(s) for s in manifest["inputs"])
    outputs = ",\n".join(_tensor(s) for s in manifest["outputs"])
    return (
        f'name: "{name}"\nplatform: "onnxruntime_onnx"\nmax_batch_size: {max_batch_size}\n'
        f"input [\n{inputs}\n]\noutput [\n{outputs}\n]\n"
        "dynamic_batching {\n  preferred_batch_size: [ 64, 256 ]\n"
        f"  max_queue_delay_microseconds: {max_delay_us}\n}}\n"
        "instance_group [ { count: 1, kind: KIND_CPU } ]\n"
        f'parameters {{ key: "apg_version" value: {{ string_value: "{manifest["model"]["version"]}" }} }}\n'
    )


def write_triton_repo(bundle: str | Path, out: str | Path) -> Path:
    """``out/<model name>/config.pbtxt`` and ``out/<model name>/1/model.onnx``; returns the model folder."""
    bundle, out = Path(bundle), Path(out)
    manifest = json.loads((bundle / "bundle.json").read_text())
    folder = out / manifest["model"]["name"]
    (folder / "1").mkdir(parents=True, exist_ok=True)
    shutil.copyfile(bundle / "model.onnx", folder / "1" / "model.onnx")
    (folder / "config.pbtxt").write_text(triton_config(manifest))
    return folder
