"""One function per probe kind. Each returns a ProbeResult and never raises: a target that does
not exist, a refused connection, a timeout or a bug in a check is a failed probe, not a crash.

Details are written for the alert: "HTTP 503 (body: ...)", "timed out after 2s",
"connection refused", "heartbeat 95s old (max 30s)", "RSS 2.3 GB > 2 GB", "no log output for 2m".
"""

from __future__ import annotations

import contextlib
import http.client
import os
import re
import selectors
import signal
import socket
import ssl
import subprocess
import time
from collections import deque
from typing import Any
from urllib.parse import urlsplit

from ..config import ProbeSpec, format_duration, format_size
from ..logs import ProcessLogs
from ..procfs import ProcessTable
from ..rules.models import ProbeResult
from ..text import clean
from .target import ProbeTarget

OUTPUT_BYTES = 4096  # of an exec probe's output, into the alert
BODY_BYTES = 65536  # of an HTTP answer, for the body regex
LOG_READ_BYTES = 1 << 20  # new log bytes a log_pattern run reads at most
EVIDENCE_LINES = 10


class Check:
    """Runs probes; holds what stateful kinds remember between runs (cpu, log_pattern)."""

    def __init__(self, logs: ProcessLogs | None, table: ProcessTable | None = None,
                 clock=time.time) -> None:  # noqa: ANN001
        self.logs = logs
        self.table = table or ProcessTable(max_age=0.5)
        self.clock = clock

    def run(self, spec: ProbeSpec, target: ProbeTarget, memory: dict[str, Any]) -> ProbeResult:
        started, t0 = self.clock(), time.monotonic()
        try:
            ok, detail, evidence = getattr(self, f"_{spec.kind}")(spec, target, memory, t0 + spec.timeout)
        except Exception as exc:  # a probe must fail alone, never take the scheduler with it
            ok, detail, evidence = False, f"probe error: {type(exc).__name__}: {clean(str(exc))[:200]}", ""
        return ProbeResult(target.namespec, spec.name, ok, detail, started, time.monotonic() - t0, evidence,
                           target.pid)

    # ---- network --------------------------------------------------------------------------

    def _http(self, spec: ProbeSpec, target: ProbeTarget, memory: dict, deadline: float) -> tuple[bool, str, str]:
        p = spec.params
        url = target.fill(p["url"], spec)
        parts = urlsplit(url)
        if parts.scheme == "https":
            context = ssl._create_unverified_context() if p["insecure"] else ssl.create_default_context()
            conn: http.client.HTTPConnection = http.client.HTTPSConnection(
                parts.hostname or "127.0.0.1", parts.port, timeout=spec.timeout, context=context)
        else:
            conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=spec.timeout)
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        headers = {"User-Agent": "lookout-probe", "Connection": "close", **dict(p["headers"])}
        try:
            conn.request(p["method"], path, headers=headers)
            response = conn.getresponse()
            body = b""
            while len(body) < BODY_BYTES and p["method"] != "HEAD":
                if time.monotonic() > deadline:
                    raise TimeoutError
                chunk = response.read1(BODY_BYTES - len(body))
                if not chunk:
                    break
                body += chunk
        except (TimeoutError, socket.timeout):
            return False, f"timed out after {format_duration(spec.timeout)}", ""
        except OSError as exc:
            return False, _os_error(exc), ""
        except http.client.HTTPException as exc:
            return False, f"bad HTTP answer: {type(exc).__name__}", ""
        finally:
            conn.close()
        status = response.status
        text = clean(body.decode("utf-8", "replace"), max_line=200)
        if not any(lo <= status <= hi for lo, hi in p["status"]):
            return False, f"HTTP {status}" + (f" (body: {_short(text)})" if text.strip() else ""), ""
        if p["body"] and not re.search(p["body"], text):
            return False, f"HTTP {status} but the body does not match /{p['body']}/ (body: {_short(text)})", ""
        return True, f"HTTP {status}", ""

    def _tcp(self, spec: ProbeSpec, target: ProbeTarget, memory: dict, deadline: float) -> tuple[bool, str, str]:
        address = target.fill(spec.params["address"], spec)
        host, _, port = address.rpartition(":")
        try:
            sock = socket.create_connection((host.strip("[]"), int(port)), timeout=spec.timeout)
        except (TimeoutError, socket.timeout):
            return False, f"timed out after {format_duration(spec.timeout)} connecting to {address}", ""
        except (OSError, ValueError) as exc:
            return False, f"{_os_error(exc)} ({address})", ""
        try:
            sock.shutdown(socket.SHUT_RDWR)  # a clean close, not a reset that looks like an error
        except OSError:
            pass
        finally:
            sock.close()
        return True, f"connected to {address}", ""

    # ---- commands -------------------------------------------------------------------------

    def _exec(self, spec: ProbeSpec, target: ProbeTarget, memory: dict, deadline: float) -> tuple[bool, str, str]:
        argv = [target.fill(a, spec) for a in spec.params["argv"]]
        code, output, timed_out = run_bounded(argv, deadline, _probe_env(target))
        evidence = clean(output)
        if timed_out:
            return False, f"timed out after {format_duration(spec.timeout)} (killed with its process group)", evidence
        if code is None:
            return False, f"cannot run {argv[0]}: {output.decode(errors='replace')}", ""
        if code != 0:
            last = evidence.strip().splitlines()[-1:] if evidence.strip() else []
            return False, f"exit status {code}" + (f": {_short(last[0])}" if last else ""), evidence
        return True, "exit status 0", evidence

    # ---- files ----------------------------------------------------------------------------

    def _heartbeat(self, spec: ProbeSpec, target: ProbeTarget, memory: dict, deadline: float) -> tuple[bool, str, str]:
        path = target.fill(spec.params["path"], spec)
        max_age = spec.params["max_age"]
        try:
            age = self.clock() - os.stat(path).st_mtime
        except FileNotFoundError:
            return False, f"heartbeat file {path} does not exist", ""
        except OSError as exc:
            return False, f"heartbeat file {path}: {exc.strerror}", ""
        text = f"heartbeat {format_duration(max(0.0, age))} old (max {format_duration(max_age)})"
        return age <= max_age, text, ""

    def _log_paths(self, target: ProbeTarget) -> list[str]:
        if self.logs is None:
            return []
        return [p for p in self.logs.paths(target.namespec) if p]

    def _log_silence(self, spec: ProbeSpec, target: ProbeTarget, memory: dict,
                     deadline: float) -> tuple[bool, str, str]:
        paths = self._log_paths(target)
        if not paths:
            return False, "no log file to watch (stdout_logfile and stderr_logfile are NONE)", ""
        newest = target.running_since  # a fresh start counts as output
        for path in paths:
            try:
                newest = max(newest, os.stat(path).st_mtime)
            except OSError:
                continue
        silent = self.clock() - newest
        limit = spec.params["silence"]
        if silent > limit:
            return False, f"no log output for {format_duration(silent)} (max {format_duration(limit)})", ""
        return True, f"last log output {format_duration(max(0.0, silent))} ago", ""

    def _log_pattern(self, spec: ProbeSpec, target: ProbeTarget, memory: dict,
                     deadline: float) -> tuple[bool, str, str]:
        p, now = spec.params, self.clock()
        pattern = re.compile(p["regex"])
        matches: deque = memory.setdefault("matches", deque(maxlen=10_000))
        positions: dict = memory.setdefault("positions", {})
        for path in self._log_paths(target):
            for line in _new_lines(path, positions):
                if pattern.search(line):
                    matches.append((now, line))
        while matches and matches[0][0] < now - p["within"]:
            matches.popleft()
        lines = [line for _, line in list(matches)[-EVIDENCE_LINES:]]
        what = f"{len(matches)} log line(s) matching /{p['regex']}/ within {format_duration(p['within'])}"
        return len(matches) < p["count"], what, "\n".join(lines)

    # ---- resources --------------------------------------------------------------------------

    def _usage(self, target: ProbeTarget):  # noqa: ANN202
        usage = self.table.usage([target.pid]).get(target.pid)
        if usage is None:
            raise ProcessLookupError(f"process {target.pid} is gone")
        return usage

    def _memory(self, spec: ProbeSpec, target: ProbeTarget, memory: dict, deadline: float) -> tuple[bool, str, str]:
        rss, limit = self._usage(target).rss_bytes, spec.params["max_rss"]
        if rss > limit:
            return False, f"RSS {format_size(rss)} > {format_size(limit)}", ""
        return True, f"RSS {format_size(rss)}", ""

    def _cpu(self, spec: ProbeSpec, target: ProbeTarget, memory: dict, deadline: float) -> tuple[bool, str, str]:
        cpu, now = self._usage(target).cpu_seconds, time.monotonic()
        previous = memory.get("cpu")
        memory["cpu"] = (now, cpu, target.pid)
        if previous is None or previous[2] != target.pid or now <= previous[0]:
            return True, "CPU: first sample", ""
        percent = 100.0 * (cpu - previous[1]) / (now - previous[0])
        limit = spec.params["max_percent"]
        if percent > limit:
            return False, f"CPU {percent:.0f}% > {limit:g}%", ""
        return True, f"CPU {percent:.0f}%", ""

    def _fds(self, spec: ProbeSpec, target: ProbeTarget, memory: dict, deadline: float) -> tuple[bool, str, str]:
        fds, limit = self._usage(target).open_fds, spec.params["max"]
        return fds <= limit, f"{fds} open file descriptors" + (f" > {limit}" if fds > limit else ""), ""


