"""config.pbtxt text for the models of an exported Triton repository (scripts/triton/repository.py writes them).

    graph_config(manifest, name)              # the ONNX graph on the onnxruntime backend: encoded int64 inputs
    python_config(manifest, name, step)       # a Python-backend model: raw features → encoded tensors and/or score
    ensemble_config(manifest, name, steps)    # raw features → preprocess → graph

Raw-feature inputs are those of the service's KServe v2 metadata (features.Encoder.describe): TYPE_STRING (v2 BYTES)
for string-like features, TYPE_FP64 for numeric ones; [B, 1] per row, a multi-valued feature [B, K] (K ≥ 1);
optional features are optional inputs. Triton's dims exclude the batch axis; `score` answers as FP32 [B, 1].
"""

from __future__ import annotations

from features import Encoder, Schema

DTYPES = {"int64": "TYPE_INT64", "float32": "TYPE_FP32"}
MAX_BATCH_SIZE = 4096
MAX_QUEUE_DELAY_US = 500
ENCODED = "encoded_"  # prefix of the ensemble's tensors between its two steps (raw and field names may coincide)
SCORE = '{\n  name: "score"\n  data_type: TYPE_FP32\n  dims: [ 1 ]\n}'


def _block(name: str, dtype: str, dims: list[int], reshape: bool = False, optional: bool = False) -> str:
    body = f'  name: "{name}"\n  data_type: {dtype}\n  dims: [ {", ".join(map(str, dims))} ]\n'
    body += "  reshape: { shape: [ ] }\n" if reshape else ""
    body += "  optional: true\n" if optional else ""
    return "{\n" + body + "}"


def _encoded(spec: dict, prefix: str = "", reshape: bool = True) -> str:
    """An encoded int64 tensor: a [batch] one is declared [1] (and reshaped to a scalar per row for the graph)."""
    dims = spec["shape"][1:]
    return _block(prefix + spec["name"], DTYPES[spec["dtype"]], dims or [1], reshape=reshape and not dims)


def raw_inputs(manifest: dict) -> list[str]:
    """One input per raw feature, as the service's v2 metadata describes it (BYTES/FP64, required or optional)."""
    features = Encoder(Schema.from_dict(manifest["schema"])).describe().values()
    return [
        _block(f.name, "TYPE_FP64" if f.numeric else "TYPE_STRING", [-1] if f.multi else [1], optional=not f.required)
        for f in features
    ]


def _header(name: str, backend: str, inputs: list[str], outputs: list[str], max_batch_size: int) -> str:
    sep = ",\n"
    return (
        f'name: "{name}"\n{backend}\nmax_batch_size: {max_batch_size}\n'
        f"input [\n{sep.join(inputs)}\n]\noutput [\n{sep.join(outputs)}\n]\n"
    )


def _batching(on: bool, preferred: str = "") -> str:
    if not on:
        return ""
    return f"dynamic_batching {{\n{preferred}  max_queue_delay_microseconds: {MAX_QUEUE_DELAY_US}\n}}\n"


def _footer(manifest: dict, extra: dict[str, str] | None = None) -> str:
    params = {"apg_version": manifest["model"]["version"], **(extra or {})}
    text = "instance_group [ { count: 1, kind: KIND_CPU } ]\n"
    for key, value in params.items():
        text += f'parameters {{ key: "{key}" value: {{ string_value: "{value}" }} }}\n'
    return text


def graph_config(manifest: dict, name: str, dynamic_batching: bool = True) -> str:
    """The ONNX graph on the onnxruntime backend, inputs the encoded tensors of the manifest."""
    inputs = [_encoded(s) for s in manifest["inputs"]]
    outputs = [_encoded(s) for s in manifest["outputs"]]
    preferred = "  preferred_batch_size: [ 64, 256 ]\n"
    return (
        _header(name, 'platform: "onnxruntime_onnx"', inputs, outputs, MAX_BATCH_SIZE)
        + _batching(dynamic_batching, preferred)
        + _footer(manifest)
    )


def python_config(manifest: dict, name: str, step: str, dynamic_batching: bool = True) -> str:
    """A Python-backend model running scripts/triton/backend.py; `step` (its `apg_step` parameter) is "encode"
    (raw features → the encoded tensors, named ENCODED + input), "encode+score" (raw features → score) or
    "score" (the encoded tensors → score: the graph on onnxruntime inside the Python backend)."""
    raw = step.startswith("encode")
    inputs = raw_inputs(manifest) if raw else [_encoded(s) for s in manifest["inputs"]]
    outputs = [_encoded(s, ENCODED, reshape=False) for s in manifest["inputs"]] if step == "encode" else [SCORE]
    return (
        _header(name, 'backend: "python"', inputs, outputs, MAX_BATCH_SIZE)
        + _batching(dynamic_batching)
        + _footer(manifest, {"apg_step": step})
    )


def ensemble_config(manifest: dict, name: str, preprocess: str, graph: str) -> str:
    """Raw features → `preprocess` (the bundle's encoder) → `graph` (the ONNX model) → score."""
    features = Encoder(Schema.from_dict(manifest["schema"])).describe()
    fields = [s["name"] for s in manifest["inputs"]]
    step1 = _step(preprocess, {f: f for f in features}, {ENCODED + f: ENCODED + f for f in fields})
    step2 = _step(graph, {f: ENCODED + f for f in fields}, {"score": "score"})
    return (
        _header(name, 'platform: "ensemble"', raw_inputs(manifest), [SCORE], MAX_BATCH_SIZE)
        + f"ensemble_scheduling {{\n  step [\n{step1},\n{step2}\n  ]\n}}\n"
        + f'parameters {{ key: "apg_version" value: {{ string_value: "{manifest["model"]["version"]}" }} }}\n'
    )


def _step(model: str, inputs: dict[str, str], outputs: dict[str, str]) -> str:
    maps = [f'      input_map {{ key: "{k}" value: "{v}" }}' for k, v in inputs.items()]
    maps += [f'      output_map {{ key: "{k}" value: "{v}" }}' for k, v in outputs.items()]
    return f'    {{\n      model_name: "{model}"\n      model_version: -1\n' + "\n".join(maps) + "\n    }"
