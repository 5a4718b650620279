"""A hot reload that reaches every worker of `apg serve --workers N`, and leaves them all on the same bundle.

    fanout = ReloadFanout.of(runtime)   # None unless `apg serve`'s supervisor started this worker (workers > 1)
    fanout.start()                      # in each worker's lifespan: follow an announcement now and at each FOLLOW
    fanout.announce(model)              # POST /admin/reload, once `model` serves here: every other worker follows
    fanout.stop()

One way reaches every worker. The worker that took POST /admin/reload loads, validates and warms the bundle itself (a
bad one gets its 4xx/5xx there, and nothing is announced), then writes the bundle it now serves to the announcement
file in the workers' shared directory (PROMETHEUS_MULTIPROC_DIR, service.server; atomically: a temporary file, then a
rename, under a lock so that two workers announcing two models at once both get through): its path, its graph's
checksum and the digest of its manifest (which lists every file's sha256). Then it sends FOLLOW (SIGUSR1) to the
supervisor, which passes it on to every worker that serves (service/workers.py); a worker still starting reads the
announcement once it has its handler. Each worker reloads the announced bundle unless it already serves exactly that
one (graph and manifest: a re-export of the same graph under a new version is a change too). Each reload is the usual
one: loaded and warmed beside the old model, swapped atomically, so no request fails. Nothing polls.

Workers converge (issue 25: a re-export, or an overwrite right after a reload, left two workers on two graphs):
- the bundle a worker loads is verified against the announcement. When the directory holds another bundle by then
  (overwritten since), the worker says so (a warning naming both checksums), serves the bundle the directory holds
  now and announces it: every worker, the first one included, then loads and verifies that one;
- a reload that fails (a bundle still being written) is tried again RETRY_S later (a timer, only after a failure),
  not only at the next announcement.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import logging
import os
import signal
from pathlib import Path

import orjson

from service.prometheus import multiprocess_dir
from service.runtime import Runtime

log = logging.getLogger("apg.fanout")

ANNOUNCEMENT = "reload.json"  # in the workers' shared directory
SUPERVISOR = "APG_SUPERVISOR_PID"  # set by service.server for the workers of its supervisor (not a setting)
FOLLOW = signal.SIGUSR1  # a worker → the supervisor → every worker: follow the announcement
RETRY_S = 2.0  # after a failed reload: how long until the announcement is tried again


def stop_handling(sig: int) -> None:
    """The running loop stops handling ``sig`` and the process ignores it from now on, with no moment in between
    in which its default action (terminate) applies: a worker that shuts down must not die of a late signal."""
    blocked = signal.pthread_sigmask(signal.SIG_BLOCK, {sig})
    try:
        asyncio.get_running_loop().remove_signal_handler(sig)
        signal.signal(sig, signal.SIG_IGN)
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, blocked)  # one that arrived meanwhile is delivered, and ignored


def identity(model) -> dict[str, str]:
    """What a worker must match to serve the announced bundle: its graph's checksum and its manifest's digest."""
    manifest = orjson.dumps(model.bundle.manifest, option=orjson.OPT_SORT_KEYS)
    return {"checksum": model.bundle.checksum, "manifest": hashlib.sha256(manifest).hexdigest()}


def _same(model, wanted: dict) -> bool:
    return model is not None and all(wanted.get(k) in (None, v) for k, v in identity(model).items())


class ReloadFanout:
    def __init__(self, path: Path, runtime: Runtime, supervisor: int | None = None) -> None:
        self.path, self.runtime, self.supervisor = path, runtime, supervisor
        self._seen: bytes | None = None  # the announcement last followed
        self._failed = False  # the last follow failed: the next wake-up (the retry timer, or any FOLLOW) tries again
        self._task: asyncio.Task | None = None  # the follow in progress
        self._again = False  # FOLLOW came during it: read the announcement once more afterwards
        self._timer: asyncio.TimerHandle | None = None  # the retry of a failed reload
        self._handler = False  # FOLLOW handled on the event loop

    @classmethod
    def of(cls, runtime: Runtime) -> ReloadFanout | None:
        """The fan-out of a worker that `apg serve --workers N` started (its parent is the supervisor), else None."""
        shared, supervisor = multiprocess_dir(), os.environ.get(SUPERVISOR)
        if not shared or supervisor != str(os.getppid()):
            return None
        return cls(Path(shared) / ANNOUNCEMENT, runtime, int(supervisor))

    def announce(self, model) -> None:
        """Tell every other worker to serve `model`'s bundle (under its repository name, when it has one): the
        announcement, then FOLLOW to the supervisor. The read-modify-write holds a lock, so two workers announcing
        two models at once both get through."""
        with open(self.path.with_name(f".{self.path.name}.lock"), "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            announced = self._read()
            announced[model.entry or ""] = {"bundle": str(model.bundle.path), **identity(model)}
            tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}")
            tmp.write_bytes(orjson.dumps(announced))
            tmp.replace(self.path)
        if self.supervisor is not None:
            try:
                os.kill(self.supervisor, FOLLOW)
            except ProcessLookupError:  # the supervisor is gone (shutting down): this worker stops soon too
                log.warning("reload announced, but the supervisor %d is gone: no other worker told", self.supervisor)

    def _read(self) -> dict:
        """{repository name, or "" for the one bundle: {"bundle", "checksum", "manifest"}} — every model announced."""
        try:
            return orjson.loads(self.path.read_bytes())
        except FileNotFoundError:
            return {}

    def start(self) -> None:
        """FOLLOW → follow the announcement (on the main thread's loop only), and follow it once now: a worker
        started after an announcement follows it too (once started: it may answer a few requests with the
        configured bundle before)."""
        try:
            asyncio.get_running_loop().add_signal_handler(FOLLOW, self.wake)
            self._handler = True
        except (ValueError, RuntimeError, NotImplementedError) as exc:  # not the main thread's loop (tests' threads)
            log.warning("FOLLOW cannot be handled here (%s): this worker follows announcements only at start", exc)
            with contextlib.suppress(ValueError):
                signal.signal(FOLLOW, signal.SIG_IGN)  # a FOLLOW must not kill it
        self.wake()

    def stop(self) -> None:
        if self._handler:  # ignored from now on: a late FOLLOW must not kill a worker that shuts down
            stop_handling(FOLLOW)
        if self._timer is not None:
            self._timer.cancel()
        if self._task is not None:
            self._task.cancel()

    def wake(self) -> None:
        """Read the announcement and follow it: now, or right after the follow in progress."""
        self._again = True
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._follow())

    async def _follow(self) -> None:
        while self._again:
            self._again = False
            if self._timer is not None:
                self._timer.cancel()
            try:
                await self.check()
            except Exception as exc:  # logged by Runtime.reload; the old model keeps serving
                log.warning("announced reload not followed (tried again in %g s): %s", RETRY_S, exc)
                self._timer = asyncio.get_running_loop().call_later(RETRY_S, self.wake)

    async def check(self) -> None:
        """Reload every announced model this worker does not serve exactly; RuntimeError naming those that failed."""
        try:
            text = self.path.read_bytes()
        except FileNotFoundError:
            return
        if text == self._seen and not self._failed:  # (after a failure any wake-up tries again: its timer is gone)
            return
        self._seen, self._failed = text, False
        failed = []
        for name, wanted in orjson.loads(text).items():  # each model on its own: one that fails never blocks the others
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
            self._failed = True
            raise RuntimeError("; ".join(failed))
