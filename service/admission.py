"""Back-pressure: the rules that refuse a request for load, and the objects that apply them.

    admission = Admission(settings)   # one per app (create_app: Services.admission)
    if admission.full:                # RequestMiddleware, as a scoring request's head arrives:
        await admission.refuse(scope, receive, send)   # its body dropped unparsed, a 503 rendered once
    body = await read_body(...)       # POST /score, POST /v2/models/.../infer: the body first, then
    async with admission:
        ...                           # parse, encode, wait for a slot or a batch, infer, serialise

The rule, per worker process:

    A scoring request is answered 503 {"code": "overloaded"} with `Retry-After: 1` when, as its head or as its
    body has arrived, APG_MAX_CONCURRENCY + APG_MAX_QUEUE scoring requests are already in progress.

"In progress" is everything between the end of a scoring request's body and its answer: parsing, encoding,
waiting for an inference slot or for a micro-batch to close, the onnxruntime call, serialising. The body is read
before (service/http.py `read_body`), so a request whose body is still on its way holds no place here and
stalled uploads cannot lock scoring out: each is bounded by APG_MAX_BODY_BYTES (413) and APG_BODY_TIMEOUT_S (408)
instead. A request is counted before any of its work, and the gate then yields to the event loop once, so that
every request uvicorn has already accepted (and whose body is in) is counted before any of them runs: reading a
body that has arrived does not yield, an inline inference call never yields, and without the yield a backlog
would wait, unseen and unbounded, in the loop's ready queue.

Refusing is kept cheap, so that overload eats as little as it can of the capacity it would take to score: a scoring
request that arrives while the worker is full is answered by `refuse` from the outermost middleware
(service/middleware.py), before routing, the route, JSON and the exception handlers, with a body rendered once (half
the app's CPU of the route's refusal; what uvicorn spends on each request remains: docs/OPTIMISATIONS.md section 11).
It still reads its body (and drops it, unparsed): a client that sends its whole body before it reads, or one that
asked to close the connection, would otherwise see a reset instead of the 503. That read is bounded like any
(APG_MAX_BODY_BYTES, APG_BODY_TIMEOUT_S); cut short, the 503 closes the connection. A request refused this way holds
no place either: a stalled upload stays harmless.

POST /feedback has an admission of its own (`Admission.feedback`: APG_FEEDBACK_MAX_CONCURRENCY +
APG_FEEDBACK_MAX_QUEUE, answered 503 `overloaded` the same way), so that clicks, or a click store that stalls, never
take scoring's places (issue 25: with the store's lock held, 672 of 763 /score requests were refused).

The other rule is about memory, not work (BodyBudget, issue 25: 150 concurrent 8 MB uploads took a worker to
1.5 GB):

    A request whose body would take the request-body bytes a worker holds past APG_MAX_INFLIGHT_BODY_BYTES is
    answered 503 {"code": "overloaded"} with `Retry-After: 1` before its body is read.

A body is held from before its first byte is read to its request's answer: with a Content-Length all of it is taken
from the budget at once; a chunked body takes its chunks as they come (and is refused where the budget runs out).
The refused body is read on and dropped, bounded like any (as `refuse` does), unless the client asked for
`Expect: 100-continue`, which then never sends it.

Nothing else refuses a request for load, and what the rules imply is not checked a second time:
- at most APG_MAX_CONCURRENCY onnxruntime calls run at once (Runtime's slots make a call wait, never refuse it),
  so at most APG_MAX_QUEUE admitted requests wait for a slot;
- with APG_BATCHING, at most MAX_CONCURRENCY + MAX_QUEUE requests wait in the micro-batcher, fewer than that many
  × APG_BATCH_MAX_ROWS rows (larger requests bypass it). A batch gathers only requests in progress, so for one-row
  requests MAX_CONCURRENCY + MAX_QUEUE also bounds the size of a batch: raise APG_MAX_QUEUE with APG_BATCH_MAX_ROWS;
- the bodies a worker holds, arriving or admitted, total at most APG_MAX_INFLIGHT_BODY_BYTES (BodyBudget); each is at
  most APG_MAX_BODY_BYTES for at most APG_BODY_TIMEOUT_S. What parsing a body builds is not counted: the admission
  rule bounds how many are parsed at once.
Probes, /metrics and /admin/* are never refused. The other 503, `not_ready` (loading, draining), is not about load.
"""

from __future__ import annotations

import asyncio

from starlette.requests import Request
from starlette.types import Receive, Scope, Send

from service.errors import Overloaded, error_json
from service.http import drain
from service.settings import Settings


