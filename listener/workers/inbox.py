"""Inbox: how a worker thread hands results to the protocol loop.

A queue the loop drains when it wakes, and one byte on the loop's wakeup pipe so that its
select() ends now rather than at its next timeout. A full pipe is fine: the loop is already due
to wake, and it drains everything queued, not one item per byte.
"""

from __future__ import annotations

import contextlib
import os
import queue
from typing import Generic, TypeVar

T = TypeVar("T")


class Inbox(Generic[T]):
    def __init__(self, wakeup_fd: int | None, tag: bytes) -> None:
        self.wakeup_fd, self.tag = wakeup_fd, tag  # tag: which worker woke the loop (for a debugger)
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
