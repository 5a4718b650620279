"""The onnxruntime side: the served models, execution providers, warm-up, bounded inference, hot reload.

    runtime = Runtime(settings, metrics)
    await runtime.start()                          # load + validate + warm APG_BUNDLE, or every bundle in APG_MODELS
    model = runtime.current                        # the default model; runtime.get("deepfm") any served one
    out = await runtime.infer(model, feeds, rows)  # Inference(scores (B,) float32, queue_s, inference_s)
    await runtime.reload("bundles/v2")             # load beside the old one, warm, then swap the reference
    await runtime.reload(name="deepfm")            # a repository's model, from its directory

One reference per request: a reload never changes the model a request started with. Sessions are created in the app
lifespan (after uvicorn forks workers), never at import. Several models share one thread pool and one set of
APG_MAX_CONCURRENCY slots; each session has its own intra-op pool of APG_INTRA_OP_THREADS - 1 threads (none with the
default 1), so by default a worker's threads do not grow with the number of models; its memory grows by one session
(graph + arena) per model.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort

from features import GRAPH
from service.bundle import Bundle, check_signature, load_bundle
from service.errors import BundleError, ConfigError, NotFound, NotReady, ServiceError, shown
from service.experiment import repository_entries
from service.metrics import Metrics
from service.settings import Settings

log = logging.getLogger("apg.runtime")

CPU, CUDA = "CPUExecutionProvider", "CUDAExecutionProvider"


@dataclass(frozen=True, eq=False)
class Model:
    """A loaded, validated and warmed bundle. Immutable: a reload builds a new one."""

    bundle: Bundle
    session: ort.InferenceSession
    provider: str  # the execution provider onnxruntime actually chose
    graph: Path
    entry: str | None = None  # its name in a model repository (APG_MODELS); None: the bundle's own name

    @property
    def name(self) -> str:
        return self.entry or self.bundle.name

    @property
    def version(self) -> str:
        return self.bundle.version

    @property
    def encoder(self):  # features.Encoder
        return self.bundle.encoder

    @functools.cached_property
    def contract(self) -> str:
        """The digest of its feature schema: two models with the same one read the same encoded tensors."""
        return self.encoder.schema.digest()

    @functools.cached_property
    def vocabulary_inputs(self) -> tuple[str, ...]:
        """The inputs looked up in a vocabulary (categorical, multi, not hashed): where index OOV means out of
        vocabulary (a hashed field has no OOV index)."""
        return tuple(f.name for f in self.encoder.fields if f.kind != "numeric" and not f.hashed)

    @functools.cached_property
    def text_features(self) -> frozenset[str]:
        """The raw features read as text: a KServe v2 client sends them as BYTES tensors (service/tensors.py)."""
        return frozenset(name for name, f in self.encoder.describe().items() if not f.numeric)

    def run(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        """Blocking onnxruntime call: {input: int64 array} → scores (B,) float32."""
        (scores,) = self.session.run(["score"], feeds)
        return np.ascontiguousarray(scores, dtype=np.float32).reshape(-1)


@dataclass(frozen=True)
class Inference:
    scores: np.ndarray  # (B,) float32
    queue_s: float  # waiting for a slot (and, when batching, for the batch to close)
    inference_s: float  # the onnxruntime call


def resolve_providers(choice: str) -> list[str]:
    """cpu → CPU; cuda → CUDA (ConfigError when onnxruntime lacks it); auto → CUDA when offered, else CPU."""
    available = ort.get_available_providers()
    if choice == "cpu":
        return [CPU]
    if choice == "cuda" and CUDA not in available:
        raise ConfigError(f"APG_PROVIDERS=cuda, but this onnxruntime offers only {available} (install onnxruntime-gpu)")
    return [CUDA, CPU] if CUDA in available else [CPU]


def load_model(path: str | Path, settings: Settings, entry: str | None = None) -> Model:
    """Blocking: read + verify the bundle, open a session, check its signature, warm it up. BundleError if unusable.
    `entry`: the name it is served under in a model repository."""
    bundle = load_bundle(path)
    providers = resolve_providers(settings.providers)
    # model.opt.onnx was optimised for the CPU provider; a CUDA session gets the portable graph.
    graph = bundle.graph_path(optimised=providers == [CPU])
    try:
        session = _open(graph, providers, settings)
    except BundleError as exc:
        if graph.name == GRAPH:
            raise
        log.warning("%s; falling back to %s", exc.message, GRAPH)
        graph = bundle.graph_path(optimised=False)
        session = _open(graph, providers, settings)
    check_signature(bundle, session)
    model = Model(bundle, session, session.get_providers()[0], graph, entry)
    warm_up(model, settings.warmup_batch_sizes)
    return model


def provider_options(providers: list[str], settings: Settings) -> list:
    """onnxruntime's `providers` argument: CUDA with TF32 matrix products off unless APG_CUDA_TF32 (on an H200 TF32
    moved scores by up to 6.6e-4 from the CPU's; off they agree to 2e-7: docs/GPU.md)."""
    return [(CUDA, {"use_tf32": "1" if settings.cuda_tf32 else "0"}) if p == CUDA else p for p in providers]


