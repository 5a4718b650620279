"""The Python-backend model of an exported Triton repository: copied as `<model>/1/model.py`, beside a copy of the
`features` package (the bundle's own torch-free encoder, byte for byte), the bundle's `bundle.json` (its schema and
vocabularies) and, when it scores, `model.onnx`. It runs inside Triton's Python-backend stub, never in this project.

The config's `apg_step` parameter says what it does (scripts/triton/config.py, python_config):
    encode         raw features (BYTES / FP64, as the service's v2 route takes them) → the encoded int64 tensors
    encode+score   raw features → score, with onnxruntime in this process (for a Triton without its onnxruntime backend)
    score          the encoded tensors → score (the graph on onnxruntime inside the Python backend)

A dynamic batch arrives as several requests: they are encoded and scored together (one encoder call, one session
run) and split again. A request that breaks the feature contract gets its own error (INVALID_ARG, the encoder's
message naming feature and row): the batch is then redone request by request, so the others still get scores.
Needs numpy and (to score) onnxruntime in the stub's interpreter, which starts isolated from PYTHONPATH: the entries
of PYTHONPATH are added as site directories here (scripts/install_triton.sh puts them there for the PyPI Triton).
"""

import os
import site

for _entry in filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep)):
    site.addsitedir(_entry)

import json  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import triton_python_backend_utils as pb_utils  # noqa: E402

from features import Encoder, FeatureError, read_schema  # noqa: E402  (the copy beside this file)
from features.errors import InvalidType  # noqa: E402

HERE = Path(__file__).resolve().parent
ENCODED = "encoded_"


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        self.step = config["parameters"]["apg_step"]["string_value"]
        schema, _ = read_schema(HERE / "bundle.json")
        self.encoder = Encoder(schema)
        self.features = self.encoder.describe()
        self.fields = [f.name for f in self.encoder.fields]
        self.session = _session(HERE / "model.onnx") if self.step.endswith("score") else None

    def execute(self, requests):
        try:
            return self._answer(requests)
        except FeatureError as exc:
            if len(requests) == 1:
                return [pb_utils.InferenceResponse(error=_invalid(exc.message))]
            return [self.execute([r])[0] for r in requests]  # only the requests at fault get an error

    def _answer(self, requests):
        sizes = [_batch_size(r) for r in requests]
        parts = list(zip(requests, sizes, strict=True))
        if self.step == "score":
            feeds = {f: self._encoded_input(parts, f) for f in self.fields}
        else:
            feeds = self.encoder.encode_columns(_merge([(self._columns(r, n), n) for r, n in parts]))
        if self.session is None:  # encode: one (B, 1) or (B, max_len) int64 tensor per field
            outs = {ENCODED + f: a.reshape(len(a), -1) for f, a in feeds.items()}
        else:
            outs = {"score": self.session.run(["score"], feeds)[0].reshape(-1, 1)}
        responses, start = [], 0
        for n in sizes:
            tensors = [pb_utils.Tensor(k, np.ascontiguousarray(v[start : start + n])) for k, v in outs.items()]
            responses.append(pb_utils.InferenceResponse(output_tensors=tensors))
            start += n
        return responses

    def _encoded_input(self, parts, field):
        """One encoded field of every request, (B,) or (B, max_len) as the graph takes it."""
        arrays = [_tensor(r, field).reshape(n, -1) for r, n in parts]
        merged = arrays[0] if len(arrays) == 1 else np.concatenate(arrays)
        multi = next(f for f in self.encoder.fields if f.name == field).kind == "multi"
        return merged if multi else merged.reshape(-1)

    def _columns(self, request, n):
        """{raw feature: n values}: strings from BYTES, a float array from FP64; [n, K] → K values per row."""
        columns = {}
        for name in self.features:
            tensor = pb_utils.get_input_tensor_by_name(request, name)
            if tensor is None:
                continue
            values = tensor.as_numpy()
            values = values.reshape(n, -1) if values.ndim > 1 else values.reshape(n, 1)
            if values.dtype == np.object_:
                flat = [_text(v, name, i // values.shape[1]) for i, v in enumerate(values.reshape(-1).tolist())]
                k = values.shape[1]
                columns[name] = flat if k == 1 else [flat[i * k : (i + 1) * k] for i in range(n)]
            else:
                columns[name] = values.reshape(-1) if values.shape[1] == 1 else values.tolist()
        return columns


def _session(path):
    import onnxruntime as ort

    options = ort.SessionOptions()  # as the service opens it (service/runtime.py)
    options.intra_op_num_threads = int(os.environ.get("APG_INTRA_OP_THREADS", "1"))
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])


def _batch_size(request):
    return int(request.inputs()[0].shape()[0])


def _tensor(request, name):
    return pb_utils.get_input_tensor_by_name(request, name).as_numpy()


def _text(value, name, row):
    if isinstance(value, bytes):
        try:
            return value.decode()
        except UnicodeDecodeError:
            raise InvalidType(f"feature {name!r}, row {row}: not UTF-8 text", field=name, row=row) from None
    return value


def _merge(requests):
    """One batch of columns from several requests' columns; a feature some requests lack is missing in their rows."""
    if len(requests) == 1:
        return requests[0][0]
    names = {name for columns, _ in requests for name in columns}
    merged = {}
    for name in names:
        parts = [columns.get(name, [None] * n) for columns, n in requests]
        if all(isinstance(p, np.ndarray) for p in parts):
            merged[name] = np.concatenate(parts)
        else:
            merged[name] = [v for p in parts for v in (p.tolist() if isinstance(p, np.ndarray) else p)]
    return merged


def _invalid(message):
    code = getattr(pb_utils.TritonError, "INVALID_ARG", None)
    return pb_utils.TritonError(message) if code is None else pb_utils.TritonError(message, code)
