"""Writes a bundle (docs/BUNDLE.md): model.onnx + bundle.json (+ model.opt.onnx, model.int8.onnx on request).

The bundle is written into a temporary sibling folder and renamed into place, so a reader never sees half of one.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

from features import FORMAT_VERSION, GRAPH, MANIFEST, OUTPUT_SPECS, file_entry, input_specs
from features.bundle import OPTIMISED_GRAPH, QUANTISED_GRAPH
from features.metrics import auc
from model.export import OPSET, export_onnx, ort_predict, ort_session, parity
from model.train import load_run, load_test_split

PARITY_TOLERANCE = 1e-5


def model_name(config: dict) -> str:
    cond = config["apg"]["condition"]
    return config["model"] if cond == "none" else f"{config['model']}-apg-{cond}"


def write_optimised(src: Path, dst: Path) -> None:
    """onnxruntime's provider-independent (basic) graph optimisations, saved offline."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    opts.optimized_model_filepath = str(dst)
    ort.InferenceSession(str(src), opts, providers=["CPUExecutionProvider"])


def write_quantised(src: Path, dst: Path, x, y) -> dict:
    """Dynamic int8 quantisation of the weights and its test-AUC change."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8)
    before, after = auc(y, ort_predict(ort_session(src), x)), auc(y, ort_predict(ort_session(dst), x))
    return {"test_auc_fp32": before, "test_auc_int8": after, "auc_change": after - before}


def write_bundle(run_dir: str | Path, out: str | Path, optimise: bool = True, quantise: bool = False) -> dict:
    """Export a training run to a bundle; refuses (raises) if ONNX and PyTorch disagree by more than 1e-5."""
    model, schema, metrics = load_run(run_dir)  # refuses a schema.json that is not the one the model trained with
    x_test, y_test = load_test_split(run_dir, schema)

    out = Path(out)
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        manifest, extra = _write(tmp, model, schema, metrics, x_test, y_test, optimise, quantise)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)  # a refused export leaves nothing behind
        raise
    replace_dir(tmp, out)
    files = manifest["files"]
    return {
        "bundle": str(out),
        "model": manifest["model"],
        "parity": manifest["parity"],
        "files": {k: v["bytes"] for k, v in files.items()},
        **extra,
    }


def _write(tmp: Path, model, schema, metrics: dict, x_test, y_test, optimise: bool, quantise: bool):
    """Every file of the bundle into ``tmp``; returns (manifest, extra report)."""
    model_cfg = metrics["config"]["model"]
    onnx_path = export_onnx(model, schema, tmp / GRAPH)
    check = parity(model, ort_session(onnx_path), x_test)
    if check["max_abs_diff"] > PARITY_TOLERANCE:
        raise RuntimeError(f"ONNX/PyTorch parity failed: max abs diff {check['max_abs_diff']:.3g} > {PARITY_TOLERANCE}")
    extra = {}
    if optimise:
        write_optimised(onnx_path, tmp / OPTIMISED_GRAPH)
    if quantise:
        extra["int8"] = write_quantised(onnx_path, tmp / QUANTISED_GRAPH, x_test, y_test)

    files = {p.name: file_entry(p) for p in sorted(tmp.glob("*.onnx"))}
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    manifest = {
        "format_version": FORMAT_VERSION,
        "model": {
            "name": model_name(metrics["config"]["model"]),
            "version": f"{stamp}-{files[GRAPH]['sha256'][:8]}",
        },
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "files": files,
        "opset": OPSET,
        "schema": schema.to_dict(),
        "inputs": input_specs(schema),
        "outputs": OUTPUT_SPECS,
        "apg": {
            "base_model": model_cfg["model"],
            "hidden": model_cfg["hidden"],
            "embed_dim": model_cfg["embed_dim"],
            **model_cfg["apg"],
        },
        "metrics": {"valid": metrics["valid"], "test": metrics["test"], "params": metrics["params"]},
        "parity": {**check, "tolerance": PARITY_TOLERANCE},
        **extra,
    }
    (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1))
    return manifest, extra


def replace_dir(new: Path, out: Path) -> None:
    """Swap ``new`` into ``out``: the old bundle stays whole until the new one is in place."""
    old = out.with_name(out.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if out.exists():
        out.rename(old)
    new.rename(out)
    shutil.rmtree(old, ignore_errors=True)