def _open(graph: Path, providers: list[str], settings: Settings) -> ort.InferenceSession:
    try:
        return _session(graph, providers, settings)
    except Exception as exc:  # onnxruntime raises its own exception types for broken graphs
        raise BundleError(f"onnxruntime cannot load {graph}: {exc}") from None


def _session(graph: Path, providers: list[str], settings: Settings) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = settings.intra_op_threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3  # errors only
    return ort.InferenceSession(str(graph), sess_options=options, providers=provider_options(providers, settings))


def warm_up(model: Model, batch_sizes: list[int]) -> None:
    """Run real-looking rows at each batch size (allocations, kernels), then every field's index range
    (0, 1 and the largest index the schema can produce): a graph whose tables are smaller fails here, not
    on the first unlucky request. Wrong outputs are refused too."""
    batches = [model.encoder.encode_rows(model.encoder.example_rows(size)) for size in batch_sizes]
    for feeds in [*batches, _index_range_feeds(model.encoder)]:
        size = len(next(iter(feeds.values())))
        try:
            scores = model.run(feeds)
        except Exception as exc:
            raise BundleError(f"warm-up at batch {size} failed: {exc}") from None
        if scores.shape != (size,) or not np.isfinite(scores).all() or ((scores < 0) | (scores > 1)).any():
            raise BundleError(f"warm-up at batch {size}: 'score' must be {size} probabilities, got {scores[:5]}")


def _index_range_feeds(encoder) -> dict[str, np.ndarray]:
    # 3 rows per input: all missing (0), all out-of-vocabulary (1), the largest index (its table's last row)
    feeds = {}
    for f in encoder.fields:
        top = f.cardinality - 1
        column = np.array([0, 1, top], dtype=np.int64)
        feeds[f.name] = np.repeat(column[:, None], f.max_len, axis=1) if f.kind == "multi" else column
    return feeds


def load_repository(settings: Settings) -> tuple[dict[str, Model], dict[str, str], str]:
    """Every bundle of APG_MODELS loaded, for the start-up check (service/server.py) and the workers alike: the
    models by name, the reasons of those that failed (logged and left out: one bad bundle never keeps the others
    from serving) and the default model. BundleError when none loads; ConfigError when APG_DEFAULT_MODEL is not
    served."""
    models, failed = {}, {}
    for name, path in repository_entries(settings.models).items():
        try:
            models[name] = load_model(path, settings, name)
        except BundleError as exc:
            failed[name] = exc.message
            log.error("model %s not served: %s", name, exc.message)
    if not models:
        raise BundleError(f"no bundle in APG_MODELS {str(settings.models)!r} could be served: {failed}")
    default = settings.default_model or sorted(models)[0]
    if default not in models:
        why = failed.get(default, "no such model")
        raise ConfigError(f"APG_DEFAULT_MODEL {default!r} is not served ({why}); served: {sorted(models)}")
    return models, failed, default


