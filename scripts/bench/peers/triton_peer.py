"""Triton Inference Server 2.51.0 as a peer of the bench (scripts/bench/peers/command.py): the PyPI wheel's
`tritonserver` (nvidia-pytriton 0.7.0, installed by `bash scripts/install_triton.sh` into .triton/, its own
environment: the Python backend's stub on the system's CPython 3.11 with numpy 1.26.4 and this environment's
onnxruntime in .triton/site), serving the one-step Python-backend model that `apg export --triton-layout python`
writes: the bundle's own encoder and onnxruntime session in the backend's stub process (scripts/triton/backend.py).

Three variants: the one-step model with dynamic batching on (max queue delay 500 µs, as exported) and off, and the
ensemble (NAME-preprocess, the encoder, then NAME-onnx) with its graph step on the Python backend too (graph_backend
"python"): the wheel has no onnxruntime backend, so the ensemble as exported (graph on onnxruntime) is not
measured; this one shows what the extra step and the tensors between the two stub processes cost.

How it is served: one model instance on the CPU, HTTP on 127.0.0.1, gRPC on another free loopback port (measured
for the one-step variants: GRPC), metrics on a third (no traffic), GPU metrics off, everything else Triton's
default.
"""

from __future__ import annotations

import shutil
from functools import partial
from pathlib import Path

from scripts.clients.launch import Servers, free_port
from scripts.triton import server as triton
from scripts.triton import write_triton_repo

# server name → write_triton_repo's options
VARIANTS = {
    "triton-batching": {"layout": "python", "dynamic_batching": True},
    "triton-no-batching": {"layout": "python", "dynamic_batching": False},
    "triton-ensemble": {"layout": "ensemble", "graph_backend": "python", "dynamic_batching": True},
}
ONE_STEP = ("triton-batching", "triton-no-batching")  # the Python-backend Triton of issue 15's targets
GRPC = {f"{name}-grpc": name for name in ONE_STEP}  # measured over gRPC too: the same process, its gRPC port


def version() -> str:
    """The installed stamp (.triton/READY): wheel, stub and the stub's numpy/onnxruntime."""
    triton.binary()  # FileNotFoundError naming the install script when absent
    return (triton.HOME / "READY").read_text().strip()


def command(repo: Path, grpc_port: int, port: int) -> list[str]:
    return triton.command(repo, port, grpc_port, free_port(), "--exit-timeout-secs=5", "--log-info=false")


def start(servers: Servers, bundle: Path, folder: Path, env: dict[str, str]) -> dict:
    """Start every variant (Servers.start, ready at /v2/health/ready); what they run and their gRPC ports."""
    doc = {"installed": version(), "variants": {}}
    for name, options in VARIANTS.items():
        repo = folder / name
        shutil.rmtree(repo, ignore_errors=True)
        write_triton_repo(bundle, repo, **options)
        grpc_port = free_port()
        servers.start(name, partial(command, repo, grpc_port), triton.environment(env), ready="/v2/health/ready")
        doc["variants"][name] = {**options, "repository": str(repo), "grpc_port": grpc_port}
    return doc
