"""Back-pressure: the one rule that refuses a request for load, and the object that applies it.

    admission = Admission(settings)   # one per app (create_app: app.state.admission)
    body = await read_body(...)       # POST /score, POST /v2/models/.../infer: the body first, then
    async with admission:
        ...                           # parse, encode, wait for a slot or a batch, infer, serialise

The rule, per worker process:

    A scoring request is answered 503 {"code": "overloaded"} with `Retry-After: 1` when, as its body has
    arrived, APG_MAX_CONCURRENCY + APG_MAX_QUEUE scoring requests are already in progress.

"In progress" is everything between the end of a scoring request's body and its answer: parsing, encoding,
waiting for an inference slot or for a micro-batch to close, the onnxruntime call, serialising. The body is read
before (routes/common.py `read_body`), so a request whose body is still on its way holds no place here and
stalled uploads cannot lock scoring out: each is bounded by APG_MAX_BODY_BYTES (413) and APG_BODY_TIMEOUT_S (408)
instead. A request is counted before any of its work, and the gate then yields to the event loop once, so that
every request uvicorn has already accepted (and whose body is in) is counted before any of them runs: reading a
body that has arrived does not yield, an inline inference call never yields, and without the yield a backlog
would wait, unseen and unbounded, in the loop's ready queue.

Nothing else refuses a request for load, and what the rule implies is not checked a second time:
- at most APG_MAX_CONCURRENCY onnxruntime calls run at once (Runtime's slots make a call wait, never refuse it),
  so at most APG_MAX_QUEUE admitted requests wait for a slot;
- with APG_BATCHING, at most MAX_CONCURRENCY + MAX_QUEUE requests wait in the micro-batcher, fewer than that many
  × APG_BATCH_MAX_ROWS rows (larger requests bypass it). A batch gathers only requests in progress, so for one-row
  requests MAX_CONCURRENCY + MAX_QUEUE also bounds the size of a batch: raise APG_MAX_QUEUE with APG_BATCH_MAX_ROWS;
- admitted requests hold at most MAX_CONCURRENCY + MAX_QUEUE bodies of at most APG_MAX_BODY_BYTES each. Bodies still
  arriving are not counted: each is at most APG_MAX_BODY_BYTES for at most APG_BODY_TIMEOUT_S, so together at most
  what the network delivers in that time (bound connections in front of the service to bound them further).
Probes, /metrics and /admin/* are never refused. The other 503, `not_ready` (loading, draining), is not about load.
"""

from __future__ import annotations

import asyncio

from service.errors import Overloaded
from service.settings import Settings


class Admission:
    """`async with admission:` around one scoring request: Overloaded (503) when the worker is full.

    One object serves every request at once: it keeps a count, no per-request state. A class rather than a
    generator-based context manager, which costs ~10 µs a request."""

    __slots__ = ("in_progress", "limit")

    def __init__(self, settings: Settings) -> None:
        self.limit = settings.max_concurrency + settings.max_queue
        self.in_progress = 0  # scoring requests admitted and not yet answered

    async def __aenter__(self) -> None:
        if self.in_progress >= self.limit:
            raise Overloaded(
                f"{self.in_progress} scoring requests in progress, the most this worker takes "
                f"(APG_MAX_CONCURRENCY + APG_MAX_QUEUE = {self.limit})"
            )
        self.in_progress += 1
        try:
            await asyncio.sleep(0)  # let every accepted request be counted before any of them runs
        except BaseException:  # cancelled here (the client went away): it never ran
            self.in_progress -= 1
            raise

    async def __aexit__(self, *exc: object) -> None:
        self.in_progress -= 1
