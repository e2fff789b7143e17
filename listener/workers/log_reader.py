"""One reader of supervisord's logs, for alerts (why did it die?) and for log probes.

The listener runs on supervisord's own host, so it reads the log files themselves (paths from
getProcessInfo's stdout_logfile/stderr_logfile): bounded in bytes, across a rotation, decoded
with replacement and cleaned (text.clean). XML-RPC is only the fallback, because supervisord's
tail and readLog answer HTTP 500 as soon as the bytes they return are not valid UTF-8 (one bad
byte in the log, or a multi-byte character cut by the offset) and copy control characters
into their XML unescaped.

supervisord's own main log says how each process exited ("exited: feed (exit status 3; not
expected)"): read with readLog, or, when that fails, from the file supervisord has open.

A log file is evidence only while it is the file supervisord writes (log_evidence): one deleted,
moved away or replaced under it (supervisord writes on to the file it has open) says nothing
about the program, so a probe judges nothing from it instead of calling the program silent.
"""

from __future__ import annotations

import datetime
import logging
import os
import re
import stat
import threading
import time
import xmlrpc.client
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from ...rpc import SupervisorClient, SupervisorUnavailable, snapshot_from_info
from ...text import clean, clean_name
from ..rules.models import ProcessSnapshot
from ..rules.process_answers import RAN_AGAIN

log = logging.getLogger("lookout.logs")

TAIL_BYTES = 16384
MAIN_LOG_BYTES = 65536
OPEN_FILES_MAX_AGE = 1.0  # supervisord's open files are listed at most once a second for all probes

FileId = tuple[int, int]  # (st_dev, st_ino): a file, whatever its name now


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
_SPAWN_LINE = re.compile(r"spawned: '(?P<name>[^ ]+)' with pid (?P<pid>\d+)$")
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


@dataclass(frozen=True)
class Run:
    """One run of a process as supervisord's main log tells it: its pid (from its "spawned" line;
    None when that line is older than the tail) and how it ended (None: not ended in the log)."""

    name: str
    pid: int | None
    exit: ExitInfo | None


def runs(main_log: str, names: set[str] | None = None) -> list[Run]:
    """Every run in the log, in order, with how long each lasted by supervisord's own clock:
    events reach the listener late when they waited in supervisord's buffer, the log's times do not.
    The pid ties an exit to the run an event named (a later run's exit is not this one's)."""
    found: list[Run] = []
    running: dict[str, tuple[int, int, float | None]] = {}  # name -> (index in found, pid, spawn time)
    for line in main_log.splitlines():
        m = _SPAWN_LINE.search(line)
        if m is not None:
            name = clean_name(m.group("name"))
            if names is None or name in names:
                running[name] = (len(found), int(m.group("pid")[:19]), _stamp(line))
                found.append(Run(name, running[name][1], None))
            continue
        m = _EXIT_LINE.search(line)
        if m is None:
            continue
        name = clean_name(m.group("name"))  # as the records have it
        if names is not None and name not in names:
            continue
        index, pid, start = running.pop(name, (None, None, None))
        end = _stamp(line)
        ran = end - start if start is not None and end is not None and 0 <= end - start < 400 * 86400 else None
        if m.group("code") is not None:
            info = ExitInfo(int(m.group("code")[:6]), f"exit status {m.group('code')[:6]}", ran)
        else:
            info = ExitInfo(-1, f"killed by {m.group('sig')[:20]}{m.group('core') or ''}", ran)
        if index is None:
            found.append(Run(name, None, info))
        else:
            found[index] = Run(name, pid, info)
    return found


def last_exits(main_log: str, names: set[str] | None = None) -> dict[str, ExitInfo]:
    """The last exit of each process named in supervisord's main log (names without group)."""
    return {run.name: run.exit for run in runs(main_log, names) if run.exit is not None}


def exit_of_run(found: list[Run], name: str, pid: int | None) -> ExitInfo | str | None:
    """The exit of the run `pid` of `name`, never another run's. Without a pid (BACKOFF events
    carry none), the last exit only while no later run has started, else RAN_AGAIN. None: the
    log's tail does not reach back to that run."""
    mine = [run for run in found if run.name == name]
    if pid is not None:
        return next((run.exit for run in reversed(mine) if run.pid == pid and run.exit is not None), None)
    if not mine:
        return None
    return mine[-1].exit if mine[-1].exit is not None else RAN_AGAIN


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


class EvidenceGone(Exception):
    """The file at a log path is not the one being written (deleted, moved away or replaced): a
    probe judges nothing from it. The message says what happened, for `lookout status`."""


