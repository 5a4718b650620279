"""MLServer 1.7.1 as the peer of `apg bench --mlserver`: its own virtual environment, a model repository for the
bundle, and the command that serves it. A benchmark only, never CI.

    python -m scripts.bench.peers.mlserver_peer setup     # creates .venv-mlserver/ (mlserver 1.7.1, uvloop 0.21.0, ...)
    python -m scripts.bench.peers.mlserver_peer check     # its versions, and that it imports the service's encoder
    apg bench --mlserver                       # then also measures "mlserver-v2-json" beside "v2-json"

MLServer serves in its own environment and needs uvloop 0.21.0 there: with uvloop 0.23 it cannot load a model (a
known bug). onnxruntime, numpy, orjson and httptools are pinned to this environment's versions, so both servers run
the same kernels and parse HTTP with the same parser (MLServer's own requirements leave uvicorn on its pure-Python
h11 parser, a handicap that is not MLServer's design). MLServer has no ONNX runtime:
scripts/bench/peers/mlserver_runtime.py is one, with the service's encoder and session (the repository root goes on
its PYTHONPATH), so its work per request is the service's v2 JSON route's.

How it is served (settings.json, written beside model-settings.json in OUT/mlserver): one process on 127.0.0.1,
parallel inference workers off (`parallel_workers: 0`, as MLSERVER_PARALLEL_WORKERS=0: predict runs in the server's
event loop), debug off (no access log, INFO logging), metrics on (MLServer's default, like the service's) on a free
port, gRPC on a free port (MLServer always starts it; no traffic), adaptive batching off; everything else is
MLServer's default (its gzip middleware stays in the path but compresses nothing: the client asks for no encoding).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from functools import partial
from importlib import metadata
from pathlib import Path

import numpy as np

from scripts import venvs
from scripts.clients.http import HOST, Connection
from scripts.clients.launch import REPO, Servers, free_port
from scripts.clients.v2 import json_scores

DEFAULT_VENV = REPO / ".venv-mlserver"
PINS = ("mlserver==1.7.1", "uvloop==0.21.0")
SAME_AS_HERE = ("onnxruntime", "numpy", "orjson", "httptools")
SETUP = "python -m scripts.bench.peers.mlserver_peer setup"
TOLERANCE = 1e-5  # MLServer's scores vs the service's, for the same request
RUNTIME = "scripts.bench.peers.mlserver_runtime.BundleRuntime"
_CHECK = """import json
from importlib import metadata
import mlserver, features, service.runtime
packages = ("mlserver", "uvloop", "onnxruntime", "numpy", "orjson", "httptools")
print(json.dumps({p: metadata.version(p) for p in packages}))"""


def requirements() -> list[str]:
    """What `setup` installs: MLServer and uvloop pinned, the rest at this environment's versions."""
    return [*PINS, *(f"{p}=={metadata.version(p)}" for p in SAME_AS_HERE)]


def venv_python(venv: Path) -> Path:
    return Path(venv) / "bin" / "python"


def require_venv(venv: Path) -> Path:
    """MLServer's interpreter; FileNotFoundError naming the setup command when the environment is missing."""
    python = venv_python(venv)
    if not python.exists():
        setup = SETUP + ("" if Path(venv).resolve() == DEFAULT_VENV else f" --venv {venv}")
        raise FileNotFoundError(
            f"--mlserver needs MLServer's own virtual environment, and {venv} has none: create it with `{setup}`"
        )
    return python


def check(venv: Path) -> dict[str, str]:
    """The versions in the environment; RuntimeError when it cannot import MLServer and the encoder, or a pin is off."""
    run = subprocess.run(
        [str(require_venv(venv)), "-c", _CHECK], env=server_env(os.environ), cwd=REPO, capture_output=True, text=True
    )
    if run.returncode != 0:
        raise RuntimeError(f"{venv} cannot import MLServer and the service's encoder:\n{run.stderr[-2000:]}")
    versions = json.loads(run.stdout.strip().splitlines()[-1])
    wrong = [p for p in PINS if versions[p.split("==")[0]] != p.split("==")[1]]
    if wrong:
        raise RuntimeError(f"{venv} has {versions}, not {', '.join(wrong)}: run `{SETUP}` again")
    return versions


