"""Run the service under uvicorn: what `apg serve` and `python -m service` call.

    serve("bundles/default", host="0.0.0.0", port=8000, workers=4)

Each worker is a separate process with its own onnxruntime session (created in its lifespan, after the
fork/spawn). With several workers the Prometheus samples of all of them go to one PROMETHEUS_MULTIPROC_DIR:
a fresh temporary directory unless the variable is already set, removed again on exit; the supervisor
(service/workers.py) passes SIGHUP on to every worker, each reloading in place, and a POST /admin/reload in one
worker reaches the others through it too (service/fanout.py). SIGTERM/SIGINT shut down gracefully (in-flight
requests finish, readiness turns off, the batcher stops) and `serve` returns.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import socket
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from features import ContractError
from service.connections import raise_open_files_limit
from service.errors import ConfigError
from service.experiment import Experiment
from service.fanout import ANNOUNCEMENT, SUPERVISOR
from service.items import open_store
from service.observe import configure_logging
from service.runtime import Model, load_model, load_repository, resolve_providers
from service.settings import Settings

log = logging.getLogger("apg.server")


def serve(
    bundle: str | None,
    host: str = "127.0.0.1",
    port: int = 8000,
    workers: int = 1,
    log_level: str | None = None,
    grpc_port: int | None = None,
    models: dict[str, str] | None = None,
) -> None:
    """Serve `bundle` (default: APG_BUNDLE) until SIGINT/SIGTERM; raises BundleError before starting if unusable.
    `grpc_port` (default: APG_GRPC_PORT, else none) also serves KServe v2 over gRPC, bound to `host`. `models`: the
    repository and item store settings given on the command line ({"models": DIR, "default_model", "experiment",
    "shadow", "item_store"}), as the APG_* variables of the same names."""
    import uvicorn

    if bundle is not None:
        os.environ["APG_BUNDLE"] = str(Path(bundle).resolve())
    if grpc_port is not None:
        os.environ["APG_GRPC_PORT"], os.environ["APG_GRPC_HOST"] = str(grpc_port), host
    if log_level is not None:
        os.environ["APG_LOG_LEVEL"] = log_level
    for key, value in (models or {}).items():
        if value is not None:
            os.environ[f"APG_{key.upper()}"] = str(Path(value).resolve()) if key == "models" else value
    settings = read_settings()  # validates every APG_* variable once, before any worker starts
    configure_logging(settings.log_level)  # the check's warnings (a graph fallback) as the workers write them
    served = check_bundle(settings)  # fail fast with the bundle's own message, not from inside a worker
    check_item_stores(settings, served)
    check_grpc_port(settings, workers)
    log.info("open-file limit: %s descriptors", raise_open_files_limit())  # the workers inherit it
    with _multiprocess_dir(workers), _stop_on_signals():
        if workers <= 1:
            uvicorn.run("service.app:create_app", factory=True, host=host, port=port, **uvicorn_options(settings))
            return
        from service.workers import Workers  # uvicorn's supervisor, with reloads reaching every worker in place

        config = uvicorn.Config(
            "service.app:create_app", factory=True, host=host, port=port, workers=workers, **uvicorn_options(settings)
        )
        os.environ[SUPERVISOR] = str(os.getpid())  # the workers announce a reload to it (service/fanout.py)
        try:
            Workers(config, sockets=[config.bind_socket()]).run()  # what uvicorn.run does for workers > 1
        finally:
            os.environ.pop(SUPERVISOR, None)


def read_settings() -> Settings:
    """Settings() from the APG_* variables; ConfigError, one line naming each variable that is wrong, otherwise."""
    try:
        return Settings()
    except ValidationError as exc:
        problems = []
        for e in exc.errors():
            error = (e.get("ctx") or {}).get("error")
            variable = "APG_" + "_".join(map(str, e["loc"])).upper()
            problems.append(str(error) if str(error).startswith(variable) else f"{variable}: {error or e['msg']}")
        raise ConfigError("; ".join(problems)) from None


def uvicorn_options(settings: Settings) -> dict[str, Any]:
    """The uvicorn.Config options of the service (serve's, and the live tests')."""
    from service.protocol import bounded_http  # imports uvicorn, as serve does: only when serving

    return {
        "loop": "auto",  # uvloop when installed
        "http": bounded_http(settings),  # httptools with bounded request heads (service/protocol.py)
        "h11_max_incomplete_event_size": settings.max_header_bytes,  # in case uvicorn runs h11
        "log_level": settings.log_level,
        "access_log": False,  # the app writes its own JSON access log
        "timeout_graceful_shutdown": 30,
    }


def check_bundle(settings: Settings) -> dict[str, Model]:
    """BundleError/ConfigError unless the configured bundle would serve: its files and checksums, the providers asked
    for, and its graph opened, checked against the manifest and warmed up on the CPU (a device context in this
    process would stay for its lifetime; CUDA-only failures still surface in the worker). The models that will be
    served, by name."""
    resolve_providers(settings.providers)
    cpu = settings.model_copy(update={"providers": "cpu"})
    features: dict[str, tuple[str, ...]] = {}
    models: dict[str, Model] = {}
    if settings.models is None:
        model = load_model(settings.bundle, cpu)
        served, features[model.name], models[model.name] = {model.name}, tuple(model.encoder.features), model
    else:  # a repository: every bundle checked; the broken ones are logged and left out, as the workers will
        models, _, _ = load_repository(cpu)
        served = set(models)
        features = {name: tuple(m.encoder.features) for name, m in models.items()}
    if settings.experiment is not None:
        Experiment.parse(settings.experiment).check(served, features)
    if missing := [name for name in settings.shadow if name not in served]:
        raise ConfigError(f"APG_SHADOW names models that are not served: {missing}; served: {sorted(served)}")
    return models


def check_item_stores(settings: Settings, models: dict[str, Model]) -> None:
    """ConfigError, one line naming the `apg items sync` to run (or why the store cannot be read), unless the item
    store of every served model (APG_ITEM_STORE) holds published rows for that model's contract checksum."""
    for name, model in models.items():
        url = settings.item_store_url(name)
        if url is None:
            continue
        try:
            store = open_store(
                url, model.contract, bundle=str(model.bundle.path), timeout_s=max(1.0, settings.item_store_timeout_s)
            )
        except ContractError as exc:
            raise ConfigError(f"model {name}: {exc.message}") from None
        log.info("model %s: item store %s", name, store.describe())
        store.close()


