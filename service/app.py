"""The application factory.

    app = create_app(Settings(bundle="bundles/default"))   # or create_app() to read APG_* variables
    uvicorn.run("service.app:create_app", factory=True)     # what service.server.serve does

Nothing happens at import. create_app wires the objects; the lifespan does the work: load + validate +
warm the bundle (readiness turns on), open the item stores (APG_ITEM_STORE), start the micro-batcher, and on shutdown
turn readiness off, drain in-flight inferences, stop the batcher and close the stores. SIGHUP reloads the served
bundle in place. SIGTERM first turns readiness off while requests are still served (APG_DRAIN_GRACE_S), then lets
uvicorn shut down.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from fastapi_offline import FastAPIOffline
from prometheus_client import CollectorRegistry

from service import grpc as grpc_api
from service.admission import Admission, BodyBudget
from service.batching import MicroBatcher
from service.connections import CONNECTIONS, ConnectionGuard
from service.errors import install_error_handlers
from service.experiment import Experiment
from service.fanout import ANNOUNCEMENT, ReloadFanout
from service.feedback import FeedbackConfig, FeedbackStore
from service.feedback.keeper import StoreKeeper
from service.feedback.prometheus import FeedbackMetrics, WindowCollector
from service.items.serving import ItemStores
from service.metrics import Metrics, multiprocess_dir
from service.middleware import RequestMiddleware, configure_logging
from service.routes import feedback, health, score, v2
from service.routes.common import document_security
from service.runtime import Runtime
from service.scorer import Scorer
from service.settings import Settings
from service.shadow import Shadow

log = logging.getLogger("apg.app")

DESCRIPTION = """Click-through-rate scoring with an APG (Adaptive Parameter Generation) model on onnxruntime.