def setup(venv: Path) -> dict[str, str]:
    """Create (or update) the environment with pip from the package index, then check it."""
    venvs.make(venv, requirements())
    return check(venv)


# ---------------------------------------------------------------- the model repository and the server


def model_settings(bundle: Path, name: str, version: str) -> dict:
    """model-settings.json: the bundle under the service's model name, so the same v2 requests reach both."""
    return {
        "name": name,
        "implementation": RUNTIME,
        "parameters": {"uri": str(Path(bundle).resolve()), "version": version},
        "max_batch_size": 0,  # adaptive batching off (the service's micro-batching is off too)
        "max_batch_time": 0.0,
    }


def server_settings(http_port: int, grpc_port: int, metrics_port: int) -> dict:
    """settings.json: one process on the loopback, parallel workers off, debug off, metrics on."""
    return {
        "host": HOST,
        "http_port": http_port,
        "grpc_port": grpc_port,
        "metrics_port": metrics_port,
        "parallel_workers": 0,
        "debug": False,
        "load_models_at_startup": True,
    }


def write_repository(folder: Path, bundle: Path, name: str, version: str) -> Path:
    """folder/<name>/model-settings.json (settings.json comes with the ports, in `command`)."""
    model_dir = Path(folder) / name
    model_dir.mkdir(parents=True, exist_ok=True)
    (model_dir / "model-settings.json").write_text(json.dumps(model_settings(bundle, name, version), indent=2))
    return Path(folder)


def command(venv: Path, folder: Path, port: int) -> list[str]:
    """For Servers.start: writes folder/settings.json for HTTP `port` (gRPC, metrics: other free ports)."""
    settings = server_settings(port, free_port(), free_port())
    (Path(folder) / "settings.json").write_text(json.dumps(settings, indent=2))
    return [str(Path(venv) / "bin" / "mlserver"), "start", str(Path(folder).resolve())]


def server_env(base) -> dict[str, str]:
    """MLServer's environment: `base` (with the APG_* thread settings) and the repository root on PYTHONPATH."""
    env = {k: v for k, v in base.items() if not k.startswith("MLSERVER")}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), *filter(None, [base.get("PYTHONPATH")])])
    env.pop("VIRTUAL_ENV", None)
    return env


def start(servers: Servers, venv: Path, folder: Path, bundle, env: dict[str, str]) -> dict:
    """Start MLServer (Servers.start, as "mlserver") serving `bundle` (service.bundle.Bundle) under its own name from
    the model repository `folder`; what it runs with, for bench.json."""
    versions = check(venv)
    write_repository(folder, bundle.path, bundle.name, bundle.version)
    servers.start("mlserver", partial(command, venv, folder), server_env(env), ready="/v2/health/ready", cwd=folder)
    settings = json.loads((folder / "settings.json").read_text())
    return {
        "venv": str(venv),
        "versions": versions,
        "settings": {k: v for k, v in settings.items() if not k.endswith("_port")},
        "model_settings": model_settings(bundle.path, bundle.name, bundle.version),
    }


def compare_scores(service_port: int, mlserver_port: int, requests: dict[int, bytes]) -> dict[int, float]:
    """{batch: largest score difference} for one v2 JSON request per batch size sent to both; RuntimeError beyond
    TOLERANCE (then they do not compute the same thing, and their speeds say nothing)."""
    out = {}
    for b, raw in requests.items():
        ours, theirs = _v2_scores(service_port, raw), _v2_scores(mlserver_port, raw)
        diff = float(np.max(np.abs(ours - theirs))) if ours.shape == theirs.shape else float("inf")
        if not diff <= TOLERANCE:
            raise RuntimeError(f"MLServer's scores differ from the service's at batch {b} by {diff:.3g}")
        out[b] = diff
    return out


def _v2_scores(port: int, raw: bytes) -> np.ndarray:
    with Connection(port) as conn:
        status, _, body = conn.request(raw)
    if status != 200:
        raise RuntimeError(f"port {port}: HTTP {status}: {body[:300]!r}")
    return json_scores(body)


# ---------------------------------------------------------------- command line


def main(argv: list[str] | None = None) -> int:
    return venvs.command(argv, "python -m scripts.bench.peers.mlserver_peer", __doc__, DEFAULT_VENV, setup, check)


if __name__ == "__main__":
    sys.exit(main())
