"""The protocol-agnostic scoring path: every route (/score, /v2/.../infer) ends here.

    scored = await scorer.score_payload({"instances": [...]})            # /score bodies (the default model)
    scored = await scorer.score(lambda enc: enc.encode_columns(cols), rows, model, arm)  # any model, any shape
    scored = await scorer.score_columns(columns, rows, model)          # KServe v2's columns (HTTP and gRPC)

encode (preprocess: with an item store, APG_ITEM_STORE, the lookup of candidates named by id too, service/items)
→ batcher or direct inference (queue, inference) → Scored(scores, name, version, arm), then the
shadow models (APG_SHADOW) get the same request off the hot path (service/shadow.py).
The model reference is taken once per request, so a hot reload never mixes two models in one answer.
Routes time their own parse and serialise stages (Metrics.timed, as preprocess here); this records the others.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from features import Encoder
from service.batching import MicroBatcher
from service.errors import InvalidShape, TooManyRows
from service.items.serving import ItemStores
from service.metrics import Metrics
from service.runtime import Model, Runtime
from service.shadow import Shadow

SHAPES = (
    '{"instances": [{feature: value, ...}, ...]}, {"inputs": {feature: [value, ...], ...}} '
    'or {"context": {feature: value, ...}, "candidates": [{feature: value, ...}, ...]}'
)


@dataclass(frozen=True)
class Scored:
    scores: np.ndarray  # (B,) float32
    name: str
    version: str
    arm: str | None = None  # the experiment arm that chose the model; None when no experiment did


class Scorer:
    def __init__(
        self,
        runtime: Runtime,
        metrics: Metrics,
        max_rows: int,
        batcher: MicroBatcher | None = None,
        shadow: Shadow | None = None,
        items: ItemStores | None = None,
    ) -> None:
        self.runtime = runtime
        self.metrics = metrics
        self.max_rows = max_rows
        self.batcher = batcher
        self.shadow = shadow
        self.items = items

    async def score(
        self,
        encode: Callable[[Encoder], dict[str, np.ndarray]],
        rows: int,
        model: Model | None = None,
        arm: str | None = None,
        join: Callable[[Model], Awaitable[dict[str, np.ndarray]]] | None = None,
    ) -> Scored:
        """Encode with `model`'s encoder (default: the default model's) and score. `rows` (a cheap pre-count) is
        checked first; `arm` only labels the metrics and the answer. `join(model)`, when given, makes the tensors
        instead (encoding and the item store's lookup); `encode` then serves shadows of another contract."""
        if rows > self.max_rows:
            raise TooManyRows(f"{rows} rows in one request; the limit is {self.max_rows} (APG_MAX_ROWS)")
        if model is None:
            model = self.runtime.current  # (NotReady while loading or draining)
        with self.metrics.timed("preprocess"):
            try:
                feeds = encode(model.encoder) if join is None else await join(model)
            finally:  # (numbers clipped to their field's declared range, also in a request refused for another value)
                self.metrics.count_clipped(model.encoder.take_clipped())
            self.metrics.count_oov(model.vocabulary_inputs, feeds)
        rows = len(next(iter(feeds.values())))
        run = self.batcher.submit if self.batcher is not None else self.runtime.infer
        result = await run(model, feeds, rows)
        self.metrics.stage("queue", result.queue_s)
        self.metrics.stage("inference", result.inference_s)
        self.metrics.observe_scores(result.scores, model.name, arm)
        if self.shadow is not None:
            self.shadow.submit(model, encode, feeds, result.scores)
        return Scored(result.scores, model.name, model.version, arm)

    async def score_payload(self, payload: Any, model: Model | None = None, arm: str | None = None) -> Scored:
        """A parsed /score body: rows, columns, or one context against candidates (its "model" key already taken
        out by the route, service/routes/score.py)."""
        if not isinstance(payload, dict):
            raise InvalidShape(f"the body must be a JSON object: {SHAPES}")
        keys = set(payload)
        if keys == {"instances"}:
            rows = payload["instances"]
            return await self.score(lambda enc: enc.encode_rows(rows), _length(rows), model, arm)
        if keys == {"inputs"}:
            cols = payload["inputs"]
            first = next(iter(cols.values()), ()) if isinstance(cols, dict) else ()
            return await self.score(lambda enc: enc.encode_columns(cols), _length(first), model, arm)
        if keys == {"context", "candidates"}:
            context, candidates = payload["context"], payload["candidates"]
            if self.items is not None:  # candidates may be ids: service/items/join.py
                join = lambda m: self.items.ranking(m, context, candidates)  # noqa: E731
                encode = self.items.shadow_encode("ranking", context, candidates)
                return await self.score(encode, _length(candidates), model, arm, join)
            encode = lambda enc: enc.encode_ranking(context, candidates)  # noqa: E731
            return await self.score(encode, _length(candidates), model, arm)
        extra = sorted(keys - {"instances", "inputs", "context", "candidates"})
        field = extra[0] if extra else None
        raise InvalidShape(f"expected exactly one of {SHAPES}; got keys {sorted(keys)}", field=field)

    async def score_columns(self, columns: dict, rows: int, model: Model) -> Scored:
        """KServe v2's decoded tensors (HTTP and gRPC): with an item store, an id tensor without the item feature
        tensors is looked up (service/items/join.py)."""
        if self.items is None:
            return await self.score(lambda enc: enc.encode_columns(columns), rows, model)
        join = lambda m: self.items.columns(m, columns)  # noqa: E731
        return await self.score(self.items.shadow_encode("columns", columns), rows, model, join=join)


def _length(value: Any) -> int:
    return len(value) if isinstance(value, list | tuple) else 0