class OpenFiles:
    """The regular files supervisord has open, by FileId, from /proc/<pid>/fd: whether the file
    at a log path is the one it writes to. Listed (a stat of each fd, never an open) at most once
    per max_age for all probes; None where /proc cannot be read (another user, not Linux)."""

    def __init__(self, pid: Callable[[], int | None], max_age: float = OPEN_FILES_MAX_AGE) -> None:
        self.pid, self.max_age = pid, max_age
        self._lock = threading.Lock()
        self._listed: tuple[int, float, dict[FileId, str] | None] | None = None  # pid, monotonic time, files

    def files(self, fresh: bool = False) -> dict[FileId, str] | None:
        """FileId -> its fd's path (/proc/<pid>/fd/<n>); fresh: listed again unless just listed."""
        pid = self.pid()
        if not pid:
            return None
        with self._lock:
            listed = self._listed
        age = time.monotonic() - listed[1] if listed is not None and listed[0] == pid else None
        if age is not None and age < (self.max_age / 10 if fresh else self.max_age):
            return listed[2]  # type: ignore[index]
        files = _open_files(pid)
        with self._lock:
            self._listed = (pid, time.monotonic(), files)
        return files

    def evidence(self, path: str, what: str, seen: dict[str, FileId]) -> os.stat_result:
        """The file at `path` (`what`: "stdout log") when it is the one supervisord has open, else
        EvidenceGone. `seen` (the probe's memory for this process) holds the file found there last
        time: it tells deleted from moved, and stands in where /proc cannot be read (a new file is
        then taken once something was written to it: supervisord's rotation, not logrotate's
        `create`)."""
        before = seen.get(path)
        try:
            st = os.stat(path)
        except FileNotFoundError:
            raise EvidenceGone(self._gone(path, what, before)) from None
        if not stat.S_ISREG(st.st_mode):
            return st  # /dev/stdout and the like: nothing to compare
        here = (st.st_dev, st.st_ino)
        files = self.files()
        if files is not None and here not in files:
            files = self.files(fresh=True)  # opened since the listing (a rotation, a restart)
        if files is None:
            if before is not None and before != here and st.st_size == 0:
                raise EvidenceGone(f"{what} {path} replaced by a new, empty file")
        elif here not in files:
            where = self._where(before)
            raise EvidenceGone(f"{what} {path} replaced: supervisord writes "
                               + (f"on to {where}" if where else "to another file"))
        seen[path] = here
        return st

    def _gone(self, path: str, what: str, before: FileId | None) -> str:
        where = self._where(before)
        if where is None:
            return f"{what} {path} gone (deleted or moved)"
        if where.endswith(" (deleted)"):
            return f"{what} {path} deleted: supervisord writes on to the deleted file"
        return f"{what} {path} moved to {where}: supervisord writes on to it there"

    def _where(self, file: FileId | None) -> str | None:
        """Where supervisord's open file is now: a path, or the old one with " (deleted)"."""
        files = self.files(fresh=True) if file is not None else None
        if not files or file not in files:
            return None
        try:
            return clean(os.readlink(files[file]), max_line=200)
        except OSError:
            return None


def _open_files(pid: int) -> dict[FileId, str] | None:
    fd_dir = f"/proc/{pid}/fd"
    try:
        fds = os.listdir(fd_dir)
    except OSError:
        return None
    files: dict[FileId, str] = {}
    for fd in fds:
        link = f"{fd_dir}/{fd}"
        try:
            st = os.stat(link)  # the open file itself, also when unlinked
        except OSError:
            continue  # closed meanwhile
        if stat.S_ISREG(st.st_mode):
            files[(st.st_dev, st.st_ino)] = link
    return files


def _by_name(namespecs: Iterable[str]) -> dict[str, list[str]]:
    """Namespecs by process name: the main log names processes only."""
    by_name: dict[str, list[str]] = {}
    for ns in namespecs:
        by_name.setdefault(ns.split(":", 1)[-1], []).append(ns)
    return by_name


class ProcessLogs:
    """Log tails and exit statuses for alerts and probes; safe to use from several threads."""

    def __init__(self, client: SupervisorClient, supervisord_pid: int | None = None) -> None:
        self.client = client
        self.supervisord_pid = supervisord_pid
        self.open_files = OpenFiles(lambda: self.supervisord_pid)
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
        by_name = _by_name(namespecs)
        return {ns: info for name, info in last_exits(self._main_log_text(), set(by_name)).items()
                for ns in by_name[name]}

    def exits_of_runs(self, wanted: Iterable[tuple[str, int | None]]) -> dict[tuple[str, int | None], ExitInfo | str]:
        """(namespec, pid) -> the exit of that run (exit_of_run), or why it cannot be known;
        runs the tail does not reach back to are left out."""
        wanted = set(wanted)
        by_name = _by_name(ns for ns, _ in wanted)
        found = runs(self._main_log_text(), set(by_name))
        answers = {(ns, pid): exit_of_run(found, ns.split(":", 1)[-1], pid) for ns, pid in wanted}
        return {key: answer for key, answer in answers.items() if answer is not None}

    def _main_log_text(self) -> str:
        try:
            text = self.client.read_main_log(MAIN_LOG_BYTES)
        except (SupervisorUnavailable, xmlrpc.client.Fault) as exc:
            data = self._read_main_log_file()
            if data is None:
                raise SupervisorUnavailable(f"supervisord's main log is unreadable: {exc}") from None
            text = data.decode("utf-8", "replace")
        if not text:  # it always holds its own start-up lines, unless it is not a file at all
            raise SupervisorUnavailable("supervisord's main log is empty: is its logfile /dev/stdout or syslog?")
        return text

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