class Runtime:
    """Holds the served models (one, or a repository's); runs at most max_concurrency inferences at once over all of
    them (the others wait for a slot; service/admission.py bounds how many requests there are)."""

    def __init__(self, settings: Settings, metrics: Metrics) -> None:
        self.settings = settings
        self.metrics = metrics
        self.models: dict[str, Model] = {}  # by served name; replaced whole on every change (readers never lock)
        self.default: str | None = None  # the model of requests that name none
        self.failed: dict[str, str] = {}  # repository entries that could not be loaded: name → why
        self.ready = False
        self.draining = False  # after SIGTERM: readiness probes say 503 while requests are still served
        self._calls = 0  # inference calls waiting for a slot or running (drain waits for them)
        # Created in start(): asyncio primitives belong to the serving loop, threads to the serving process.
        self._pool: ThreadPoolExecutor | None = None
        self._slots: asyncio.Semaphore | None = None
        self._reload_lock: asyncio.Lock | None = None

    @property
    def model(self) -> Model | None:
        """The default model (None before start)."""
        return self.models.get(self.default) if self.default is not None else None

    @model.setter
    def model(self, model: Model) -> None:
        self._install(model)

    @property
    def repository(self) -> bool:
        return self.settings.models is not None

    @property
    def current(self) -> Model:
        model = self.model
        if model is None or not self.ready:
            raise NotReady()
        return model

    def get(self, name: str | None, version: str | None = None) -> Model:
        """A served model by name (None: the default), and version when given; NotFound names the served ones."""
        if name is None:
            return self.current
        if not self.ready:
            raise NotReady()
        model = self.models.get(name)
        if model is None or (version is not None and version != model.version):
            wanted = shown(name) + (f" version {shown(version)}" if version is not None else "")
            served = ", ".join(f"{m.name!r} version {m.version!r}" for m in self.models.values())
            raise NotFound(f"unknown model {wanted}; serving {served}", field="model")
        return model

    def readiness(self, name: str | None = None) -> Model:
        """A model (default: the default one), for readiness probes: NotReady while loading, and also while draining
        (scoring goes on)."""
        if self.draining:
            raise NotReady("draining: this server is shutting down; send new requests elsewhere")
        return self.get(name)

    async def start(self) -> None:
        n = self.settings.max_concurrency
        self._pool = ThreadPoolExecutor(max_workers=n, thread_name_prefix="apg-infer")
        self._slots, self._reload_lock = asyncio.Semaphore(n), asyncio.Lock()
        if not self.repository:
            self._install(await asyncio.to_thread(load_model, self.settings.bundle, self.settings))
        else:
            models, self.failed, default = await asyncio.to_thread(load_repository, self.settings)
            for model in models.values():
                self._install(model)
            self.default = default
        self.ready = True

    async def infer(self, model: Model, feeds: dict[str, np.ndarray], rows: int) -> Inference:
        """Run `model` on feeds (small CPU calls inline, the others in the thread pool), at most max_concurrency
        at once. A call waits for a slot; it is never refused here."""
        t0 = time.perf_counter()
        self._calls += 1
        try:
            async with self._slots:
                t1 = time.perf_counter()
                if rows <= self.settings.inline_max_rows and model.provider == CPU:
                    scores = model.run(feeds)  # tens of µs: cheaper than the hand-off to a pool thread and back
                else:  # large calls, and every CUDA call: the loop parses the next requests while the device works
                    scores = await asyncio.get_running_loop().run_in_executor(self._pool, model.run, feeds)
                t2 = time.perf_counter()
        finally:
            self._calls -= 1
        self.metrics.batch_rows.observe(rows)
        return Inference(scores, t1 - t0, t2 - t1)

    async def reload(self, path: str | Path | None = None, name: str | None = None) -> Model:
        """Load, validate and warm a bundle beside the current model, then swap.

        One bundle served: `path` (default: the configured bundle) replaces it. A repository: model `name` (default:
        the default model; a new name adds a model) is replaced by `path`, default its directory in APG_MODELS.
        In-flight requests keep the Model they started with; on any error the current model keeps serving.
        """
        async with self._reload_lock:
            entry = None
            if self.repository:
                entry = name or self.default
                target = Path(path) if path is not None else self.settings.models / entry
            else:
                if name is not None and (self.model is None or name != self.model.name):
                    raise NotFound(
                        f"unknown model {name!r}; one bundle is served (APG_MODELS serves several)", field="model"
                    )
                target = Path(path) if path is not None else self.settings.bundle
            try:
                model = await asyncio.to_thread(load_model, target, self.settings, entry)
            except Exception as exc:
                self.metrics.reloads.labels("error").inc()
                log.error("reload of %s refused: %s", target, exc)
                if isinstance(exc, ServiceError):
                    raise
                raise BundleError(f"cannot load {target}: {exc}") from None
            old = self.models.get(entry) if entry is not None else self.model
            self._install(model)  # the swap: one reference assignment
            self.failed.pop(model.name, None)
            self.metrics.reloads.labels("ok").inc()
            was = f"{old.name} {old.version}" if old else "nothing"
            log.info("reloaded %s: %s → %s %s", target, was, model.name, model.version)
            return model

    async def drain(self, timeout_s: float = 30.0) -> None:
        """Stop reporting ready, then wait (bounded) for in-flight inferences to finish."""
        self.ready = False
        deadline = time.monotonic() + timeout_s
        while self._calls and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        if self._pool is not None:
            self._pool.shutdown(wait=False)

    def _install(self, model: Model) -> None:
        models = dict(self.models)
        if not self.repository:  # one bundle: the new one replaces it, whatever its name
            models.clear()
            self.default = model.name
        models[model.name] = model
        self.models = models
        slot = model.name if self.repository else ""
        self.metrics.set_model(model.name, model.version, model.bundle.checksum, model.provider, slot)
        log.info(
            "serving %s version %s on %s (%s)",
            model.name,
            model.version,
            model.provider,
            model.graph.name,
        )
