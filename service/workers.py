"""The supervisor of `apg serve --workers N`: uvicorn's, but reloads reach every worker in place, by a signal.

    Workers(config, sockets=[config.bind_socket()]).run()   # what service.server.serve runs for N > 1

Two signals are passed on to every worker, each once the worker serves (a worker still starting has no handler for
them yet, and the signal would kill it: it gets the signal once it serves):
- SIGHUP, from an operator: each worker reloads the bundle it serves, from disk, in place (service/app.py
  `_on_sighup`): loaded and warmed beside the old model, then swapped, so no request fails and the processes stay.
  (uvicorn's supervisor replaces each worker with a new process instead, and requests failed in the hand-over: 3 of
  5,976 under load, issue 13 item 7.)
- FOLLOW (SIGUSR1), from the worker that took POST /admin/reload: each worker follows the announcement that worker
  wrote (service/fanout.py).
A signal wakes the supervisor at once (signal.set_wakeup_fd), not at its next check of the workers (every TICK_S).
A worker that is gone (killed, or hung and killed) has its live gauges dropped from the shared metrics when the
supervisor reaps it (service/prometheus.py `mark_dead`). Every other signal is uvicorn's.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import signal
from collections.abc import Iterator

from uvicorn.supervisors import Multiprocess

from service.fanout import FOLLOW
from service.prometheus import mark_dead

log = logging.getLogger("apg.server")
uvicorn_log = logging.getLogger("uvicorn.error")
TICK_S = 0.5  # uvicorn's: how often the workers are checked (alive, ready for a signal they are owed)


class Workers(Multiprocess):
    def run(self) -> None:
        """uvicorn's Multiprocess.run, woken by a signal at once rather than at its next tick."""
        self._owed: dict[int, set[int]] = {}  # pid → the signals still to be passed on to that worker
        uvicorn_log.info("Started parent process [%d]", os.getpid())
        self.init_processes()
        try:
            with _woken_by_signals() as wake:
                while not self.should_exit.is_set():
                    select.select([wake], [], [], TICK_S)
                    with contextlib.suppress(BlockingIOError):
                        os.read(wake, 512)
                    workers = {process.pid for process in self.processes}
                    self.handle_signals()
                    self.keep_subprocess_alive()
                    self._reaped(workers - {process.pid for process in self.processes})
        finally:  # whatever stopped the loop, the workers stop with it
            self.terminate_all()
            self.join_all()
        uvicorn_log.info("Stopping parent process [%d]", os.getpid())

    def handle_hup(self) -> None:
        log.info("SIGHUP: passed on to the %d workers, each reloads its bundle in place", len(self.processes))
        self._pass_on(signal.SIGHUP)

    def handle_usr1(self) -> None:  # FOLLOW
        log.info("a reload was announced: passed on to the %d workers", len(self.processes))
        self._pass_on(FOLLOW)

    def keep_subprocess_alive(self) -> None:
        super().keep_subprocess_alive()
        if self._owed:
            self._pass_on()

    def _pass_on(self, sig: int | None = None) -> None:
        """Send `sig` to every worker, and each signal still owed to a worker that serves now."""
        for process in self.processes:
            if sig is not None:
                self._owed.setdefault(process.pid, set()).add(sig)
            if self._owed.get(process.pid) and process.is_ready(timeout=1):  # serving: its lifespan took them over
                for owed in sorted(self._owed.pop(process.pid)):
                    os.kill(process.pid, owed)

    def _reaped(self, pids: set[int]) -> None:
        """Workers that are gone (uvicorn started a successor each, which loads afresh): their live gauges dropped."""
        for pid in pids:
            self._owed.pop(pid, None)
            mark_dead(pid)


@contextlib.contextmanager
def _woken_by_signals() -> Iterator[int]:
    """A pipe's read end that becomes readable whenever a signal arrives (its handler runs on the main thread)."""
    read, write = os.pipe()
    os.set_blocking(read, False)
    os.set_blocking(write, False)
    previous = signal.set_wakeup_fd(write, warn_on_full_buffer=False)
    try:
        yield read
    finally:
        signal.set_wakeup_fd(previous)
        os.close(read)
        os.close(write)