`POST /score` takes raw feature values (rows, columns, or one context against candidates) and returns one
click probability per row. The KServe v2 routes under `/v2` speak the Open Inference Protocol
(`tritonclient.http` works unchanged). Errors are JSON: `{"error": {"code", "message", "field", "row"}}`; under
`/v2`, as the protocol wants, `{"error": "<message>", "code", "field", "row"}`. The bearer token is declared on the
scoring routes when the server has one (APG_AUTH_TOKEN); `/admin` always needs APG_ADMIN_TOKEN.
"""


def create_app(settings: Settings | None = None, registry: CollectorRegistry | None = None) -> FastAPI:
    """Build the app. `settings` default to the APG_* environment; `registry` to a fresh one."""
    settings = settings or Settings()
    configure_logging(settings.log_level)
    metrics = Metrics(registry)
    runtime = Runtime(settings, metrics)
    batcher = None
    if settings.batching:
        batcher = MicroBatcher(runtime, settings.batch_max_rows, settings.batch_max_delay_ms / 1000)

    otel = settings.otel
    app = FastAPIOffline(  # a FastAPI whose /docs and /redoc load their assets from here, not a CDN (work offline)
        title="APG CTR scoring",
        version="1",
        description=DESCRIPTION,
        lifespan=_lifespan,
        telemetry={"tracing": otel, "metrics": otel, "logs": otel},
    )
    app.state.settings = settings
    app.state.metrics = metrics
    app.state.runtime = runtime
    app.state.admission = Admission(settings)  # scoring's back-pressure rule (service/admission.py)
    app.state.feedback_admission = Admission.feedback(settings)  # POST /feedback's own places
    app.state.bodies = BodyBudget(settings)  # request-body bytes in transit (APG_MAX_INFLIGHT_BODY_BYTES)
    app.state.connections = ConnectionGuard(settings, metrics)  # connection deadline and cap (connections.py)
    app.state.batcher = batcher
    shared = multiprocess_dir()  # several workers: a reload in one reaches them all (service/fanout.py)
    app.state.fanout = ReloadFanout(Path(shared) / ANNOUNCEMENT, runtime) if shared else None
    app.state.experiment = Experiment.parse(settings.experiment) if settings.experiment else None
    shadow = Shadow(runtime, metrics, settings.shadow, settings.shadow_queue) if settings.shadow else None
    app.state.shadow = shadow
    app.state.feedback = None  # the click store (service/feedback/), opened in the lifespan (or later: keeper.py)
    url = settings.feedback_url()
    app.state.feedback_config = app.state.feedback_keeper = None
    if url is not None:
        app.state.feedback_config = FeedbackConfig(
            url,
            max_age_s=settings.feedback_max_age_s,
            join_window_s=min(settings.feedback_join_window_s, settings.feedback_max_age_s),
            max_rows=settings.feedback_max_rows,
            request_timeout_s=settings.feedback_timeout_s,
        )
        app.state.feedback_metrics = FeedbackMetrics(metrics.registry)
        app.state.feedback_keeper = StoreKeeper(app.state.feedback_config, app.state.feedback_metrics, settings)
    items = ItemStores(settings, metrics, runtime) if settings.item_store else None  # ranking by id (service/items)
    app.state.items = items
    app.state.scorer = Scorer(runtime, metrics, settings.max_rows, batcher, shadow, items)
    # The routers' routes go straight into the app's route list, the scoring (LeanRoute) routes first, so they are
    # matched first. include_router would wrap each LeanRoute again in FastAPI's per-request handler (+34 µs a
    # request) and would add its `dependencies=` to routes that never run them (docs/OPTIMISATIONS.md, section 8).
    app.router.routes[:0] = [
        *score.router.routes,
        *v2.scoring.routes,
        *v2.router.routes,
        *feedback.router.routes,
        *health.router.routes,
    ]
    install_error_handlers(app)
    app.add_middleware(
        RequestMiddleware, metrics=metrics, admission=app.state.admission, feedback=app.state.feedback_admission
    )
    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]
    return app


@contextlib.asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[dict[str, Any]]:
    runtime: Runtime = app.state.runtime
    await runtime.start()  # raises (and uvicorn exits) when the configured bundle is unusable
    if app.state.experiment is not None:
        features = {name: tuple(m.encoder.features) for name, m in runtime.models.items()}
        app.state.experiment.check(set(runtime.models) | set(runtime.failed), features)  # a failed arm: 404, no crash
    if app.state.items is not None:  # in each worker: a file snapshot mapped by each, read-only
        await app.state.items.start()
    if app.state.shadow is not None:
        app.state.shadow.start()
    if app.state.feedback_keeper is not None:  # a store that cannot open: scoring serves, the keeper retries
        await app.state.feedback_keeper.start(lambda store: _feedback_opened(app, store))
    if app.state.batcher is not None:
        app.state.batcher.start()
    hangup = _on_sighup(runtime)
    follow = asyncio.create_task(app.state.fanout.follow()) if app.state.fanout is not None else None
    uvicorn_sigterm = _on_sigterm(runtime, app.state.settings.drain_grace_s, lambda: _write_feedback_soon(app))
    grpc_server = await grpc_api.start(app.state)  # None unless APG_GRPC_PORT (KServe v2 over gRPC)
    try:
        yield {CONNECTIONS: app.state.connections}  # lifespan state: uvicorn hands it to each connection's protocol
    finally:
        await grpc_api.stop(grpc_server)  # first: its in-flight calls still need the batcher and the runtime
        if follow is not None:
            follow.cancel()
        if hangup:
            asyncio.get_running_loop().remove_signal_handler(signal.SIGHUP)
        if uvicorn_sigterm is not None:
            signal.signal(signal.SIGTERM, uvicorn_sigterm)
        if app.state.batcher is not None:  # first: its running batches still need the runtime's thread pool
            await app.state.batcher.stop()
        if app.state.shadow is not None:
            await app.state.shadow.stop()
        if app.state.feedback_keeper is not None:  # after the last answer: its rows are written, then it closes
            await app.state.feedback_keeper.stop()
        await runtime.drain()
        if app.state.items is not None:
            await app.state.items.stop()
        if multiprocess_dir():  # drop this worker's live gauges from the aggregate
            from prometheus_client import multiprocess

            multiprocess.mark_process_dead(os.getpid())


def _feedback_opened(app: FastAPI, store: FeedbackStore) -> None:
    """The click store is open (at start, or later in the background): /score records, /metrics shows its window."""
    app.state.metrics.add_shared(WindowCollector(store, app.state.settings.online_window_s))
    app.state.feedback = store


def _on_sighup(runtime: Runtime) -> bool:
    """SIGHUP → reload the bundle being served (after a POST /admin/reload, that one, not the configured one).
    Only possible on the main thread's loop (not in tests' threads)."""
    loop = asyncio.get_running_loop()

    def reload() -> None:
        if runtime.repository:  # every model from the bundle it serves (a failed one from its directory), in turn
            log.info("SIGHUP: reloading every model of %s", runtime.settings.models)
            served = {name: m.bundle.path for name, m in runtime.models.items()}
            tasks = [
                loop.create_task(runtime.reload(served.get(name), name)) for name in sorted({*served, *runtime.failed})
            ]
        else:
            served = runtime.model.bundle.path if runtime.model is not None else runtime.settings.bundle
            log.info("SIGHUP: reloading %s, the bundle being served", served)
            tasks = [loop.create_task(runtime.reload(served))]
        for task in tasks:
            task.add_done_callback(lambda t: t.cancelled() or t.exception())  # logged by reload(); keep it quiet

    try:
        loop.add_signal_handler(signal.SIGHUP, reload)
    except (ValueError, RuntimeError, NotImplementedError, AttributeError):
        return False
    return True


def _write_feedback_soon(app: FastAPI) -> None:
    if app.state.feedback is not None:  # SIGTERM: the click store's buffer goes out now, not in up to 50 ms
        app.state.feedback.write_soon()


def _on_sigterm(runtime: Runtime, grace_s: float, on_sigterm_too: Any = None) -> Any:
    """SIGTERM → readiness off at once (503, so load balancers stop sending), requests still served for `grace_s`,
    then the server's own graceful shutdown: the handler found (uvicorn's), called as if the signal came then.
    A second SIGTERM goes straight to it. Returns that handler to put back, or None when nothing was installed
    (no grace, not the main thread, or no server handler to defer to)."""
    previous = signal.getsignal(signal.SIGTERM)
    if grace_s <= 0 or threading.current_thread() is not threading.main_thread() or not callable(previous):
        return None
    loop = asyncio.get_running_loop()

    def shut_down_later() -> None:
        log.info("SIGTERM: readiness off, shutting down in %g s (APG_DRAIN_GRACE_S)", grace_s)
        if on_sigterm_too is not None:
            on_sigterm_too()
        loop.call_later(grace_s, previous, signal.SIGTERM, None)

    def on_sigterm(signum: int, frame: Any) -> None:
        if runtime.draining:
            previous(signum, frame)
            return
        runtime.draining = True
        loop.call_soon_threadsafe(shut_down_later)  # signal handlers run between bytecodes: hand over to the loop

    signal.signal(signal.SIGTERM, on_sigterm)
    return previous


def _openapi(app: FastAPI) -> dict[str, Any]:
    """FastAPI's schema, with /score's request body generated from the served model (cached per version)."""
    model = app.state.runtime.model
    key = tuple((m.name, m.version) for m in app.state.runtime.models.values()) if model is not None else None
    if app.openapi_schema is not None and getattr(app.state, "openapi_key", "") == key:
        return app.openapi_schema
    schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
    document_security(schema, app.routes, app.state.settings.token() is not None)
    if model is not None:
        models = list(app.state.runtime.models.values())
        names, by_id = [m.name for m in models], app.state.items is not None
        body = score.request_body_doc(model.encoder, app.state.settings.max_rows, names, by_id)
        schema["paths"]["/score"]["post"]["requestBody"] = body
        v2.document_model(schema, model, models)
    app.openapi_schema, app.state.openapi_key = schema, key
    return schema
