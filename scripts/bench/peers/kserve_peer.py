"""KServe 0.21.0's Python `ModelServer` as a peer of the bench (scripts/bench/peers/command.py): its own virtual
environment, and the command that serves a bundle with scripts/bench/peers/kserve_model.py. A benchmark only, never
CI.

    python -m scripts.bench.peers.kserve_peer setup     # creates .venv-kserve/ (kserve 0.21.0, ...)
    python -m scripts.bench.peers.kserve_peer check     # its versions, and that it imports the service's encoder

onnxruntime, numpy and orjson are pinned to this environment's versions (the same kernels and JSON library as the
service), and pydantic-settings to ours (the model loads the bundle with the service's own loader). How it is
served: one process (`--workers 1`), HTTP (ModelServer binds every interface; only 127.0.0.1 is sent to), gRPC off,
no log line per request (the per-model latency log off, uvicorn's access log and the timing middleware's
kserve.trace lines turned down to warnings, as MLServer's access log is off in its peer; the middleware itself
stays in the path), the model's v2 REST route; everything else is ModelServer's default.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from functools import partial
from importlib import metadata
from pathlib import Path

from scripts import venvs
from scripts.clients.launch import REPO, Servers

DEFAULT_VENV = REPO / ".venv-kserve"
PINS = ("kserve==0.21.0",)
SAME_AS_HERE = ("onnxruntime", "numpy", "orjson", "pydantic-settings")
SETUP = "python -m scripts.bench.peers.kserve_peer setup"
_CHECK = """import json
from importlib import metadata
import kserve, features, service.runtime
packages = ("kserve", "fastapi", "uvicorn", "onnxruntime", "numpy", "orjson")
print(json.dumps({p: metadata.version(p) for p in packages}))"""


def requirements() -> list[str]:
    return [*PINS, *(f"{p}=={metadata.version(p)}" for p in SAME_AS_HERE)]


def require_venv(venv: Path) -> Path:
    python = Path(venv) / "bin" / "python"
    if not python.exists():
        raise FileNotFoundError(f"the KServe peer needs its own virtual environment, and {venv} has none: `{SETUP}`")
    return python


def server_env(base) -> dict[str, str]:
    """KServe's environment: `base` with the repository root on PYTHONPATH (the model imports the service's loader)."""
    env = {k: v for k, v in base.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    env["PYTHONPATH"] = str(REPO)
    return env


def check(venv: Path) -> dict[str, str]:
    run = subprocess.run(
        [str(require_venv(venv)), "-c", _CHECK], env=server_env(os.environ), cwd=REPO, capture_output=True, text=True
    )
    if run.returncode != 0:
        raise RuntimeError(f"{venv} cannot import KServe and the service's encoder:\n{run.stderr[-2000:]}")
    versions = json.loads(run.stdout.strip().splitlines()[-1])
    if versions["kserve"] != PINS[0].split("==")[1]:
        raise RuntimeError(f"{venv} has kserve {versions['kserve']}: run `{SETUP}` again")
    return versions


def setup(venv: Path) -> dict[str, str]:
    venvs.make(venv, requirements())
    return check(venv)


def command(venv: Path, bundle: Path, name: str, port: int) -> list[str]:
    python = str(require_venv(venv))
    args = ["-m", "scripts.bench.peers.kserve_model", "--bundle", str(Path(bundle).resolve()), "--model_name", name]
    args += ["--http_port", str(port), "--workers", "1", "--enable_grpc", "false", "--enable_latency_logging", "false"]
    return [python, *args]


def start(servers: Servers, venv: Path, bundle: Path, name: str, env: dict[str, str]) -> dict:
    """Start it (as "kserve", ready at /v2/health/ready); its versions and settings, for the report."""
    versions = check(venv)
    servers.start("kserve", partial(command, venv, bundle, name), server_env(env), ready=f"/v2/models/{name}/ready")
    return {"venv": str(venv), "versions": versions, "settings": {"workers": 1, "grpc": False, "request_logs": False}}


def main(argv: list[str] | None = None) -> int:
    return venvs.command(argv, "python -m scripts.bench.peers.kserve_peer", __doc__, DEFAULT_VENV, setup, check)


if __name__ == "__main__":
    sys.exit(main())
