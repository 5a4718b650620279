"""An MLServer runtime for an APG bundle: the peer that `apg bench --mlserver` measures (mlserver_peer.py).

MLServer has no ONNX runtime of its own. This one does what the service's v2 route does with a JSON request, no
more: one tensor per raw feature (BYTES or FP64, shape [B] or [B, K]) → the bundle's own encoder
(features.Encoder) → the same onnxruntime session as the service (service.runtime.load_model: the
same graph, session options, CPU provider, $APG_INTRA_OP_THREADS threads and warm-up) → `score`, FP32 [B].
It runs only inside MLServer's virtual environment (.venv-mlserver/, with the repository root on PYTHONPATH);
the main environment never imports it.

    model-settings.json: {"name": ..., "implementation": "scripts.bench.mlserver_runtime.BundleRuntime",
                          "parameters": {"uri": "/abs/path/to/bundle", "version": ...}}
"""

from __future__ import annotations

from typing import Any

from mlserver import MLModel
from mlserver.types import InferenceRequest, InferenceResponse, RequestInput, ResponseOutput


class BundleRuntime(MLModel):
    """Scores raw feature tensors with a bundle; inference runs inline in MLServer's event loop."""

    async def load(self) -> bool:
        from service.runtime import load_model
        from service.settings import Settings

        self._model = load_model(self.settings.parameters.uri, Settings(providers="cpu"))
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        feeds = self._model.encoder.encode_columns(tensor_columns(payload.inputs))
        scores = self._model.run(feeds)  # (B,) float32
        out = ResponseOutput(name="score", shape=[len(scores)], datatype="FP32", data=scores.tolist())
        return InferenceResponse(model_name=self.name, model_version=self.version, outputs=[out])


def tensor_columns(inputs: list[RequestInput]) -> dict[str, list[Any]]:
    """{feature: values}: BYTES elements as str, numbers as they came (data flat or nested); [B, K] as rows."""
    columns = {}
    for tensor in inputs:
        flat = list(_flatten(tensor.data.root))
        if tensor.datatype == "BYTES":
            flat = [v.decode() if isinstance(v, bytes) else v for v in flat]
        if len(tensor.shape) == 2 and tensor.shape[1] != 1:  # multi-valued [B, K]
            k = tensor.shape[1]
            flat = [flat[i : i + k] for i in range(0, len(flat), k)]
        columns[tensor.name] = flat
    return columns


def _flatten(data: Any):
    for v in data if isinstance(data, list) else [data]:
        if isinstance(v, list):
            yield from _flatten(v)
        else:
            yield v
