"""One reader of supervisord's logs, for alerts (why did it die?) and for log probes.

The listener runs on supervisord's own host, so it reads the log files themselves (paths from
getProcessInfo's stdout_logfile/stderr_logfile): bounded in bytes, across a rotation, decoded
with replacement and cleaned (text.clean). XML-RPC is only the fallback, because supervisord's
tail and readLog answer HTTP 500 as soon as the bytes they return are not valid UTF-8 (one bad
byte in the log, or a multi-byte character cut by the offset) and copy control characters
into their XML unescaped.

supervisord's own main log says how each process exited ("exited: feed (exit status 3; not
expected)"): read with readLog, or, when that fails, from the file supervisord has open.
"""

from __future__ import annotations

import datetime
import logging
import os
import re
import threading
import xmlrpc.client
from collections.abc import Iterable
from dataclasses import dataclass

from .rpc import SupervisorClient, SupervisorUnavailable, snapshot_from_info
from .rules.models import ProcessSnapshot
from .text import clean, clean_name

log = logging.getLogger("lookout.logs")

TAIL_BYTES = 16384
MAIN_LOG_BYTES = 65536


@dataclass(frozen=True)
class ExitInfo:
    status: int  # -1 for a signal, as supervisord reports it
    text: str  # "exit status 3" or "killed by SIGKILL"
    ran: float | None = None  # seconds from its "spawned" line to its exit line, when both are in the log


# supervisord's main log line for every exit (process.py, Subprocess.finish):
#   "exited: NAME (exit status 3; not expected)" / "(terminated by SIGKILL; not expected)"
# and for every spawn: "spawned: 'NAME' with pid 4242".
# Names never contain a space, but may contain tabs and other Unicode spaces.
_EXIT_LINE = re.compile(
    r"exited: (?P<name>[^ ]+) \((?P<how>exit status (?P<code>\d+)"
    r"|terminated by (?P<sig>[^\s;)]+)(?P<core> \(core dumped\))?)"
)
_SPAWN_LINE = re.compile(r"spawned: '(?P<name>[^ ]+)' with pid \d+$")
_STAMP = re.compile(r"(\d{4})-(\d\d)-(\d\d) (\d\d):(\d\d):(\d\d),(\d{3}) ")
_MAIN_LOG_LINE = re.compile(rb"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (?:CRIT|ERRO|WARN|INFO|DEBG|TRAC|BLAT) ", re.M)


def _stamp(line: str) -> float | None:
    """A main-log line's local time as seconds: only differences are used, so no time zone."""
    m = _STAMP.match(line)
    if m is None:
        return None
    y, mo, d, h, mi, sec, ms = (int(g) for g in m.groups())
    try:
        day = datetime.date(y, mo, d).toordinal()
    except ValueError:
        return None
    return day * 86400.0 + h * 3600 + mi * 60 + sec + ms / 1000


def last_exits(main_log: str, names: set[str] | None = None) -> dict[str, ExitInfo]:
    """The last exit of each process named in supervisord's main log (names without group),
    with how long that run lasted by supervisord's own clock: events reach the listener late
    when they waited in supervisord's buffer, the log's times do not."""
    found: dict[str, ExitInfo] = {}
    spawned: dict[str, float | None] = {}
    for line in main_log.splitlines():
        m = _SPAWN_LINE.search(line)
        if m is not None:
            spawned[clean_name(m.group("name"))] = _stamp(line)
            continue
        m = _EXIT_LINE.search(line)
        if m is None:
            continue
        name = clean_name(m.group("name"))  # as the records have it
        if names is not None and name not in names:
            continue
        start, end = spawned.pop(name, None), _stamp(line)
        ran = end - start if start is not None and end is not None and 0 <= end - start < 400 * 86400 else None
        if m.group("code") is not None:
            found[name] = ExitInfo(int(m.group("code")[:6]), f"exit status {m.group('code')[:6]}", ran)
        else:
            found[name] = ExitInfo(-1, f"killed by {m.group('sig')[:20]}{m.group('core') or ''}", ran)
    return found


def read_tail(path: str, max_bytes: int) -> bytes | None:
    """The last `max_bytes` of a log file, continued from its rotated predecessor (`path.1`,
    supervisord's naming) when the file was just rotated; None when it cannot be read. A
    first line cut in the middle is dropped."""
    try:
        with open(path, "rb") as f:
            size = f.seek(0, os.SEEK_END)
            f.seek(max(0, size - max_bytes))
            data = f.read(max_bytes)
    except OSError:
        return None
    complete = size <= max_bytes
    if complete and size < max_bytes:
        try:
            with open(f"{path}.1", "rb") as f:
                older = f.seek(0, os.SEEK_END)
                want = max_bytes - len(data)
                f.seek(max(0, older - want))
                data = f.read(want) + data
                complete = older <= want
        except OSError:
            pass
    if not complete:
        nl = data.find(b"\n")
        data = data[nl + 1 :] if 0 <= nl < len(data) - 1 else data
    return data


