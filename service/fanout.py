"""A hot reload that reaches every worker of `apg serve --workers N`.

    fanout = ReloadFanout(Path(shared_dir) / ANNOUNCEMENT, runtime)
    fanout.announce(model)        # after POST /admin/reload succeeded in this worker
    await fanout.follow()         # in every worker's lifespan: reload what another worker announced

uvicorn's workers share nothing but the directory service.server makes for them (PROMETHEUS_MULTIPROC_DIR), so the
worker that took the reload writes the bundle it now serves there (atomically: a temporary file, then a rename), and
every worker polls that file and reloads the announced bundle when its checksum differs from the one it serves.
Each worker's reload is the usual one: loaded and warmed beside the old model, swapped atomically, so no request
fails; a worker started later (uvicorn replaces a dead one) picks up the announced bundle too.
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
import os
from pathlib import Path

import orjson

from service.runtime import Runtime

log = logging.getLogger("apg.fanout")

ANNOUNCEMENT = "reload.json"  # in the workers' shared directory
POLL_S = 0.25  # how long another worker may go on serving the old model, plus its load and warm-up time


class ReloadFanout:
    def __init__(self, path: Path, runtime: Runtime) -> None:
        self.path, self.runtime = path, runtime
        self._seen: int | None = None  # st_mtime_ns of the announcement last read

    def announce(self, model) -> None:
        """Tell the other workers to serve `model`'s bundle (under its repository name, when it has one). The
        read-modify-write holds a lock, so two workers announcing two models at once both get through."""
        with open(self.path.with_name(f".{self.path.name}.lock"), "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            announced = self._read()
            announced[model.entry or ""] = {"bundle": str(model.bundle.path), "checksum": model.bundle.checksum}
            tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}")
            tmp.write_bytes(orjson.dumps(announced))
            tmp.replace(self.path)

    def _read(self) -> dict:
        """{repository name, or "" for the one bundle: {"bundle", "checksum"}} — every model announced so far."""
        try:
            return orjson.loads(self.path.read_bytes())
        except FileNotFoundError:
            return {}

    async def follow(self) -> None:
        """Poll the announcement for ever (cancelled at shutdown); a refused reload is logged by Runtime.reload."""
        while True:
            try:
                await self.check()
            except Exception as exc:  # the old model keeps serving; the next announcement is tried again
                log.warning("announced reload not followed: %s", exc)
            await asyncio.sleep(POLL_S)

    async def check(self) -> None:
        try:
            mtime = self.path.stat().st_mtime_ns
        except FileNotFoundError:
            return
        if mtime == self._seen:
            return
        self._seen = mtime  # a failed entry is tried again at the next announcement, not at every poll
        failed = []
        for name, wanted in self._read().items():  # each model on its own: one that fails never blocks the others
            current = self.runtime.models.get(name) if name else self.runtime.model
            if current is None or current.bundle.checksum != wanted["checksum"]:
                log.info("reload announced by another worker: %s %s", name or "the model", wanted["bundle"])
                try:
                    await self.runtime.reload(wanted["bundle"], name or None)
                except Exception as exc:  # logged by Runtime.reload; the old model keeps serving
                    failed.append(f"{name or 'the model'}: {exc}")
        if failed:
            raise RuntimeError("; ".join(failed))
