"""Periodic background work: one daemon thread that runs a function every interval until closed.

    Periodic(name, work, interval_s, first_now=False).start()    work() every interval_s
    .close(timeout_s)                                            stop; wait for a round in progress

The app's watchers (the training runs' states, the champion's training photos, the dataset
manifest and repair, the dashboard's trend scrapes) share this life cycle: start once, run `work`
every interval (with `first_now` at once, then every interval), and survive whatever `work`
raises: a database or storage outage must not end the thread, so the exception is logged with its
traceback and the next round runs. The standard library has no such loop (threading.Timer runs
once, sched blocks its caller), and a scheduler package would be a dependency for four loops.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

logger = logging.getLogger("catdog.feedback")


class Periodic:
    def __init__(self, name: str, work: Callable[[], object], interval_s: float, first_now: bool = False):
        if interval_s <= 0:
            raise ValueError(f"{name}: the interval must be positive, got {interval_s}")
        self.name, self.work, self.interval_s, self.first_now = name, work, interval_s, first_now
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError(f"{self.name} is started already")
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self._thread.start()

    def close(self, timeout_s: float = 30.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=timeout_s)

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _run(self) -> None:
        if self.first_now:
            self._round()
        while not self._stop.wait(self.interval_s):
            self._round()

    def _round(self) -> None:
        try:
            self.work()
        except Exception:  # an outage or a bug in one round: logged, and the next round runs
            logger.exception("%s: this round failed; the next runs in %.0f s", self.name, self.interval_s)