class ProcessLogs:
    """Log tails and exit statuses for alerts and probes; safe to use from several threads."""

    def __init__(self, client: SupervisorClient, supervisord_pid: int | None = None) -> None:
        self.client = client
        self.supervisord_pid = supervisord_pid
        self._paths: dict[str, tuple[str, str]] = {}  # namespec -> (stdout, stderr) log files
        self._main_log: str | None = None
        self._lock = threading.Lock()

    def remember(self, snapshots: Iterable[ProcessSnapshot]) -> None:
        """Log paths change with a reload (AUTO names): every reconcile refreshes them."""
        fresh = {s.namespec: (s.stdout_logfile, s.stderr_logfile) for s in snapshots}
        with self._lock:
            self._paths = fresh

    def paths(self, namespec: str) -> tuple[str, str]:
        """(stdout, stderr) log files of a process; "" where it does not log to a file."""
        with self._lock:
            known = self._paths.get(namespec)
        if known is not None:
            return known
        snap = snapshot_from_info(self.client.call("supervisor.getProcessInfo", namespec))
        if snap is None:
            raise SupervisorUnavailable("malformed answer to getProcessInfo")
        found = (snap.stdout_logfile, snap.stderr_logfile)
        with self._lock:
            self._paths[namespec] = found
        return found

    # ---- tails --------------------------------------------------------------------------

    def tail(self, namespec: str, max_bytes: int = TAIL_BYTES) -> tuple[str, str]:
        """(recent output, why it is unavailable): stderr, or stdout when stderr is redirected,
        empty or not logged. From the files; over XML-RPC only when they cannot be read."""
        problem = ""
        try:
            stdout, stderr = self.paths(namespec)
        except (SupervisorUnavailable, xmlrpc.client.Fault) as exc:
            stdout = stderr = ""
            problem = str(exc)
        unreadable = False
        for path in (stderr, stdout):
            if not path:
                continue
            data = read_tail(path, max_bytes)
            if data is None:
                unreadable = True
            elif data.strip():
                return clean(data), ""
        if not unreadable and (stdout or stderr):
            return "", ""  # the files exist and are empty: nothing was logged
        return self._tail_over_rpc(namespec, max_bytes, problem)

    def _tail_over_rpc(self, namespec: str, max_bytes: int, problem: str) -> tuple[str, str]:
        for method in ("supervisor.tailProcessStderrLog", "supervisor.tailProcessStdoutLog"):
            try:
                answer = self.client.call(method, namespec, 0, max_bytes)
            except xmlrpc.client.Fault as exc:
                problem = problem or exc.faultString
                continue
            except SupervisorUnavailable as exc:
                return "", str(exc)
            text = answer[0] if isinstance(answer, list) and answer and isinstance(answer[0], str) else ""
            if text.strip():
                return clean(text), ""
        return "", problem

    # ---- exit statuses ------------------------------------------------------------------

    def recent_exits(self, namespecs: Iterable[str]) -> dict[str, ExitInfo]:
        """The last exit of each process, from the tail of supervisord's main log (events do not
        carry exit statuses, and getProcessInfo's is reset by the respawn)."""
        by_name: dict[str, list[str]] = {}
        for ns in namespecs:
            by_name.setdefault(ns.split(":", 1)[-1], []).append(ns)  # the log names processes only
        try:
            text = self.client.read_main_log(MAIN_LOG_BYTES)
        except (SupervisorUnavailable, xmlrpc.client.Fault) as exc:
            data = self._read_main_log_file()
            if data is None:
                raise SupervisorUnavailable(f"supervisord's main log is unreadable: {exc}") from None
            text = data.decode("utf-8", "replace")
        if not text:  # it always holds its own start-up lines, unless it is not a file at all
            raise SupervisorUnavailable("supervisord's main log is empty: is its logfile /dev/stdout or syslog?")
        return {ns: info for name, info in last_exits(text, set(by_name)).items() for ns in by_name[name]}

    def _read_main_log_file(self) -> bytes | None:
        path = self._main_log or self._find_main_log()
        data = read_tail(path, MAIN_LOG_BYTES) if path else None
        if data is None:
            self._main_log = None
        return data

    def _find_main_log(self) -> str | None:
        """supervisord keeps its main log open: among its open regular files, the one written
        in its own log format. Linux only; None elsewhere or when we may not look."""
        pid = self.supervisord_pid
        if not pid:
            return None
        fd_dir = f"/proc/{pid}/fd"
        try:
            targets = {os.readlink(f"{fd_dir}/{fd}") for fd in os.listdir(fd_dir)}
        except OSError:
            return None
        with self._lock:
            child_logs = {p for pair in self._paths.values() for p in pair if p}
        for path in sorted(targets - child_logs):
            if not path.startswith("/") or not os.path.isfile(path):
                continue
            head = read_tail(path, 4096)
            if head and _MAIN_LOG_LINE.search(head) and (b" spawned: '" in head or b" exited: " in head
                                                         or b" supervisord started" in head):
                self._main_log = path
                log.info("reading supervisord's main log from %s (readLog failed)", path)
                return path
        return None
