"""A small synthetic but valid bundle, built without torch (onnx.helper), and its numpy reference model.

The graph is a logistic model over the schema's fields:
    score = sigmoid(bias + Σ_f w_f[x_f] + mean_{j: g_j > 0} w_genres[g_j])
so expected scores can be computed from encoded indices in numpy (`reference_scores`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from features import FORMAT_VERSION, GRAPH, MANIFEST, OUTPUT_SPECS, Schema, file_entry, input_specs

MAX_LEN = 6

SCHEMA = {
    "name": "synthetic",
    "label": {"column": "rating", "threshold": 4.0},
    "user_column": "user_id",
    "time_column": "timestamp",
    "fields": [
        {"name": "user_id", "kind": "categorical", "required": True, "vocab": ["196", "186", "22", "244", "166"]},
        {"name": "item_id", "kind": "categorical", "required": True, "vocab": ["242", "302", "377", "51", "346"]},
        {"name": "age", "kind": "numeric", "edges": [18, 25, 35, 45, 50, 56]},
        {"name": "gender", "kind": "categorical", "vocab": ["F", "M"]},
        {"name": "zip_prefix", "kind": "categorical", "source": "zip_code", "prefix": 2, "vocab": ["55", "94", "32"]},
        {
            "name": "genres",
            "kind": "multi",
            "sep": "|",
            "max_len": MAX_LEN,
            "vocab": ["Action", "Comedy", "Drama", "Romance", "Thriller", "Sci-Fi", "War"],
        },
        {
            "name": "user_activity",
            "kind": "categorical",
            "source": "user_id",
            "mapping": {"196": "high", "186": "low", "22": "high"},
            "mapping_default": "cold",
            "vocab": ["cold", "low", "high"],
        },
    ],
}


FIELDS = Schema.from_dict(SCHEMA).fields  # the contract's reading of SCHEMA (cardinality, widths)


@dataclass(frozen=True)
class SyntheticBundle:
    path: Path
    version: str
    weights: dict[str, np.ndarray]  # field → (cardinality,) float32, w[0] = 0
    bias: float


def make_weights(seed: int) -> tuple[dict[str, np.ndarray], float]:
    rng = np.random.default_rng(seed)
    weights = {}
    for f in FIELDS:
        w = rng.normal(0.0, 0.6, f.cardinality).astype(np.float32)
        w[0] = 0.0  # missing contributes nothing (and pads the multi field)
        weights[f.name] = w
    return weights, float(rng.normal(0.0, 0.2))


def make_graph(weights: dict[str, np.ndarray], bias: float) -> onnx.ModelProto:
    nodes, inputs, inits, terms = [], [], [], []
    for f in FIELDS:
        name, multi = f.name, f.kind == "multi"
        inputs.append(
            helper.make_tensor_value_info(name, TensorProto.INT64, ["batch", f.width] if multi else ["batch"])
        )
        inits.append(numpy_helper.from_array(weights[name], f"w_{name}"))
        nodes.append(helper.make_node("Gather", [f"w_{name}", name], [f"g_{name}"]))  # (B,) or (B, L)
        if not multi:
            terms.append(f"g_{name}")
            continue
        # mean over the non-zero (non-padding) positions; an all-zero row pools to 0
        nodes += [
            helper.make_node("Greater", [name, "zero_i"], ["present"]),
            helper.make_node("Cast", ["present"], ["mask"], to=TensorProto.FLOAT),  # (B, L)
            helper.make_node("ReduceSum", [f"g_{name}", "axis1"], ["pool_sum"], keepdims=0),  # (B,)
            helper.make_node("ReduceSum", ["mask", "axis1"], ["pool_cnt"], keepdims=0),
            helper.make_node("Max", ["pool_cnt", "one_f"], ["pool_den"]),
            helper.make_node("Div", ["pool_sum", "pool_den"], [f"m_{name}"]),
        ]
        terms.append(f"m_{name}")
    inits += [
        numpy_helper.from_array(np.array(0, dtype=np.int64), "zero_i"),
        numpy_helper.from_array(np.array([1], dtype=np.int64), "axis1"),
        numpy_helper.from_array(np.array(1.0, dtype=np.float32), "one_f"),
        numpy_helper.from_array(np.array(bias, dtype=np.float32), "bias"),
    ]
    nodes += [helper.make_node("Sum", [*terms, "bias"], ["logit"]), helper.make_node("Sigmoid", ["logit"], ["score"])]
    output = helper.make_tensor_value_info("score", TensorProto.FLOAT, ["batch"])
    graph = helper.make_graph(nodes, "synthetic_ctr", inputs, [output], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="tests")
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def build_bundle(path: Path, version: str = "v1", seed: int = 0, name: str = "synthetic-apg") -> SyntheticBundle:
    """Write model.onnx and bundle.json (format 1, with sha256) into `path`."""
    path.mkdir(parents=True, exist_ok=True)
    weights, bias = make_weights(seed)
    onnx.save(make_graph(weights, bias), path / GRAPH)
    manifest = {
        "format_version": FORMAT_VERSION,
        "model": {"name": name, "version": version},
        "created_at": "2026-11-28T15:40:12Z",
        "files": {GRAPH: file_entry(path / GRAPH)},
        "schema": SCHEMA,
        "inputs": input_specs(Schema.from_dict(SCHEMA)),
        "outputs": OUTPUT_SPECS,
        "apg": {"base_model": "logistic", "condition": "none"},
        "metrics": {},
        "parity": {"max_abs_diff": 0.0, "batch_sizes": [1]},
    }
    (path / MANIFEST).write_text(json.dumps(manifest, indent=2))
    return SyntheticBundle(path, version, weights, bias)


def edit_manifest(path: Path, **changes: object) -> None:
    manifest = json.loads((path / "bundle.json").read_text())
    manifest.update(changes)
    (path / "bundle.json").write_text(json.dumps(manifest))


def reference_scores(bundle: SyntheticBundle, feeds: dict[str, np.ndarray]) -> np.ndarray:
    """The graph's arithmetic in numpy (float64), from encoded indices."""
    logit = np.full(len(feeds["user_id"]), bundle.bias, dtype=np.float64)
    for f in FIELDS:
        g = bundle.weights[f.name].astype(np.float64)[feeds[f.name]]
        if f.kind == "multi":
            count = np.maximum((feeds[f.name] > 0).sum(axis=1), 1)
            g = g.sum(axis=1) / count
        logit += g
    return 1.0 / (1.0 + np.exp(-logit))


ROWS = [
    {"user_id": "196", "item_id": "242", "age": 49, "gender": "M", "zip_code": "55105", "genres": "Comedy|Drama"},
    {"user_id": 186, "item_id": "302", "age": 39.0, "gender": "F", "zip_code": "94043", "genres": ["Action"]},
    {"user_id": "22", "item_id": 377, "age": 25, "gender": "M", "zip_code": "32067", "genres": "War|Sci-Fi|Action"},
    {"user_id": "999", "item_id": "51", "age": None, "zip_code": "", "genres": ""},
    {"user_id": " 244 ", "item_id": "0", "age": 80, "gender": "X", "zip_code": "00000"},
]
