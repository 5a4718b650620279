"""Write a Triton Inference Server model repository from a bundle (`apg export RUN --triton DIR`).

    write_triton_repo(bundle, out)                     # "ensemble": raw features in, on a full Triton
    write_triton_repo(bundle, out, layout="python")    # one Python-backend model (encoder + onnxruntime)
    write_triton_repo(bundle, out, layout="graph")     # the ONNX graph alone: clients send encoded tensors

Layouts, for a bundle whose model is NAME (the service's model name, so the same v2 requests reach both):
    ensemble  NAME/             ensemble: raw features → NAME-preprocess → NAME-onnx → score
              NAME-preprocess/  Python backend: the bundle's own encoder (scripts/triton/backend.py, apg_step "encode")
              NAME-onnx/        model.onnx on the onnxruntime backend, inputs the encoded int64 tensors
    python    NAME/             Python backend: encoder + onnxruntime in one step (apg_step "encode+score"); what a
                                Triton without the onnxruntime backend (the PyPI wheel's) can load
    graph     NAME/             model.onnx on the onnxruntime backend, inputs the encoded int64 tensors
A Python-backend model's version folder holds model.py, a verbatim copy of the `features` package, bundle.json (the
schema and vocabularies), and model.onnx when it scores. Dynamic batching is on unless asked otherwise.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import features
from features import GRAPH, MANIFEST
from scripts.triton.config import ensemble_config, graph_config, python_config

LAYOUTS = ("ensemble", "python", "graph")
BACKEND = Path(__file__).with_name("backend.py")
FEATURES = Path(features.__file__).resolve().parent


def write_triton_repo(
    bundle: str | Path,
    out: str | Path,
    layout: str = "ensemble",
    dynamic_batching: bool = True,
    graph_backend: str = "onnxruntime",
) -> Path:
    """Write the layout's model folders under `out`; returns the folder of the model that clients call (NAME).
    `graph_backend="python"` puts the ensemble's NAME-onnx step on the Python backend (backend.py, apg_step
    "score": the same graph on onnxruntime in the stub), for a Triton that has no onnxruntime backend."""
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {', '.join(LAYOUTS)}, got {layout!r}")
    if graph_backend not in ("onnxruntime", "python"):
        raise ValueError(f"graph_backend must be 'onnxruntime' or 'python', got {graph_backend!r}")
    bundle, out = Path(bundle), Path(out)
    manifest = json.loads((bundle / MANIFEST).read_text())
    name = manifest["model"]["name"]
    if layout == "graph":
        return _graph_model(bundle, out, manifest, name, dynamic_batching)
    if layout == "python":
        return _python_model(bundle, out, manifest, name, "encode+score", dynamic_batching)
    preprocess, graph = f"{name}-preprocess", f"{name}-onnx"
    _python_model(bundle, out, manifest, preprocess, "encode", dynamic_batching)
    if graph_backend == "python":
        _python_model(bundle, out, manifest, graph, "score", dynamic_batching)
    else:
        _graph_model(bundle, out, manifest, graph, dynamic_batching)
    (out / name / "1").mkdir(parents=True, exist_ok=True)  # an ensemble has an (empty) version folder too
    (out / name / "config.pbtxt").write_text(ensemble_config(manifest, name, preprocess, graph))
    return out / name


def _graph_model(bundle: Path, out: Path, manifest: dict, name: str, batching: bool) -> Path:
    folder = out / name
    (folder / "1").mkdir(parents=True, exist_ok=True)
    shutil.copyfile(bundle / GRAPH, folder / "1" / GRAPH)
    (folder / "config.pbtxt").write_text(graph_config(manifest, name, batching))
    return folder


def _python_model(bundle: Path, out: Path, manifest: dict, name: str, step: str, batching: bool) -> Path:
    folder = out / name
    version = folder / "1"
    version.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(BACKEND, version / "model.py")
    shutil.copyfile(bundle / MANIFEST, version / MANIFEST)
    if step.endswith("score"):
        shutil.copyfile(bundle / GRAPH, version / GRAPH)
    shutil.rmtree(version / "features", ignore_errors=True)
    shutil.copytree(FEATURES, version / "features", ignore=shutil.ignore_patterns("__pycache__"))
    (folder / "config.pbtxt").write_text(python_config(manifest, name, step, batching))
    return folder
