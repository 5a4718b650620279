"""The application factory.

    app = create_app(Settings(bundle="bundles/default"))   # or create_app() to read APG_* variables
    uvicorn.run("service.app:create_app", factory=True)     # what service.server.serve does

Nothing happens at import. create_app wires the objects into one typed Services (service/services.py, on
app.state.services; routes read it through service/http.py `state`); the lifespan does the work: load + validate +
warm the bundle (readiness turns on), open the item stores (APG_ITEM_STORE), start the micro-batcher, and on shutdown
turn readiness off, drain in-flight inferences, stop the batcher and close the stores. SIGHUP reloads the served
bundle in place; under `apg serve --workers N`, FOLLOW reloads what another worker announced (service/fanout.py).
SIGTERM first turns readiness off while requests are still served (APG_DRAIN_GRACE_S), then lets
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
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from fastapi_offline import FastAPIOffline
from prometheus_client import CollectorRegistry

from service import grpc as grpc_api
from service.admission import Admission, BodyBudget
from service.auth import document_security
from service.batching import MicroBatcher
from service.connections import CONNECTIONS, ConnectionGuard
from service.errors import install_error_handlers
from service.experiment import Experiment
from service.fanout import ReloadFanout, stop_handling
from service.feedback import FeedbackConfig, FeedbackStore
from service.feedback.keeper import StoreKeeper
from service.feedback.prometheus import FeedbackMetrics, WindowCollector
from service.items.serving import ItemStores
from service.metrics import Metrics
from service.middleware import RequestMiddleware
from service.observe import configure_logging
from service.prometheus import mark_dead
from service.routes import feedback, health, score, v2
from service.runtime import Runtime
from service.scorer import Scorer
from service.services import Services
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
    services = build_services(settings, Metrics(registry))
    otel = settings.otel
    app = FastAPIOffline(  # a FastAPI whose /docs and /redoc load their assets from here, not a CDN (work offline)
        title="APG CTR scoring",
        version="1",
        description=DESCRIPTION,
        lifespan=_lifespan,
        telemetry={"tracing": otel, "metrics": otel, "logs": otel},
    )
    app.state.services = services  # routes read it through service/http.py `state` (besides: grpc_port, once bound)
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
    app.add_middleware(RequestMiddleware, services=services)
    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]
    return app


def build_services(settings: Settings, metrics: Metrics) -> Services:
    """Every object of the app, wired; nothing started (the lifespan does that)."""
    runtime = Runtime(settings, metrics)
    batcher = None
    if settings.batching:
        batcher = MicroBatcher(runtime, settings.batch_max_rows, settings.batch_max_delay_ms / 1000)
    shadow = Shadow(runtime, metrics, settings.shadow, settings.shadow_queue) if settings.shadow else None
    items = ItemStores(settings, metrics, runtime) if settings.item_store else None  # ranking by id (service/items)
    services = Services(
        settings=settings,
        metrics=metrics,
        runtime=runtime,
        scorer=Scorer(runtime, metrics, settings.max_rows, batcher, shadow, items),
        admission=Admission(settings),
        feedback_admission=Admission.feedback(settings),
        bodies=BodyBudget(settings),
        connections=ConnectionGuard(settings, metrics),
        batcher=batcher,
        fanout=ReloadFanout.of(runtime),  # None unless `apg serve --workers N` started this worker
        experiment=Experiment.parse(settings.experiment) if settings.experiment else None,
        shadow=shadow,
        items=items,
    )
    url = settings.feedback_url()
    if url is not None:  # the click store (service/feedback/): opened in the lifespan, or later (keeper.py)
        services.feedback_config = FeedbackConfig(
            url,
            max_age_s=settings.feedback_max_age_s,
            join_window_s=min(settings.feedback_join_window_s, settings.feedback_max_age_s),
            max_rows=settings.feedback_max_rows,
            request_timeout_s=settings.feedback_timeout_s,
        )
        services.feedback_metrics = FeedbackMetrics(metrics.registry)
        services.feedback_keeper = StoreKeeper(services.feedback_config, services.feedback_metrics, settings)
    return services


@contextlib.asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[dict[str, Any]]:
    services: Services = app.state.services
    runtime = services.runtime
    await runtime.start()  # raises (and uvicorn exits) when the configured bundle is unusable
    if services.experiment is not None:
        features = {name: tuple(m.encoder.features) for name, m in runtime.models.items()}
        services.experiment.check(set(runtime.models) | set(runtime.failed), features)  # a failed arm: 404, no crash
    if services.items is not None:  # in each worker: a file snapshot mapped by each, read-only
        await services.items.start()
    if services.shadow is not None:
        services.shadow.start()
    if services.feedback_keeper is not None:  # a store that cannot open: scoring serves, the keeper retries
        await services.feedback_keeper.start(lambda store: _feedback_opened(services, store))
    if services.batcher is not None:
        services.batcher.start()
    hangup = _on_sighup(runtime)
    if services.fanout is not None:  # before readiness: the supervisor passes FOLLOW on to a worker that serves
        services.fanout.start()
    uvicorn_sigterm = _on_sigterm(runtime, services.settings.drain_grace_s, lambda: _write_feedback_soon(services))
    grpc_server, app.state.grpc_port = await grpc_api.start(services) or (None, None)  # APG_GRPC_PORT (KServe v2)
    try:
        yield {CONNECTIONS: services.connections}  # lifespan state: uvicorn hands it to each connection's protocol
    finally:
        await grpc_api.stop(grpc_server)  # first: its in-flight calls still need the batcher and the runtime
        if services.fanout is not None:
            services.fanout.stop()
        if hangup:  # ignored from now on: the supervisor may still pass one on while this worker stops
            stop_handling(signal.SIGHUP)
        if uvicorn_sigterm is not None:
            signal.signal(signal.SIGTERM, uvicorn_sigterm)
        if services.batcher is not None:  # first: its running batches still need the runtime's thread pool
            await services.batcher.stop()
        if services.shadow is not None:
            await services.shadow.stop()
        if services.feedback_keeper is not None:  # after the last answer: its rows are written, then it closes
            await services.feedback_keeper.stop()
        await runtime.drain()
        if services.items is not None:
            await services.items.stop()
        mark_dead(os.getpid())  # several workers: this one's live gauges drop out of the aggregate


def _feedback_opened(services: Services, store: FeedbackStore) -> None:
    """The click store is open (at start, or later in the background): /score records, /metrics shows its window."""
    services.metrics.add_shared(WindowCollector(store, services.settings.online_window_s))
    services.feedback = store


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


def _write_feedback_soon(services: Services) -> None:
    if services.feedback is not None:  # SIGTERM: the click store's buffer goes out now, not in up to 50 ms
        services.feedback.write_soon()


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
    services: Services = app.state.services
    runtime = services.runtime
    model = runtime.model
    key = tuple((m.name, m.version) for m in runtime.models.values()) if model is not None else None
    if app.openapi_schema is not None and services.openapi_key == key:
        return app.openapi_schema
    schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
    document_security(schema, app.routes, services.settings.token() is not None)
    if model is not None:
        models = list(runtime.models.values())
        names, by_id = [m.name for m in models], services.items is not None
        body = score.request_body_doc(model.encoder, services.settings.max_rows, names, by_id)
        schema["paths"]["/score"]["post"]["requestBody"] = body
        v2.document_model(schema, model, models)
    app.openapi_schema, services.openapi_key = schema, key
    return schema
