"""An HTTP(S) connection server that idle, slow or stuck clients cannot starve.

The standard library's servers give every connection a thread from accept() on, and a
TLS-wrapped listening socket even runs the handshake inside accept(), on the serving thread,
with no timeout: one idle TCP connection then blocks every scrape. Here:
- the acceptor thread only accepts: a new connection waits in a selector, costing a file
  descriptor but no thread, until it sends its first bytes (or idle_timeout closes it);
- a bounded pool of workers serves connections that have something to say; the TLS handshake
  runs there, and every read and write has io_timeout;
- a request still unfinished after request_deadline has its socket shut down;
- past max_connections, the longest-idle connection is closed.
"""

from __future__ import annotations

import contextlib
import logging
import os
import selectors
import socket
import ssl
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

log = logging.getLogger("lookout.exporter.httpd")


class _Conn:
    def __init__(self, sock: socket.socket, addr: tuple, now: float) -> None:
        self.sock, self.addr, self.since = sock, addr, now


class ConnectionServer:
    def __init__(
        self,
        host: str,
        port: int,
        serve: Callable[[socket.socket, tuple], None],
        *,
        ssl_context: ssl.SSLContext | None = None,
        workers: int = 8,
        max_connections: int = 1024,
        idle_timeout: float = 30.0,
        io_timeout: float = 10.0,
        request_deadline: float = 30.0,
    ) -> None:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.socket = socket.create_server((host, port), family=family, backlog=128)
        self.socket.setblocking(False)
        self.server_address = self.socket.getsockname()
        self.serve, self.ssl_context = serve, ssl_context
        self.max_connections, self.idle_timeout = max_connections, idle_timeout
        self.io_timeout, self.request_deadline = io_timeout, request_deadline
        self.pool = ThreadPoolExecutor(workers, thread_name_prefix="lookout-http")
        self.selector = selectors.DefaultSelector()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        self.selector.register(self.socket, selectors.EVENT_READ, "listen")
        self.selector.register(self._wake_r, selectors.EVENT_READ, "wake")
        self.idle: dict[socket.socket, _Conn] = {}  # accepted, waiting for their first bytes
        self.busy: set[_Conn] = set()  # handed to a worker
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._stopped = threading.Event()

    # ---- lifecycle ----------------------------------------------------------------------

    def serve_forever(self) -> None:
        try:
            while not self._stop.is_set():
                for key, _ in self.selector.select(timeout=1.0):
                    if key.data == "listen":
                        self._accept()
                    elif key.data == "wake":
                        with contextlib.suppress(OSError):
                            os.read(self._wake_r, 4096)
                    else:
                        self._dispatch(key.fileobj)  # type: ignore[arg-type]
                self._expire(time.monotonic())
        finally:
            self._stopped.set()

    def shutdown(self) -> None:
        self._stop.set()
        with contextlib.suppress(OSError):
            os.write(self._wake_w, b"x")
        self._stopped.wait(10)

    def server_close(self) -> None:
        for sock in list(self.idle):
            self._close_idle(sock)
        self.pool.shutdown(wait=False, cancel_futures=True)
        self.selector.close()
        self.socket.close()
        for fd in (self._wake_r, self._wake_w):
            with contextlib.suppress(OSError):
                os.close(fd)

    # ---- the acceptor thread ------------------------------------------------------------

    def _accept(self) -> None:
        while True:
            try:
                sock, addr = self.socket.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # EMFILE and friends: shed the oldest idle connection
                log.warning("accept failed: %s", exc)
                self._shed()
                return
            sock.setblocking(False)
            self.idle[sock] = _Conn(sock, addr, time.monotonic())
            self.selector.register(sock, selectors.EVENT_READ, "conn")
            with self._lock:
                busy = len(self.busy)
            while len(self.idle) + busy > self.max_connections and self._shed():
                pass

    def _shed(self) -> bool:
        if not self.idle:
            return False
        oldest = min(self.idle.values(), key=lambda c: c.since)
        self._close_idle(oldest.sock)
        return True

    def _close_idle(self, sock: socket.socket) -> None:
        self.idle.pop(sock, None)
        with contextlib.suppress(KeyError, ValueError, OSError):
            self.selector.unregister(sock)
        with contextlib.suppress(OSError):
            sock.close()

    def _dispatch(self, sock: socket.socket) -> None:
        conn = self.idle.pop(sock, None)
        with contextlib.suppress(KeyError, ValueError):
            self.selector.unregister(sock)
        if conn is None:
            return
        conn.since = time.monotonic()
        with self._lock:
            self.busy.add(conn)
        try:
            self.pool.submit(self._work, conn)
        except RuntimeError:  # shutting down
            with self._lock:
                self.busy.discard(conn)
            sock.close()

    def _expire(self, now: float) -> None:
        for conn in [c for c in self.idle.values() if now - c.since > self.idle_timeout]:
            self._close_idle(conn.sock)
        with self._lock:
            late = [c for c in self.busy if now - c.since > self.request_deadline]
        for conn in late:  # the worker's next read or write fails, and it lets go
            with contextlib.suppress(OSError):
                conn.sock.shutdown(socket.SHUT_RDWR)

    # ---- a worker -----------------------------------------------------------------------

    def _work(self, conn: _Conn) -> None:
        try:
            conn.sock.setblocking(True)
            conn.sock.settimeout(self.io_timeout)
            if self.ssl_context is not None:
                conn.sock = self.ssl_context.wrap_socket(conn.sock, server_side=True)  # handshake, timed
            self.serve(conn.sock, conn.addr)
        except (OSError, ssl.SSLError, ValueError) as exc:
            log.debug("connection from %s ended: %s", conn.addr, exc)
        except Exception:
            log.exception("serving %s failed", conn.addr)
        finally:
            with self._lock:
                self.busy.discard(conn)
            with contextlib.suppress(OSError):
                conn.sock.close()