class Admission:
    """`async with admission:` around one scoring request: Overloaded (503) when the worker is full; `refuse`, the
    same answer to a request refused before it reaches its route.

    One object serves every request at once: it keeps a count, no per-request state. A class rather than a
    generator-based context manager, which costs ~10 µs a request."""

    __slots__ = ("in_progress", "limit", "_answers", "_body_limit", "_body_timeout_s", "_message")

    def __init__(self, settings: Settings, limit: int | None = None, what: str = "") -> None:
        """Scoring's admission; `limit` and `what` (the requests and the variables of the limit) for another one."""
        self.limit = settings.max_concurrency + settings.max_queue if limit is None else limit
        what = what or "scoring requests in progress, the most this worker takes (APG_MAX_CONCURRENCY + APG_MAX_QUEUE"
        self._message = f"{self.limit} {what} = {self.limit})"
        self.in_progress = 0  # requests admitted and not yet answered
        self._body_limit, self._body_timeout_s = settings.max_body_bytes, settings.body_timeout_s
        refused = self._refused()
        # The whole answer of `refuse`, by whether the path is a KServe v2 one (its error shape): (headers, body)
        self._answers = {v2: _rendered(refused, "/v2/" if v2 else "/") for v2 in (False, True)}

    @classmethod
    def feedback(cls, settings: Settings) -> Admission:
        """POST /feedback's own admission: its places are never scoring's."""
        limit = settings.feedback_max_concurrency + settings.feedback_max_queue
        what = (
            "feedback requests in progress, the most this worker takes"
            " (APG_FEEDBACK_MAX_CONCURRENCY + APG_FEEDBACK_MAX_QUEUE"
        )
        return cls(settings, limit, what)

    @property
    def full(self) -> bool:
        return self.in_progress >= self.limit

    def _refused(self) -> Overloaded:
        return Overloaded(self._message)

    async def refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The ASGI answer to a scoring request whose head arrived while the worker is full: its body read and dropped
        (bounded as any), then the 503; with the connection closed when the body was cut short."""
        deadline = asyncio.get_running_loop().time() + self._body_timeout_s
        whole = await drain(Request(scope, receive).stream(), self._body_limit, deadline)
        headers, body = self._answers[scope["path"].startswith("/v2/")]
        if not whole:  # the unread rest must not be read as the next request
            headers = [*headers, (b"connection", b"close")]
        await send({"type": "http.response.start", "status": 503, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    async def __aenter__(self) -> None:
        if self.in_progress >= self.limit:
            raise self._refused()
        self.in_progress += 1
        try:
            await asyncio.sleep(0)  # let every accepted request be counted before any of them runs
        except BaseException:  # cancelled here (the client went away): it never ran
            self.in_progress -= 1
            raise

    async def __aexit__(self, *exc: object) -> None:
        self.in_progress -= 1


def _rendered(refused: Overloaded, path: str) -> tuple[list[tuple[bytes, bytes]], bytes]:
    body = error_json(refused, path)
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    return headers + [(k.lower().encode(), v.encode()) for k, v in refused.headers.items()], body


TRIM_AFTER_BYTES = 16 * 1024 * 1024  # a burst that held this much is followed by a trim of the C heap
TRIM_DELAY_S = 1.0  # after the burst: refused bodies being read on and dropped are done by then


def release_free_memory() -> None:
    """Give the C heap's free pages back to the system (glibc's malloc_trim; nothing elsewhere). Bodies freed in a
    burst leave the heap fragmented, and glibc keeps what it could not return: 150 concurrent 8 MB uploads left a
    worker 1.1 GB larger 10 s later (issue 25)."""
    try:
        import ctypes

        ctypes.CDLL(None).malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass


class BodyBudget:
    """The request-body bytes one worker holds (APG_MAX_INFLIGHT_BODY_BYTES, never below one APG_MAX_BODY_BYTES body).
    A request takes its bytes through a `hold()` before reading them and releases it once answered. On the event loop
    only: plain integers."""

    __slots__ = ("held", "limit", "_peak", "_trim")

    def __init__(self, settings: Settings) -> None:
        self.limit = settings.body_budget()
        self.held = 0
        self._peak = 0  # the most held since the heap was last trimmed
        self._trim: asyncio.TimerHandle | None = None

    def take(self, n: int) -> bool:
        if self.held + n > self.limit:
            return False
        self.held += n
        if self.held > self._peak:
            self._peak = self.held
        return True

    def give(self, n: int) -> None:
        self.held -= n
        if not self.held and self._peak >= TRIM_AFTER_BYTES:  # the end of a burst of large bodies
            self._peak = 0
            if self._trim is not None:
                self._trim.cancel()
            loop = asyncio.get_running_loop()
            self._trim = loop.call_later(TRIM_DELAY_S, loop.run_in_executor, None, release_free_memory)

    def hold(self) -> BodyHold:
        return BodyHold(self)

    def refused(self, size: int | None) -> Overloaded:
        body = f"a body of {size} bytes" if size is not None else "the rest of this body"
        return Overloaded(
            f"{body} does not fit: request bodies in transit already hold {self.held} of the {self.limit} bytes this"
            " worker takes (APG_MAX_INFLIGHT_BODY_BYTES)"
        )


class BodyHold:
    """What one request has taken from the body budget: `take(n)` (False: it does not fit), `release()` (idempotent)."""

    __slots__ = ("budget", "n")

    def __init__(self, budget: BodyBudget) -> None:
        self.budget, self.n = budget, 0

    def take(self, n: int) -> bool:
        if not self.budget.take(n):
            return False
        self.n += n
        return True

    def release(self) -> None:
        self.budget.give(self.n)
        self.n = 0

    def refused(self, size: int | None) -> Overloaded:
        return self.budget.refused(size)