def _short(text: str, limit: int = 120) -> str:
    text = " ".join(text.split())
    return repr(text if len(text) <= limit else text[:limit] + "…")


def _os_error(exc: BaseException) -> str:
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, ConnectionResetError):
        return "connection reset"
    if isinstance(exc, socket.gaierror):
        return f"cannot resolve the host ({exc.strerror})"
    return clean(getattr(exc, "strerror", None) or str(exc) or type(exc).__name__)


def _probe_env(target: ProbeTarget) -> dict[str, str]:
    return {**os.environ, "LOOKOUT_GROUP": target.group, "LOOKOUT_NAME": target.name, "LOOKOUT_PID": str(target.pid)}


def run_bounded(argv: list[str], deadline: float, env: dict[str, str] | None = None,
                keep: int = OUTPUT_BYTES) -> tuple[int | None, bytes, bool]:
    """Run a command in its own process group; keep the first `keep` bytes of its output; at the
    deadline kill the whole group. Afterwards kill the group anyway: nothing is left behind.
    Returns (exit status or None if it could not start, output, timed out)."""
    try:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                start_new_session=True, close_fds=True, env=env)
    except OSError as exc:
        return None, str(exc).encode(), False
    output, timed_out = b"", False
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    os.set_blocking(fd, False)
    with selectors.DefaultSelector() as sel:
        sel.register(fd, selectors.EVENT_READ)
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                timed_out = True
                break
            if not sel.select(min(remaining, 0.05)):
                if proc.poll() is not None:
                    break  # exited; a grandchild may still hold the pipe open
                continue
            try:
                chunk = os.read(fd, 65536)
            except BlockingIOError:
                continue
            if not chunk:
                break
            if len(output) < keep:
                output += chunk[: keep - len(output)]
    _kill_group(proc.pid)
    proc.stdout.close()
    try:
        code = proc.wait(timeout=5)
    except subprocess.TimeoutExpired:  # pragma: no cover - SIGKILL cannot be ignored
        code = -9
    return code, output, timed_out


def _kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


def _new_lines(path: str, positions: dict[str, tuple[int, int]]) -> list[str]:
    """Complete lines appended to a log file since the last call (from its end on the first call);
    a rotation (another inode, or a shorter file) starts the new file from its beginning."""
    try:
        with open(path, "rb") as f:
            st = os.fstat(f.fileno())
            known = positions.get(path)
            if known is None:
                positions[path] = (st.st_ino, st.st_size)
                return []
            inode, offset = known
            if inode != st.st_ino or st.st_size < offset:
                offset = 0
            if st.st_size - offset > LOG_READ_BYTES:
                offset = st.st_size - LOG_READ_BYTES
            f.seek(offset)
            data = f.read(st.st_size - offset)
    except OSError:
        return []
    end = data.rfind(b"\n") + 1  # a partial last line waits for the next run
    positions[path] = (st.st_ino, offset + end)
    return clean(data[:end], max_line=500).splitlines()
