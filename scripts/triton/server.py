"""How the tritonserver that scripts/install_triton.sh installs (the PyPI wheel nvidia-pytriton 0.7.0: Triton 2.51.0,
CPU, Python backend, no onnxruntime backend) is started on a model repository: its command line and environment.

    cmd = command(repo, http_port, grpc_port, metrics_port)
    subprocess.Popen(cmd, env=environment(os.environ))

Every port is bound to 127.0.0.1; GPU metrics and the pinned memory pool are off (no GPU is assumed).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
HOME = Path(os.environ.get("TRITON_HOME", REPO / ".triton"))
SERVER = HOME / "wheel" / "pytriton" / "tritonserver"
LIBS = HOME / "wheel" / "nvidia_pytriton.libs"
SITE = HOME / "site"  # numpy + onnxruntime for the Python backend's stub
INSTALL = "bash scripts/install_triton.sh"


def binary() -> Path:
    """The tritonserver binary; FileNotFoundError naming the install script when it is not installed."""
    path = SERVER / "bin" / "tritonserver"
    if not (HOME / "READY").is_file() or not path.is_file():
        raise FileNotFoundError(f"no tritonserver under {HOME}: install it with `{INSTALL}`")
    return path


def command(repo: Path, http_port: int, grpc_port: int, metrics_port: int, *extra: str) -> list[str]:
    host = "127.0.0.1"
    return [
        str(binary()),
        f"--model-repository={Path(repo).resolve()}",
        f"--backend-directory={SERVER / 'backends'}",
        f"--cache-directory={SERVER / 'caches'}",
        f"--http-address={host}",
        f"--http-port={http_port}",
        f"--grpc-address={host}",
        f"--grpc-port={grpc_port}",
        f"--metrics-address={host}",
        f"--metrics-port={metrics_port}",
        "--allow-gpu-metrics=false",
        "--pinned-memory-pool-byte-size=0",
        "--log-info=true",
        *extra,
    ]


def environment(base: Mapping[str, str]) -> dict[str, str]:
    """`base` with the wheel's libraries on LD_LIBRARY_PATH and only SITE on PYTHONPATH (backend.py reads it)."""
    env = {k: v for k, v in base.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    env["LD_LIBRARY_PATH"] = os.pathsep.join([str(LIBS), *filter(None, [base.get("LD_LIBRARY_PATH")])])
    env["PYTHONPATH"] = str(SITE)
    return env
