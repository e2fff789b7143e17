"""An HTTP(S) connection server that idle, slow or stuck clients cannot starve.

The standard library's servers give every connection a thread from accept() on, and a
TLS-wrapped listening socket even runs the handshake inside accept(), on the serving thread,
with no timeout: one idle TCP connection then blocks every scrape. Here one selector thread
does everything a slow client can drag out, without blocking on any of them:
- it accepts, runs the TLS handshake and reads the whole request head (request line and
  headers), each connection with ONE deadline for all of that (head_timeout): a client that
  sends a byte every 2 s is closed when its deadline passes, and costs a file descriptor, never
  a thread;
- only a complete head goes to the bounded pool of workers, which build and write the answer
  (every write has io_timeout, the whole request request_deadline);
- connections per client address are capped (per_client), and so is the total
  (max_connections): when either is reached, that client's (or anyone's) oldest connection still
  sending its head is closed first, so a scraper's new connection always gets in;
- requests waiting for or being served by a worker are capped per client address
  (busy_per_client) and in all: past that a complete request is answered 503 at once from the
  selector thread, so a flood from one address cannot queue work ahead of another's scrape.
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

MAX_HEAD = 65536  # a request head larger than this is not a scrape
_END = (b"\r\n\r\n", b"\n\n")


class _Conn:
    def __init__(self, sock: socket.socket, addr: tuple, now: float, deadline: float, tls: bool) -> None:
        self.sock, self.addr, self.since, self.deadline = sock, addr, now, deadline
        self.handshaking = tls
        self.head = bytearray()

    @property
    def client(self) -> str:
        return str(self.addr[0]) if self.addr else ""


class ConnectionServer:
    def __init__(
        self,
        host: str,
        port: int,
        serve: Callable[[socket.socket, tuple, bytes], None],
        *,
        ssl_context: ssl.SSLContext | None = None,
        workers: int = 8,
        max_connections: int = 1024,
        per_client: int = 64,
        busy_per_client: int = 4,
        head_timeout: float = 5.0,
        io_timeout: float = 10.0,
        request_deadline: float = 30.0,
    ) -> None:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.socket = socket.create_server((host, port), family=family, backlog=256)
        self.socket.setblocking(False)
        self.server_address = self.socket.getsockname()
        self.serve, self.ssl_context = serve, ssl_context
        self.max_connections, self.per_client = max_connections, per_client
        self.busy_per_client, self.max_busy = busy_per_client, workers * 4
        self.head_timeout, self.io_timeout, self.request_deadline = head_timeout, io_timeout, request_deadline
        self.pool = ThreadPoolExecutor(workers, thread_name_prefix="lookout-http")
        self.selector = selectors.DefaultSelector()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        self.selector.register(self.socket, selectors.EVENT_READ, "listen")
        self.selector.register(self._wake_r, selectors.EVENT_READ, "wake")
        self.pending: dict[socket.socket, _Conn] = {}  # handshaking or sending their head
        self.busy: set[_Conn] = set()  # handed to a worker
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._stopped = threading.Event()

    # ---- lifecycle ----------------------------------------------------------------------

    def serve_forever(self) -> None:
        try:
            while not self._stop.is_set():
                for key, _ in self.selector.select(timeout=self._next_timeout()):
                    if key.data == "listen":
                        self._accept()
                    elif key.data == "wake":
                        with contextlib.suppress(OSError):
                            os.read(self._wake_r, 4096)
                    else:
                        self._progress(key.data)
                self._expire(time.monotonic())
        finally:
            self._stopped.set()

    def shutdown(self) -> None:
        self._stop.set()
        with contextlib.suppress(OSError):
            os.write(self._wake_w, b"x")
        self._stopped.wait(10)

    def server_close(self) -> None:
        for conn in list(self.pending.values()):
            self._close(conn)
        self.pool.shutdown(wait=False, cancel_futures=True)
        self.selector.close()
        self.socket.close()
        for fd in (self._wake_r, self._wake_w):
            with contextlib.suppress(OSError):
                os.close(fd)

    def _next_timeout(self) -> float:
        if not self.pending:
            return 1.0
        soonest = min(c.deadline for c in self.pending.values())
        return max(0.0, min(1.0, soonest - time.monotonic()))

    # ---- the selector thread: accept, handshake, read the head --------------------------

    def _accept(self) -> None:
        while True:
            try:
                sock, addr = self.socket.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # EMFILE and friends: shed the oldest pending connection
                log.warning("accept failed: %s", exc)
                self._shed(None)
                return
            sock.setblocking(False)
            now, tls = time.monotonic(), self.ssl_context is not None
            if tls:
                try:
                    sock = self.ssl_context.wrap_socket(sock, server_side=True,  # type: ignore[union-attr]
                                                        do_handshake_on_connect=False)
                except (OSError, ValueError):
                    with contextlib.suppress(OSError):
                        sock.close()
                    continue
            conn = _Conn(sock, addr, now, now + self.head_timeout, tls)
            self.pending[sock] = conn
            self.selector.register(sock, selectors.EVENT_READ, conn)
            self._enforce_caps(conn)
            self._progress(conn)  # the head may be there already

    def _enforce_caps(self, newest: _Conn) -> None:
        mine = [c for c in self.pending.values() if c.client == newest.client]
        with self._lock:
            mine_busy = sum(1 for c in self.busy if c.client == newest.client)
            busy = len(self.busy)
        excess = len(mine) + mine_busy - self.per_client
        for conn in sorted((c for c in mine if c is not newest), key=lambda c: c.since)[:max(0, excess)]:
            self._close(conn)
        while len(self.pending) + busy > self.max_connections and self._shed(newest):
            pass

    def _shed(self, keep: _Conn | None) -> bool:
        others = [c for c in self.pending.values() if c is not keep]
        if not others:
            return False
        self._close(min(others, key=lambda c: c.since))
        return True

    def _progress(self, conn: _Conn) -> None:
        """Move one connection on as far as it can go without waiting."""
        if conn.sock not in self.pending:
            return
        try:
            if conn.handshaking:
                conn.sock.do_handshake()  # type: ignore[attr-defined]
                conn.handshaking = False
                self._watch(conn, selectors.EVENT_READ)
            while True:
                chunk = conn.sock.recv(16384)
                if not chunk:
                    self._close(conn)
                    return
                conn.head += chunk
                if any(end in conn.head for end in _END):
                    self._dispatch(conn)
                    return
                if len(conn.head) > MAX_HEAD:
                    self._close(conn)
                    return
                if not (isinstance(conn.sock, ssl.SSLSocket) and conn.sock.pending()):
                    return
        except ssl.SSLWantReadError:
            self._watch(conn, selectors.EVENT_READ)
        except ssl.SSLWantWriteError:
            self._watch(conn, selectors.EVENT_WRITE)
        except (BlockingIOError, InterruptedError):
            return
        except (OSError, ssl.SSLError, ValueError) as exc:
            log.debug("connection from %s dropped before its request: %s", conn.addr, exc)
            self._close(conn)

    def _watch(self, conn: _Conn, events: int) -> None:
        with contextlib.suppress(KeyError, ValueError):
            self.selector.modify(conn.sock, events, conn)

    def _close(self, conn: _Conn) -> None:
        self.pending.pop(conn.sock, None)
        with contextlib.suppress(KeyError, ValueError, OSError):
            self.selector.unregister(conn.sock)
        with contextlib.suppress(OSError):
            conn.sock.close()

    def _dispatch(self, conn: _Conn) -> None:
        self.pending.pop(conn.sock, None)
        with contextlib.suppress(KeyError, ValueError):
            self.selector.unregister(conn.sock)
        conn.since = time.monotonic()
        with self._lock:
            mine = sum(1 for c in self.busy if c.client == conn.client)
            full = mine >= self.busy_per_client or len(self.busy) >= self.max_busy
            if not full:
                self.busy.add(conn)
        if full:  # a flood from one client (or from all) waits for nobody: refused at once, no worker
            with contextlib.suppress(OSError):
                conn.sock.setblocking(True)
                conn.sock.settimeout(0.2)
                conn.sock.sendall(b"HTTP/1.0 503 Service Unavailable\r\nContent-Length: 0\r\nRetry-After: 1\r\n"
                                  b"Connection: close\r\n\r\n")
            with contextlib.suppress(OSError):
                conn.sock.close()
            return
        try:
            self.pool.submit(self._work, conn)
        except RuntimeError:  # shutting down
            with self._lock:
                self.busy.discard(conn)
            conn.sock.close()

    def _expire(self, now: float) -> None:
        for conn in [c for c in self.pending.values() if now >= c.deadline]:
            log.debug("connection from %s closed: no complete request within %.0fs", conn.addr, self.head_timeout)
            self._close(conn)
        with self._lock:
            late = [c for c in self.busy if now - c.since > self.request_deadline]
        for conn in late:  # the worker's next write fails, and it lets go
            with contextlib.suppress(OSError):
                conn.sock.shutdown(socket.SHUT_RDWR)

    # ---- a worker: one complete request ------------------------------------------------------

    def _work(self, conn: _Conn) -> None:
        try:
            conn.sock.setblocking(True)
            conn.sock.settimeout(self.io_timeout)
            self.serve(conn.sock, conn.addr, bytes(conn.head))
        except (OSError, ssl.SSLError, ValueError) as exc:
            log.debug("connection from %s ended: %s", conn.addr, exc)
        except Exception:
            log.exception("serving %s failed", conn.addr)
        finally:
            with self._lock:
                self.busy.discard(conn)
            with contextlib.suppress(OSError):
                conn.sock.close()
