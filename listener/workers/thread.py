"""Fault isolation for the listener's worker threads.

One bad alert, target, lookup or probe result may fail only itself. Each worker catches what
one item raises and reports it through an ErrorLog: the traceback once, then a count once a
minute, so a failure that repeats every second neither floods the log nor goes unnoticed. A
thread that dies anyway (a bug outside any item) is noticed by the protocol loop, which exits
non-zero with one clear line, so supervisord restarts the listener instead of leaving it
half-alive: events acknowledged but never alerted on.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

REPEAT_EVERY = 60.0


class ErrorLog:
    """Report failures by key: the first with its traceback, repeats as one line a minute."""

    def __init__(self, logger: logging.Logger, every: float = REPEAT_EVERY,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.logger, self.every, self.clock = logger, every, clock
        self._seen: dict[str, tuple[float, int]] = {}  # key -> (last logged at, repeats since)
        self._lock = threading.Lock()

    def report(self, key: str, message: str, *args: object, exc_info: bool = True, level: int = logging.ERROR) -> None:
        now = self.clock()
        with self._lock:
            last = self._seen.get(key)
            if last is None:
                self._seen[key] = (now, 0)
                first = True
            elif now - last[0] >= self.every:
                self._seen[key] = (now, 0)
                first, repeats = False, last[1]
            else:
                self._seen[key] = (last[0], last[1] + 1)
                return
        if first:
            self.logger.log(level, message, *args, exc_info=exc_info)
        else:
            self.logger.log(level, message + " (again; %d more time(s) in the last %.0fs)", *args, repeats,
                            self.every)

    def clear(self, key: str, message: str = "", *args: object) -> None:
        """The failure is over: say so once, if it was ever reported."""
        with self._lock:
            was = self._seen.pop(key, None)
        if was is not None and message:
            self.logger.info(message, *args)

    def failing(self, key: str) -> bool:
        with self._lock:
            return key in self._seen


class WorkerThread(threading.Thread):
    """A daemon thread whose death is noticed: `died` says why, and `on_death` wakes the loop."""

    kind = "thread"

    def __init__(self, name: str, target: Callable[[], None], on_death: Callable[[], None] = lambda: None) -> None:
        super().__init__(name=name, daemon=True)
        self._work, self._on_death = target, on_death
        self.died = ""

    def run(self) -> None:
        try:
            self._work()
        except BaseException as exc:  # noqa: BLE001 - anything that ends the thread must be seen
            self.died = f"{type(exc).__name__}: {exc}"[:300]
            logging.getLogger("lookout.workers").exception("worker thread %s died", self.name)
        else:
            self.died = "returned"
        self._on_death()


class WorkerPool:
    """A thread pool whose death is noticed like a WorkerThread's: a task that raises past its own
    catch (a bug, not one item's failure) sets `died` and wakes the loop, instead of vanishing into
    a future nobody reads and leaving its work (a probe, a step of lookout's action) never answered."""

    kind = "pool"

    def __init__(self, name: str, workers: int, on_death: Callable[[], None] = lambda: None) -> None:
        self.name, self._on_death = name, on_death
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix=name)
        self.died = ""

    def submit(self, task: Callable[..., None], *args: object) -> None:
        self._pool.submit(self._guarded, task, *args)

    def shutdown(self, wait: bool = True) -> None:
        self._pool.shutdown(wait=wait)

    def _guarded(self, task: Callable[..., None], *args: object) -> None:
        try:
            task(*args)
        except BaseException as exc:  # noqa: BLE001 - anything that ends a task unanswered must be seen
            self.died = self.died or f"{type(exc).__name__}: {exc}"[:300]
            logging.getLogger("lookout.workers").exception("a task of the pool %s died", self.name)
            self._on_death()
