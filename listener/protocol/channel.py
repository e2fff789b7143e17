"""The listener's end of supervisord's pipes, isolated from everything else in the process.

One stray byte on stdout puts a listener in UNKNOWN for good while XML-RPC still says RUNNING.
So at start we move the protocol to private file descriptors and point fds 0 and 1 elsewhere:
fd 1 -> stderr (a print() in apprise, a plugin or a child process lands in the stderr log) and
fd 0 -> /dev/null (nothing else can eat protocol bytes). Only this class writes to the pipe.
"""

from __future__ import annotations

import contextlib
import os
import select
import sys

from .parser import Envelope, EventParser, Garbage

READY = b"READY\n"
ACK_AND_READY = b"RESULT 2\nOK" + READY


class ProtocolChannel:
    def __init__(self, infd: int, outfd: int, wakeup_fd: int | None = None) -> None:
        self.infd, self.outfd, self.wakeup_fd = infd, outfd, wakeup_fd
        self.parser = EventParser()
        self.eof = False

    @classmethod
    def isolate_stdio(cls, wakeup_fd: int | None = None) -> ProtocolChannel:
        sys.stdout.flush()
        infd, outfd = os.dup(0), os.dup(1)
        os.set_inheritable(infd, False)
        os.set_inheritable(outfd, False)
        os.dup2(2, 1)
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)
        os.close(devnull)
        sys.stdout = sys.stderr  # Python-level prints follow fd 1 to stderr as well
        return cls(infd, outfd, wakeup_fd)

    def _write(self, data: bytes) -> None:
        """A closed pipe is supervisord gone (killed between handing us an event and reading our
        answer): the same end as EOF on stdin, said by the loop, never a crash that loses the alert."""
        view = memoryview(data)
        try:
            while view:
                written = os.write(self.outfd, view)
                view = view[written:]
        except BrokenPipeError:
            self.eof = True

    def ready(self) -> None:
        self._write(READY)

    def ack(self) -> None:
        """Acknowledge the event in hand and ask for the next, in one write."""
        self._write(ACK_AND_READY)

    def poll(self, timeout: float | None) -> tuple[list[Envelope | Garbage], bool]:
        """Wait up to ``timeout`` for input; returns (framed items, woken by the wakeup fd)."""
        if self.eof:  # (a closed pipe on a write: nothing more will come, and no wait for it)
            return [], False
        fds = [self.infd] if self.wakeup_fd is None else [self.infd, self.wakeup_fd]
        try:
            readable, _, _ = select.select(fds, [], [], timeout)
        except InterruptedError:  # pragma: no cover - PEP 475 retries, kept for clarity
            return [], False
        woken = self.wakeup_fd is not None and self.wakeup_fd in readable
        if woken:
            with contextlib.suppress(BlockingIOError):
                os.read(self.wakeup_fd, 4096)  # type: ignore[arg-type]
        items: list[Envelope | Garbage] = []
        if self.infd in readable:
            data = os.read(self.infd, 65536)
            if not data:
                self.eof = True
            else:
                items = self.parser.feed(data)
        return items, woken
