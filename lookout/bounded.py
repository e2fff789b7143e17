"""I/O that must end on time: commands, HTTP and TCP under one deadline, log reading under a
byte budget. The listener's probes (probes/checks.py), evidence commands (workers/executor.py) and dead
man's switch (workers/deadman.py) use these.

    run_bounded       a command in its own process group, killed with the group at the deadline
    connect           a TCP connection within what is left of a deadline
    DeadlineConnection  http.client with one deadline for connect, TLS, request, headers and body
    scan_log          the lines appended to a log since the last call, across supervisord's rotation
"""

from __future__ import annotations

import contextlib
import http.client
import io
import os
import selectors
import signal
import socket
import ssl
import subprocess
import time
from collections.abc import Callable
from typing import Any

from .text import clean

OUTPUT_BYTES = 4096  # of a command's output, kept by default
USER_AGENT = "lookout-probe"  # the tail of an alert leaves out access-log lines with it
LOG_READ_BYTES = 8_000_000  # new bytes of a log file one log_pattern run reads at most; more is skipped, and said
LOG_CHUNK = 1 << 20  # read and matched this much at a time: memory stays bounded
LONG_LINE = 65536  # bytes without a newline taken as one line
MAX_ROTATED = 100  # path.1 .. path.N searched for the file read last time


def run_bounded(argv: list[str], deadline: float, env: dict[str, str] | None = None,
                keep: int = OUTPUT_BYTES) -> tuple[int | None, bytes, bool]:
    """Run a command in its own process group, keeping the first `keep` bytes of its output,
    under one deadline for the whole run. EOF on its stdout comes before its exit status exists,
    so the run ends when the command has exited (or at the deadline), not at EOF; then the group
    is killed: leftover children, even one still holding the pipe open, never outlive the run.
    Returns (exit status or None if it could not start, output, timed out)."""
    try:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                start_new_session=True, close_fds=True, env=env)
    except OSError as exc:
        return None, str(exc).encode(), False
    assert proc.stdout is not None
    output = bytearray()
    exited = False
    try:
        exited = _read_until_exit(proc.pid, proc.stdout.fileno(), deadline, output, keep)
    finally:
        # Not reaped yet (a zombie keeps its pid), so the group id is still this command's.
        _kill_group(proc.pid)
        proc.stdout.close()
        try:
            code = proc.wait(timeout=5)
        except subprocess.TimeoutExpired:  # pragma: no cover - stuck in the kernel (D state) despite SIGKILL
            code = -9
    return code, bytes(output), not exited


def _read_until_exit(pid: int, fd: int, deadline: float, output: bytearray, keep: int) -> bool:
    """Collect output until the command exits (True) or the deadline passes (False). The exit is
    watched with a pidfd (or waitid(WNOWAIT) polls) without reaping the child."""
    os.set_blocking(fd, False)
    pidfd = _pidfd(pid)
    poll = 0.0005  # without pidfd: exit polls, growing up to 50 ms
    try:
        with selectors.DefaultSelector() as sel:
            sel.register(fd, selectors.EVENT_READ)
            if pidfd is not None:
                sel.register(pidfd, selectors.EVENT_READ)
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                if pidfd is None and _has_exited(pid):
                    _drain(fd, output, keep)
                    return True
                wait = remaining if pidfd is not None else min(remaining, poll)
                poll = min(poll * 2, 0.05)
                for key, _ in sel.select(wait):
                    if key.fd == pidfd:
                        _drain(fd, output, keep)  # what it wrote before exiting is in the pipe now
                        return True
                    if _read(fd, output, keep) == 0:
                        sel.unregister(fd)  # EOF: now only the exit is awaited
                        poll = 0.0005
    finally:
        if pidfd is not None:
            os.close(pidfd)


def _pidfd(pid: int) -> int | None:
    try:
        return os.pidfd_open(pid)  # type: ignore[attr-defined]  # Linux 5.3+, Python 3.9+
    except (AttributeError, OSError):
        return None


