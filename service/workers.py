"""The supervisor of `apg serve --workers N`: uvicorn's, but SIGHUP reloads every worker in place.

    Workers(config, sockets=[config.bind_socket()]).run()   # what service.server.serve runs for N > 1

uvicorn's supervisor answers SIGHUP by replacing each worker with a new process (started, then the old one stopped), and
requests failed in the hand-over (3 of 5,976 under load, issue 13 item 7). This one passes the signal on to each worker
instead, whose lifespan reloads the bundle it serves as a single server does (service/app.py `_on_sighup`): loaded and
warmed beside the old model, then swapped, so no request fails and the processes stay. A worker still starting has no
SIGHUP handler yet (the signal would kill it): it gets the signal once it serves. Every other signal is uvicorn's.
"""

from __future__ import annotations

import logging
import os
import signal

from uvicorn.supervisors import Multiprocess

log = logging.getLogger("apg.server")


class Workers(Multiprocess):
    def run(self) -> None:
        self._owed: set[int] = set()  # pids of the workers a SIGHUP is still to be passed on to
        super().run()

    def handle_hup(self) -> None:
        log.info("SIGHUP: passed on to the %d workers, each reloads its bundle in place", len(self.processes))
        self._owed = {process.pid for process in self.processes}
        self._pass_on_hangup()

    def keep_subprocess_alive(self) -> None:  # every 0.5 s
        super().keep_subprocess_alive()
        if self._owed:
            self._pass_on_hangup()

    def _pass_on_hangup(self) -> None:
        for process in self.processes:
            if process.pid in self._owed and process.is_ready(timeout=1):  # serving: its lifespan took SIGHUP over
                os.kill(process.pid, signal.SIGHUP)
                self._owed.discard(process.pid)
        self._owed &= {process.pid for process in self.processes}  # a replaced worker's successor loads afresh
