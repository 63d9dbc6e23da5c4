"""Which of this test process's own processes (itself and every descendant: a local Ray
cluster's raylet, GCS, workers, actors) listen on an address other than loopback."""

from __future__ import annotations

import os
import threading
import time

LOOPBACK = {"127.0.0.1", "::1", "::ffff:127.0.0.1"}


def non_loopback_listeners() -> set[tuple[str, int, str]]:
    """(address, port, process name) of every listening socket of ours not on loopback."""
    import psutil

    me = psutil.Process(os.getpid())
    ours = {me.pid} | {p.pid for p in me.children(recursive=True)}
    found = set()
    for conn in psutil.net_connections(kind="inet"):
        if conn.status != psutil.CONN_LISTEN or conn.pid not in ours or conn.laddr.ip in LOOPBACK:
            continue
        try:
            name = psutil.Process(conn.pid).name()
        except psutil.Error:
            name = "?"
        found.add((conn.laddr.ip, conn.laddr.port, name))
    return found


class ListenerWatch:
    """Samples `non_loopback_listeners` every `period` seconds while the block runs."""

    def __init__(self, period: float = 0.2):
        self.period, self.found, self.samples = period, set(), 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            self.found |= non_loopback_listeners()
            self.samples += 1
            self._stop.wait(self.period)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        time.sleep(0)
