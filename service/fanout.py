"""A hot reload that reaches every worker of `apg serve --workers N`, and leaves them all on the same bundle.

    fanout = ReloadFanout(Path(shared_dir) / ANNOUNCEMENT, runtime)
    fanout.announce(model)        # after POST /admin/reload succeeded in this worker
    await fanout.follow()         # in every worker's lifespan: reload what another worker announced

uvicorn's workers share nothing but the directory service.server makes for them (PROMETHEUS_MULTIPROC_DIR), so the
worker that took the reload writes the bundle it now serves there (atomically: a temporary file, then a rename): its
path, its graph's checksum and the digest of its manifest (which lists every file's sha256). Every worker polls that
file and reloads the announced bundle unless it already serves exactly that one (graph and manifest: a re-export of
the same graph under a new version is a change too). Each worker's reload is the usual one: loaded and warmed beside
the old model, swapped atomically, so no request fails; a worker started later picks up the announced bundle too.

Workers converge (issue 25: a re-export, or an overwrite right after a reload, left two workers on two graphs):
- the bundle a worker loads is verified against the announcement. When the directory holds another bundle by then
  (overwritten since), the worker says so (a warning naming both checksums), serves the bundle the directory holds
  now and announces it: every worker, the first one included, then loads and verifies that one;
- a reload that fails (a bundle still being written) is tried again every RETRY_S, not only at the next announcement.
"""

from __future__ import annotations

import asyncio
import fcntl
import hashlib
import logging
import os
import time
from pathlib import Path

import orjson

from service.runtime import Runtime

log = logging.getLogger("apg.fanout")

ANNOUNCEMENT = "reload.json"  # in the workers' shared directory
POLL_S = 0.25  # how long another worker may go on serving the old model, plus its load and warm-up time
RETRY_S = 2.0  # after a failed reload: how long until the announcement is tried again


def identity(model) -> dict[str, str]:
    """What a worker must match to serve the announced bundle: its graph's checksum and its manifest's digest."""
    manifest = orjson.dumps(model.bundle.manifest, option=orjson.OPT_SORT_KEYS)
    return {"checksum": model.bundle.checksum, "manifest": hashlib.sha256(manifest).hexdigest()}


def _same(model, wanted: dict) -> bool:
    return model is not None and all(wanted.get(k) in (None, v) for k, v in identity(model).items())


class ReloadFanout:
    def __init__(self, path: Path, runtime: Runtime) -> None:
        self.path, self.runtime = path, runtime
        self._seen: int | None = None  # st_mtime_ns of the announcement last read
        self._retry_at: float | None = None  # monotonic time to try a failed reload again (None: nothing failed)

    def announce(self, model) -> None:
        """Tell the other workers to serve `model`'s bundle (under its repository name, when it has one). The
        read-modify-write holds a lock, so two workers announcing two models at once both get through."""
        with open(self.path.with_name(f".{self.path.name}.lock"), "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            announced = self._read()
            announced[model.entry or ""] = {"bundle": str(model.bundle.path), **identity(model)}
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
        due = self._retry_at is not None and time.monotonic() >= self._retry_at
        if mtime == self._seen and not due:
            return
        self._seen, self._retry_at = mtime, None
        failed = []
        for name, wanted in self._read().items():  # each model on its own: one that fails never blocks the others
            current = self.runtime.models.get(name) if name else self.runtime.model
            if _same(current, wanted):
                continue
            log.info("reload announced by another worker: %s %s", name or "the model", wanted["bundle"])
            try:
                model = await self.runtime.reload(wanted["bundle"], name or None)
            except Exception as exc:  # logged by Runtime.reload; the old model keeps serving
                failed.append(f"{name or 'the model'}: {exc}")
                continue
            if not _same(model, wanted):  # the directory holds another bundle than the one announced
                log.warning(
                    "%s holds graph %s, not the announced %s (changed since): serving it and announcing it, so that"
                    " every worker serves the same one",
                    wanted["bundle"],
                    model.bundle.checksum[:12],
                    wanted["checksum"][:12],
                )
                self.announce(model)
        if failed:
            self._retry_at = time.monotonic() + RETRY_S
            raise RuntimeError("; ".join(failed))
