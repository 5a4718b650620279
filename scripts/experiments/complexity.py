"""Complexity of APG vs a static MLP, on the paper's MLP [393, 1024, 512, 256] and on trained DeepFM runs.

Parameters, exported ONNX size and onnxruntime CPU latency (1 intra-op thread) per batch, each as a ratio to the
static model measured in the same run. Writes docs/results/complexity.json (``apg experiment report`` renders it).

    apg experiment complexity [--runs runs/deepfm runs/deepfm-self] [--repeats 200]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from model.apg import APGMLP, APGConfig, merge_overparam
from model.export import torch_to_onnx
from model.layers import MLP

SIZES = (393, 1024, 512, 256)
COND_DIM = 16  # group-wise condition: an embedding of the sample's group
MAX_GENERATED = 2e8  # skip a (variant, batch) whose generated weights would not fit comfortably in memory


class Net(nn.Module):
    """(x, z) → tower output; self-wise towers take x only (their condition is each layer's input)."""

    def __init__(self, tower: nn.Module, uses_z: bool):
        super().__init__()
        self.tower, self.uses_z = tower, uses_z

    def forward(self, x, z=None):
        return self.tower(x, z if self.uses_z else None)


def variants(quick: bool) -> dict[str, tuple[nn.Module, bool, int]]:
    """name → (net, uses z, generated values per sample)."""
    hidden, out = SIZES[1:], {}
    out["static MLP"] = (Net(MLP(SIZES[0], hidden), False), False, 0)
    pairs = list(zip(SIZES, SIZES[1:], strict=False))
    for name, cfg in [
        ("basic APG (W_i generated)", APGConfig("group", variant="basic", rank=8)),
        ("low-rank APG (U_i, S_i, V_i generated), K=8", APGConfig("group", variant="lowrank", rank=8)),
        ("shared APG, K=8 (deployed)", APGConfig("group", rank=8)),
        ("shared APG, K=16", APGConfig("group", rank=16)),
        ("shared APG, K=32", APGConfig("group", rank=32)),
        ("shared APG, K=16, over-param P=64 (merged)", APGConfig("group", rank=16, overparam=64)),
        ("shared APG self-wise, K=16", APGConfig("self", rank=16)),
    ]:
        if quick and cfg.variant == "basic":
            continue
        tower = APGMLP(SIZES[0], hidden, COND_DIM, cfg)
        gen = {"basic": sum(n * m for m, n in pairs), "lowrank": sum(n * 8 + 64 + 8 * m for m, n in pairs)}
        out[name] = (Net(tower, cfg.condition != "self"), cfg.condition != "self", gen.get(cfg.variant, 0))
    return out


def export(net: Net, uses_z: bool, path: Path) -> Path:
    x, z = torch.randn(2, SIZES[0]), torch.randn(2, COND_DIM)
    args, names = ((x, z), ["x", "z"]) if uses_z else ((x,), ["x"])
    return torch_to_onnx(merge_overparam(net), args, path, names, ["y"])


def latency(session, feeds: dict, repeats: int) -> float:
    """Median seconds per ``run`` after a warm-up."""
    for _ in range(5):
        session.run(None, feeds)
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        session.run(None, feeds)
        times.append(time.perf_counter() - t)
    return float(np.median(times))


def session(path: Path):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def mlp_table(batches: tuple[int, ...], repeats: int, quick: bool, tmp: Path) -> list[dict]:
    rng, rows = np.random.default_rng(0), []
    for i, (name, (net, uses_z, generated)) in enumerate(variants(quick).items()):
        path = export(net, uses_z, tmp / f"v{i}.onnx")
        sess, row = session(path), {"variant": name}
        row["params_train"] = sum(p.numel() for p in net.parameters())
        row["params_deployed"] = sum(p.numel() for p in merge_overparam(net).parameters())
        row["onnx_bytes"] = path.stat().st_size
        for b in batches:
            if generated * b > MAX_GENERATED:
                row[f"latency_b{b}"] = None
                continue
            feeds = {"x": rng.standard_normal((b, SIZES[0]), dtype=np.float32)}
            if uses_z:
                feeds["z"] = rng.standard_normal((b, COND_DIM), dtype=np.float32)
            row[f"latency_b{b}"] = latency(sess, feeds, repeats if b < 256 else max(10, repeats // 10))
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def deepfm_table(runs: list[str], batches: tuple[int, ...], repeats: int, tmp: Path) -> list[dict]:
    from model.export import export_onnx
    from model.train import load_run, load_test_split

    rows = []
    for run in runs:
        model, schema, metrics = load_run(run)
        x, _ = load_test_split(run, schema)  # the run's own test rows: no refit, the split it was trained on
        path = export_onnx(model, schema, tmp / f"{Path(run).name}.onnx")
        sess, row = session(path), {"variant": f"{metrics['model']} apg={metrics['apg']} ({run})"}
        row["params_train"] = row["params_deployed"] = metrics["params"]
        row["onnx_bytes"], row["test_auc"] = path.stat().st_size, metrics["test"]["auc"]
        for b in batches:
            row[f"latency_b{b}"] = latency(sess, {k: v[:b] for k, v in x.items()}, repeats if b < 256 else 20)
        # the same model exported without flushing its tiny weights (model/export.py TINY): what subnormals cost
        kept = session(export_onnx(model, schema, tmp / f"{Path(run).name}-kept.onnx", flush=False))
        b = max(batches)
        row[f"latency_b{b}_unflushed"] = latency(kept, {k: v[:b] for k, v in x.items()}, 20)
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The options of `apg experiment complexity`."""
    p.add_argument("--runs", nargs="*", default=[], help="trained run directories to compare (first = reference)")
    p.add_argument("--repeats", type=int, default=200, help="timed runs per batch size (fewer at large batches)")
    p.add_argument("--quick", action="store_true", help="skip the basic variant, few repeats (smoke test)")
    p.add_argument("--out", default="docs/results/complexity.json", help="the JSON document (rendered by the report)")


def run_from_args(args) -> int:
    torch.manual_seed(0)
    batches = (1, 1024)
    repeats = 5 if args.quick else args.repeats
    with tempfile.TemporaryDirectory() as tmp:
        result = {
            "sizes": SIZES,
            "batches": batches,
            "threads": 1,
            "command": args.command_line,
            "mlp": mlp_table(batches, repeats, args.quick, Path(tmp)),
            "trained": deepfm_table(args.runs, batches, repeats, Path(tmp)),
        }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1))
    print(f"wrote {args.out}")
    return 0
