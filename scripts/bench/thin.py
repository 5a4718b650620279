"""The second reference of `apg bench`: the thinnest possible endpoint for the same model.

One async FastAPI route that parses the columnar JSON body (`{"inputs": {feature: [...]}}`) with orjson,
looks the values up with the bundle's encoder, calls the same onnxruntime session (service.runtime.load_model,
so the same graph, threads and warm-up as the service) inline on the event loop and answers with orjson.
No validation beyond the encoder's, no metrics, no middleware, no thread pool. Served by uvicorn exactly
as `apg serve` serves the service (1 worker, uvloop and httptools when installed, no access log):

    python -m scripts.bench.thin --bundle bundles/default --port 8001     # APG_INTRA_OP_THREADS=1 by default
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import orjson
from fastapi import FastAPI, Request, Response


def create_app() -> FastAPI:
    """The thin app for $APG_BUNDLE with $APG_INTRA_OP_THREADS threads (uvicorn calls this factory)."""
    from service.runtime import load_model
    from service.settings import Settings

    model = load_model(os.environ["APG_BUNDLE"], Settings(providers="cpu"))
    encoder, session = model.encoder, model.session
    app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)

    @app.post("/score")
    async def score(request: Request) -> Response:
        feeds = encoder.encode_columns(orjson.loads(await request.body())["inputs"])
        (scores,) = session.run(["score"], feeds)
        return Response(
            orjson.dumps({"scores": scores}, option=orjson.OPT_SERIALIZE_NUMPY), media_type="application/json"
        )

    @app.get("/readyz")
    async def readyz() -> Response:
        return Response(b"ready")

    return app


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m scripts.bench.thin", description=__doc__.split("\n\n")[0])
    p.add_argument("--bundle", required=True, help="bundle directory")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8001)
    args = p.parse_args(argv)
    import uvicorn

    os.environ["APG_BUNDLE"] = str(Path(args.bundle).resolve())
    uvicorn.run(
        "scripts.bench.thin:create_app",
        factory=True,
        host=args.host,
        port=args.port,
        loop="auto",
        http="auto",
        log_level="warning",
        access_log=False,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