def _has_exited(pid: int) -> bool:
    try:
        return os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
    except ChildProcessError:
        return True


def _read(fd: int, output: bytearray, keep: int) -> int:
    """One read into output (beyond `keep` bytes discarded): bytes read, 0 at EOF, -1 for none yet."""
    try:
        chunk = os.read(fd, 65536)
    except BlockingIOError:
        return -1
    output += chunk[: max(0, keep - len(output))]
    return len(chunk)


def _drain(fd: int, output: bytearray, keep: int) -> None:
    """Whatever the pipe holds now, without waiting for a child that still has it open."""
    for _ in range(64):  # bounded: a leftover child may keep writing
        if _read(fd, output, keep) <= 0:
            return


def _kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


def connect(host: str, port: int, deadline: float) -> socket.socket:
    """A TCP connection within what is left of the deadline, over every address of the host
    (socket.create_connection would give each address the whole timeout)."""
    error: OSError = socket.timeout("timed out")
    for family, kind, proto, _, address in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        sock = socket.socket(family, kind, proto)
        try:
            sock.settimeout(remaining)
            sock.connect(address)
            return sock
        except OSError as exc:
            sock.close()
            error = exc
    raise error


class DeadlineSocket:
    """A connected socket whose every call gets what is left of one deadline as its timeout.
    http.client's timeout is per socket operation: a server sending one byte every 0.3 s would
    keep a probe with a timeout of 1 s waiting forever."""

    def __init__(self, sock: socket.socket, deadline: float) -> None:
        self.sock, self.deadline, self.received = sock, deadline, 0

    def _arm(self) -> None:
        remaining = self.deadline - time.monotonic()
        if remaining <= 0:
            raise socket.timeout("timed out")
        self.sock.settimeout(remaining)

    def recv_into(self, buffer: Any, nbytes: int = 0, flags: int = 0) -> int:
        self._arm()
        n = self.sock.recv_into(buffer, nbytes, flags)
        self.received += n
        return n

    def recv(self, bufsize: int, flags: int = 0) -> bytes:
        self._arm()
        data = self.sock.recv(bufsize, flags)
        self.received += len(data)
        return data

    def sendall(self, data: Any, flags: int = 0) -> None:
        self._arm()  # one timeout for the whole call: CPython's sendall treats it as a deadline
        self.sock.sendall(data, flags)

    def makefile(self, mode: str = "rb", *args: Any, **kwargs: Any) -> io.BufferedReader:
        return io.BufferedReader(socket.SocketIO(self, "rb"))  # type: ignore[arg-type]

    def _decref_socketios(self) -> None:
        pass  # the probe closes the real socket itself, once, at the end

    def close(self) -> None:
        pass  # http.client closes early on "Connection: close", while the response is still read

    def __getattr__(self, name: str) -> Any:
        return getattr(self.sock, name)


class DeadlineConnection(http.client.HTTPConnection):
    """HTTP or HTTPS (with `context`) where connect, TLS handshake, request, headers and body
    share one deadline; `phase` says where a timeout struck."""

    def __init__(self, host: str, port: int | None, deadline: float, context: ssl.SSLContext | None) -> None:
        self.default_port = 443 if context is not None else 80
        super().__init__(host, port or self.default_port)
        self.deadline, self.context, self.phase = deadline, context, "connecting"
        self.raw: socket.socket | None = None
        self.stream: DeadlineSocket | None = None

    def connect(self) -> None:
        self.phase = f"connecting to {self.host}:{self.port}"
        self.raw = connect(self.host, self.port, self.deadline)
        self.raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self.context is not None:
            self.phase = "in the TLS handshake"
            self.raw.settimeout(max(1e-3, self.deadline - time.monotonic()))  # one deadline for the handshake
            self.raw = self.context.wrap_socket(self.raw, server_hostname=self.host)
        self.phase = "sending the request"
        self.sock = self.stream = DeadlineSocket(self.raw, self.deadline)

    def where(self) -> str:
        """Where a timeout struck; nothing while waiting for the first byte of the answer."""
        if self.phase == "answer":
            received = self.stream.received if self.stream is not None else 0
            return f" reading the response headers ({received} bytes in)" if received else ""
        return f" {self.phase}"

    def close_all(self) -> None:
        self.close()
        if self.raw is not None:
            self.raw.close()


