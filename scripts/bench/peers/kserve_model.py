"""A KServe `Model` for an APG bundle: the peer that scripts/bench/peers/command.py measures (kserve_peer.py).

It does what the service's v2 route does with a JSON request, no more: one tensor per raw feature (BYTES or FP64,
shape [B], [B, 1] or [B, K]) → the bundle's own encoder (features.Encoder) → the same onnxruntime session as the
service (service.runtime.load_model: the same graph, session options, CPU provider, $APG_INTRA_OP_THREADS threads
and warm-up) → `score`, FP32 [B]. It runs only inside KServe's virtual environment (.venv-kserve/, with the
repository root on PYTHONPATH); the main environment never imports it.

    python -m scripts.bench.peers.kserve_model --bundle /abs/bundle --model_name NAME --http_port 8080 [ModelServer ...]
"""

from __future__ import annotations

import argparse
import logging
import uuid
from typing import Any

import kserve
from kserve import InferOutput, InferRequest, InferResponse, Model, ModelServer

from scripts.bench.peers.columns import tensor_columns as columns


class BundleModel(Model):
    """Scores raw feature tensors with a bundle; predict runs inline in ModelServer's event loop."""

    def __init__(self, name: str, bundle: str) -> None:
        super().__init__(name)
        self.bundle = bundle

    def load(self) -> bool:
        from service.runtime import load_model
        from service.settings import Settings

        self._model = load_model(self.bundle, Settings(providers="cpu"))
        self.ready = True
        return self.ready

    def predict(self, payload: InferRequest, headers: dict | None = None, response_headers: dict | None = None):
        feeds = self._model.encoder.encode_columns(tensor_columns(payload.inputs))
        scores = self._model.run(feeds)  # (B,) float32
        out = InferOutput(name="score", shape=[len(scores)], datatype="FP32", data=scores.tolist())
        return InferResponse(response_id=payload.id or str(uuid.uuid4()), model_name=self.name, infer_outputs=[out])


def tensor_columns(inputs: list) -> dict[str, Any]:
    """{feature: values} of the request's tensors (scripts/bench/peers/columns.py)."""
    return columns(
        (t.name, t.datatype, t.shape, t.data if isinstance(t.data, list) else t.as_numpy().reshape(-1).tolist())
        for t in inputs
    )


def main() -> None:
    parser = argparse.ArgumentParser(parents=[kserve.model_server.parser])
    parser.add_argument("--bundle", required=True)
    args, _ = parser.parse_known_args()
    model = BundleModel(args.model_name, args.bundle)
    model.load()
    server = ModelServer(
        http_port=args.http_port,
        workers=args.workers,
        enable_grpc=args.enable_grpc,
        enable_latency_logging=args.enable_latency_logging,
    )
    # No line per request (MLServer's peer runs with its access log off too): uvicorn's access log and the
    # timing middleware's kserve.trace lines are turned down; the middleware itself stays in the path.
    for name in ("uvicorn.access", "kserve.trace"):
        logging.getLogger(name).setLevel(logging.WARNING)
    server.start([model])


if __name__ == "__main__":
    main()
