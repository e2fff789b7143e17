"""Inbox: how the worker threads hand results to the protocol loop. One for all of them (the
watcher's answers, probe results, the answers of lookout's action steps), so the loop reads
them in the order they came, in one place.

A queue the loop drains when it wakes, and one byte on the loop's wakeup pipe so that its
select() ends now rather than at its next timeout. A full pipe is fine: the loop is already due
to wake, and it drains everything queued, not one item per byte.
"""

from __future__ import annotations

import contextlib
import os
import queue
from typing import TYPE_CHECKING, Generic, TypeAlias, TypeVar

if TYPE_CHECKING:
    from ..rules.models import ActionResult, ProbeResult
    from .watcher import ExitsObserved, Sighting, Snapshot, StartsObserved

T = TypeVar("T")
Posted: TypeAlias = "Snapshot | ExitsObserved | StartsObserved | Sighting | ProbeResult | ActionResult"


class Inbox(Generic[T]):
    def __init__(self, wakeup_fd: int | None, tag: bytes) -> None:
        self.wakeup_fd, self.tag = wakeup_fd, tag  # tag: the byte it writes (for a debugger)
        self._items: queue.Queue[T] = queue.Queue()

    def post(self, item: T) -> None:
        self._items.put(item)
        self.wake()

    def wake(self) -> None:
        if self.wakeup_fd is not None:
            with contextlib.suppress(OSError):  # a full pipe: the loop is already due to wake
                os.write(self.wakeup_fd, self.tag)

    def drain(self) -> list[T]:
        """Everything posted so far, in order, without waiting."""
        return drain_queue(self._items)


def drain_queue(items: queue.Queue[T] | queue.SimpleQueue[T]) -> list[T]:
    """What a queue holds now, in order, without waiting (also the notifier's lanes' answers)."""
    out = []
    while True:
        try:
            out.append(items.get_nowait())
        except queue.Empty:
            return out
