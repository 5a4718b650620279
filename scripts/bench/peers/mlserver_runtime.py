"""An MLServer runtime for an APG bundle: the peer that `apg bench --mlserver` measures (mlserver_peer.py).

MLServer has no ONNX runtime of its own. This one does what the service's v2 route does with a JSON request, no
more: one tensor per raw feature (BYTES or FP64, shape [B] or [B, K]) → the bundle's own encoder
(features.Encoder) → the same onnxruntime session as the service (service.runtime.load_model: the
same graph, session options, CPU provider, $APG_INTRA_OP_THREADS threads and warm-up) → `score`, FP32 [B].
It runs only inside MLServer's virtual environment (.venv-mlserver/, with the repository root on PYTHONPATH);
the main environment never imports it.

    model-settings.json: {"name": ..., "implementation": "scripts.bench.peers.mlserver_runtime.BundleRuntime",
                          "parameters": {"uri": "/abs/path/to/bundle", "version": ...}}
"""

from __future__ import annotations

from typing import Any

from mlserver import MLModel
from mlserver.types import InferenceRequest, InferenceResponse, ResponseOutput

from scripts.bench.peers.columns import tensor_columns as columns


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


def tensor_columns(inputs: list) -> dict[str, Any]:
    """{feature: values} of the request's tensors (scripts/bench/peers/columns.py)."""
    return columns((t.name, t.datatype, t.shape, t.data.root) for t in inputs)
