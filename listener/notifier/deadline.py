"""One deadline for a whole send, whatever the plugin does inside it (requests for json:// and
most chat services, smtplib for mailto://, our own code for Alertmanager).

Plugins take per-operation timeouts only: a read timeout bounds each read, so a peer that
answers one byte every 2 s (a stuck proxy) never times out. What every plugin shares is Python's
socket module, and `sys.addaudithook` sees each connect ("socket.connect") in the thread that
makes it. A lane's thread runs its send under a SendWatch, which keeps its own duplicate of each
connection the send makes (a descriptor number closed and reused by another thread can never
make it touch another connection). At the deadline the watchdog looks at each connection
(TCP_INFO: did the target's host acknowledge the whole request?) and shuts it down: the blocked
read or write returns at once, the plugin fails, the lane's thread is free. A connect attempted
after the deadline fails at once. A send blocked elsewhere (a DNS lookup, a plugin's sleep)
cannot be cut short: its lane reports the timeout anyway and takes no new send until that
thread returns, so no thread piles up behind it (lanes.py).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
import struct
import sys
import termios
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

_ESTABLISHED, _CLOSE_WAIT = 1, 8  # tcpi_state (include/net/tcp_states.h)
_TCP_INFO_BYTES = 128  # through tcpi_bytes_acked (Linux 4.1+)


@dataclass(frozen=True)
class Seen:
    """One connection as the kernel saw it."""

    established: bool
    acked: int  # bytes lookout wrote that the target's host acknowledged
    unacked: int  # bytes written and not yet acknowledged (or not yet sent)

    def took(self, floor: int) -> bool:
        """The target's host has the whole request: connected, every byte written acknowledged,
        and at least `floor` of them (the message's own size: a request carries at least that)."""
        return self.established and self.unacked == 0 and self.acked >= max(1, floor)


def observe(sock: socket.socket) -> Seen | None:
    """TCP_INFO and the send queue of a TCP connection; None for anything else."""
    try:
        raw = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 256)
        unacked = struct.unpack("i", fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, b"\0\0\0\0"))[0]
    except (OSError, AttributeError, ValueError):
        return None
    if len(raw) < _TCP_INFO_BYTES:
        return None
    acked = struct.unpack_from("Q", raw, 120)[0] - 1  # the SYN counts one
    return Seen(raw[0] in (_ESTABLISHED, _CLOSE_WAIT), max(0, acked), unacked)


class DeadlinePassed(TimeoutError):
    """A connect attempted by a send whose deadline has passed."""


class SendWatch:
    """The connections one send made, and its deadline (time.monotonic)."""

    def __init__(self, deadline: float) -> None:
        self.deadline = deadline
        self.expired = False  # the watchdog cut the send at its deadline
        self.seen: list[Seen] = []
        self._socks: list[socket.socket] = []  # our duplicates of the send's connections
        self._closed = False
        self._lock = threading.Lock()

    def connecting(self, sock: socket.socket) -> None:
        """In the sending thread, before its connect: keep a duplicate, or refuse after the deadline."""
        with self._lock:
            if self.expired or self._closed or time.monotonic() >= self.deadline:
                raise DeadlinePassed("the delivery deadline has passed")
            try:
                if sock.type != socket.SOCK_STREAM:
                    return
                self._socks.append(socket.socket(fileno=os.dup(sock.fileno())))
            except OSError:
                return  # not watched: the plugin's own timeouts still bound it

    def expire(self) -> None:
        """At the deadline (the watchdog): look at each connection, then shut it down."""
        with self._lock:
            if self._closed or self.expired:
                return
            self.expired = True
            for s in self._socks:
                self._look(s)
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        """The send returned: look at what it left (a plugin may time out a moment before the
        watchdog does), then drop the duplicates (the connection ends when the plugin's own closes)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            for s in self._socks:
                if not self.expired:
                    self._look(s)
                s.close()
            self._socks.clear()

    def _look(self, s: socket.socket) -> None:
        seen = observe(s)
        if seen is not None:
            self.seen.append(seen)


# thread ident -> the send that thread runs now
_watches: dict[int, SendWatch] = {}
_installed = False
_install_lock = threading.Lock()


def _audit(event: str, args: tuple, _get=_watches.get, _ident=threading.get_ident) -> None:  # noqa: ANN001
    """Every audited operation of the process passes here: one string comparison for the others."""
    if event != "socket.connect":
        return
    watch = _get(_ident())
    if watch is not None:
        watch.connecting(args[0])


def install() -> None:
    """Once per process: audit hooks cannot be removed, and this one costs one comparison per event."""
    global _installed
    with _install_lock:
        if not _installed:
            sys.addaudithook(_audit)
            _installed = True


@contextlib.contextmanager
def watched(watch: SendWatch) -> Iterator[SendWatch]:
    """Run a send in this thread under `watch`."""
    ident = threading.get_ident()
    _watches[ident] = watch
    try:
        yield watch
    finally:
        _watches.pop(ident, None)
        watch.close()