def check_grpc_port(settings: Settings, workers: int) -> None:
    """ConfigError unless the gRPC port can be bound here. The workers share it with SO_REUSEPORT (service/grpc), which
    would also let them share it silently with another server already there: so it must be free before they start."""
    if settings.grpc_port is None:
        return
    if settings.grpc_port == 0 and workers > 1:
        raise ConfigError(f"--workers {workers} cannot share APG_GRPC_PORT=0 (any free port): give a port")
    with socket.socket(socket.AF_INET6 if ":" in settings.grpc_host else socket.AF_INET) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TIME_WAIT leftovers are no obstacle
        try:
            probe.bind((settings.grpc_host, settings.grpc_port))
        except OSError as exc:
            address = f"{settings.grpc_host}:{settings.grpc_port}"
            raise ConfigError(f"cannot bind gRPC to {address} (APG_GRPC_PORT): {exc.strerror}") from None


class _Stopped(Exception):
    pass


def _raise_stopped(signum: int, frame: object) -> None:
    raise _Stopped(signum)


@contextlib.contextmanager
def _stop_on_signals() -> Iterator[None]:
    """Return normally after a SIGINT/SIGTERM shutdown.

    uvicorn shuts down gracefully, restores the previous handlers and re-raises the signal; with the default
    handlers the process would die right there, skipping our clean-up (and exiting 143 / printing a
    KeyboardInterrupt). These handlers turn that re-raise into a plain return.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.signal(sig, _raise_stopped) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    except _Stopped:
        pass
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@contextlib.contextmanager
def _multiprocess_dir(workers: int) -> Iterator[None]:
    """PROMETHEUS_MULTIPROC_DIR for several workers: a user's directory is emptied, ours is created and removed."""
    if workers <= 1:
        yield
        return
    given = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if given:
        Path(given).mkdir(parents=True, exist_ok=True)
        for stale in Path(given).glob("*.db"):  # samples of an earlier run would be summed in
            stale.unlink()
        (Path(given) / ANNOUNCEMENT).unlink(missing_ok=True)  # and its last reload followed
        yield
        return
    path = tempfile.mkdtemp(prefix="apg-prometheus-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = path
    try:
        yield
    finally:
        os.environ.pop("PROMETHEUS_MULTIPROC_DIR", None)
        shutil.rmtree(path, ignore_errors=True)