def scan_log(path: str, positions: dict[str, tuple[int, int]], on_line: Callable[[str], None],
             deadline: float, budget: int = LOG_READ_BYTES) -> int:
    """Pass each complete line appended to a log file since the last call to on_line (the first
    call only notes where the file ends; a partial last line waits for the next call). Returns
    how many new bytes were skipped: those beyond `budget` or the deadline. positions[path] is
    (inode, offset) of the next byte to read; it survives supervisord's rotation, which renames
    the file to path.1 right after writing the line that crossed maxbytes: the file read last
    time is found again by its inode among path.1..N and read to its end before the new one."""
    sources: list[tuple[Any, int]] = []  # (open file, offset to start at), oldest first
    try:
        current = open(path, "rb")  # noqa: SIM115  # closed below with the rotated ones
    except OSError:
        return 0
    try:
        inode = os.fstat(current.fileno()).st_ino
        known = positions.get(path)
        if known is None:
            positions[path] = (inode, current.seek(0, os.SEEK_END))
            return 0
        if known[0] == inode:
            sources.append((current, known[1]))
        else:
            sources += _rotated_since(path, known, inode)
            sources.append((current, 0))  # truncated in place, or rotated and the old file is gone
        return _scan(path, positions, sources, on_line, deadline, budget)
    finally:
        for f, _ in sources or [(current, 0)]:
            f.close()


def _rotated_since(path: str, known: tuple[int, int], current: int) -> list[tuple[Any, int]]:
    """The file read last time (from its offset) and those rotated after it (from 0), oldest
    first, found by inode among path.1..N; [] when it is gone."""
    newer: list[Any] = []
    for n in range(1, MAX_ROTATED + 1):
        try:
            f = open(f"{path}.{n}", "rb")  # noqa: SIM115
        except OSError:
            break
        inode = os.fstat(f.fileno()).st_ino
        if inode == known[0]:
            return [(f, known[1]), *((g, 0) for g in reversed(newer))]
        if inode == current:  # rotated again since we opened path: already in hand
            f.close()
            continue
        newer.append(f)
    for f in newer:
        f.close()
    return []


def _scan(path: str, positions: dict[str, tuple[int, int]], sources: list[tuple[Any, int]],
          on_line: Callable[[str], None], deadline: float, budget: int) -> int:
    stats = [os.fstat(f.fileno()) for f, _ in sources]
    starts = [start if start <= st.st_size else 0 for (_, start), st in zip(sources, stats)]  # truncated: from 0
    left = sum(st.st_size for st in stats) - sum(starts)  # new bytes not read yet
    pending = b""  # the start of a line not complete yet
    position = (stats[0].st_ino, starts[0])
    for (f, _), st, at in zip(sources, stats, starts):
        f.seek(at)
        while at < st.st_size:
            if budget <= 0 or time.monotonic() > deadline:  # skip to the end, and say how much
                positions[path] = (stats[-1].st_ino, stats[-1].st_size)
                return left + len(pending)
            chunk = f.read(min(LOG_CHUNK, st.st_size - at, budget))
            if not chunk:
                break
            at, budget, left = at + len(chunk), budget - len(chunk), left - len(chunk)
            data = pending + chunk
            cut = data.rfind(b"\n") + 1
            if not cut and len(data) >= LONG_LINE:
                cut = len(data)
            if cut:
                for line in clean(data[:cut], max_line=500).splitlines():
                    on_line(line)
                position = (st.st_ino, at - (len(data) - cut))
            pending = data[cut:]
    positions[path] = position
    return 0
