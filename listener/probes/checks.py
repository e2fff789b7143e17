"""One function per probe kind. Each returns a ProbeResult and never raises: a target that does
not exist, a refused connection, a timeout or a bug in a check is a failed probe, not a crash.

Details are written for the alert, and a failure names what it reached for (which endpoint of
a program with several failed is the first question): "GET http://127.0.0.1:8080/healthz: HTTP 503
(body: ...)", "tcp 127.0.0.1:5432: connection refused", "check_feed.sh: timed out after 2s ...",
"heartbeat 95s old (max 30s)", "RSS 2.3 GB > 2 GB", "no log output for 2m". A URL is shown without
its user-info and query (they may hold credentials).

A check that cannot read its evidence judges nothing (a result with judged=False): a log file
deleted, moved or replaced under supervisord (which writes on to the file it has open), or a
heartbeat file deleted after the program had written it. Neither "silent" nor "no errors".
"""

from __future__ import annotations

import http.client
import os
import re
import signal
import socket
import ssl
import time
from collections import deque
from typing import Any
from urllib.parse import urlsplit

from ...bounded import LOG_READ_BYTES, OUTPUT_BYTES, USER_AGENT, DeadlineConnection, connect, run_bounded, scan_log
from ...config import ProbeSpec, format_duration, format_size
from ...config.probes import LOG_PATTERN_KEPT
from ...procfs import ProcessTable
from ...text import clean
from ..rules.models import ProbeResult
from ..workers.log_reader import EvidenceGone, FileId, OpenFiles, ProcessLogs
from .target import ProbeTarget

__all__ = ["BODY_BYTES", "LOG_READ_BYTES", "OUTPUT_BYTES", "Check"]

BODY_BYTES = 65536  # of an HTTP answer, for the body regex
SHELLS = frozenset({"sh", "bash", "dash", "zsh", "ksh", "ash"})
EVIDENCE_LINES = 10


class Check:
    """Runs probes; holds what stateful kinds remember between runs (cpu, log_pattern)."""

    def __init__(self, logs: ProcessLogs | None, table: ProcessTable | None = None,
                 clock=time.time, open_files: OpenFiles | None = None) -> None:  # noqa: ANN001
        self.logs = logs
        self.table = table or ProcessTable(max_age=0.5)
        self.clock = clock  # the wall clock, for files' times; results are started on the monotonic clock
        # Which log file supervisord writes (its /proc/<pid>/fd); without its pid, the probes' memory.
        self.open_files = open_files or (logs.open_files if isinstance(logs, ProcessLogs) else OpenFiles(lambda: None))

    def run(self, spec: ProbeSpec, target: ProbeTarget, memory: dict[str, Any]) -> ProbeResult:
        started = t0 = time.monotonic()  # (the loop turns it into its own time)
        judged = True
        try:
            ok, detail, evidence = getattr(self, f"_{spec.kind}")(spec, target, memory, t0 + spec.timeout)
        except EvidenceGone as exc:
            ok, detail, evidence, judged = False, str(exc), "", False
        except Exception as exc:  # a probe must fail alone, never take the scheduler with it
            ok, detail, evidence = False, f"probe error: {type(exc).__name__}: {clean(str(exc))[:200]}", ""
        return ProbeResult(target.namespec, spec.name, ok, detail, started, time.monotonic() - t0, evidence,
                           target.pid, judged)

    # ---- network --------------------------------------------------------------------------

    def _http(self, spec: ProbeSpec, target: ProbeTarget, memory: dict, deadline: float) -> tuple[bool, str, str]:
        p = spec.params
        parts = urlsplit(target.fill(p["url"], spec))
        context = None
        if parts.scheme == "https":
            context = ssl._create_unverified_context() if p["insecure"] else ssl.create_default_context()
        conn = DeadlineConnection(parts.hostname or "127.0.0.1", parts.port, deadline, context)
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        headers = {"User-Agent": USER_AGENT, "Connection": "close", **dict(p["headers"])}
        what = f"{p['method']} {shown_url(parts.scheme, parts.hostname, parts.port, parts.path)}: "
        try:
            conn.request(p["method"], path, headers=headers)
            conn.phase = "answer"
            response = conn.getresponse()
            conn.phase = "reading the body"
            body = b""
            while len(body) < BODY_BYTES and p["method"] != "HEAD":
                chunk = response.read1(BODY_BYTES - len(body))
                if not chunk:
                    break
                body += chunk
        except (TimeoutError, socket.timeout):
            where = conn.where()  # " connecting to host:port": the URL has named them already
            where = " connecting" if where.startswith(" connecting to ") else where
            return False, f"{what}timed out after {format_duration(spec.timeout)}{where}", ""
        except OSError as exc:
            return False, what + _os_error(exc), ""
        except http.client.HTTPException as exc:
            return False, f"{what}bad HTTP answer: {type(exc).__name__}", ""
        finally:
            conn.close_all()
        status = response.status
        text = clean(body.decode("utf-8", "replace"), max_line=200)
        if not any(lo <= status <= hi for lo, hi in p["status"]):
            return False, f"{what}HTTP {status}" + (f" (body: {_short(text)})" if text.strip() else ""), ""
        if p["body"] and not re.search(p["body"], text):
            return False, f"{what}HTTP {status} but the body does not match /{p['body']}/ (body: {_short(text)})", ""
        return True, f"HTTP {status}", ""

    def _tcp(self, spec: ProbeSpec, target: ProbeTarget, memory: dict, deadline: float) -> tuple[bool, str, str]:
        address = target.fill(spec.params["address"], spec)
        host, _, port = address.rpartition(":")
        try:
            sock = connect(host.strip("[]"), int(port), deadline)
        except (TimeoutError, socket.timeout):
            return False, f"tcp {address}: timed out after {format_duration(spec.timeout)} connecting", ""
        except (OSError, ValueError) as exc:
            return False, f"tcp {address}: {_os_error(exc)}", ""
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
        what = f"{command_name(argv)}: "
        if timed_out:
            return False, f"{what}timed out after {format_duration(spec.timeout)} (killed with its process group)", \
                evidence
        if code is None:
            return False, f"cannot run {argv[0]}: {output.decode(errors='replace')}", ""
        if code != 0:
            last = evidence.strip().splitlines()[-1:] if evidence.strip() else []
            return False, what + _status(code) + (f" (output: {_short(last[0])})" if last else ""), evidence
        return True, "exit status 0", evidence

    # ---- files ----------------------------------------------------------------------------

    def _heartbeat(self, spec: ProbeSpec, target: ProbeTarget, memory: dict, deadline: float) -> tuple[bool, str, str]:
        """A file that never existed while this process ran is silence (it fails); one that existed
        and is gone was deleted under the program (by hand, a tmp cleaner), which may write on to
        it through an open file: that judges nothing until the file is written again. A new inode
        is judged as usual: writing a temporary file and renaming it over is how beats are written."""
        path = target.fill(spec.params["path"], spec)
        max_age = spec.params["max_age"]
        try:
            age = file_age(os.stat(path).st_mtime, memory, path, self.clock())
        except FileNotFoundError:
            seen_at = memory.get("beat_seen_at")
            if seen_at is None:
                return False, f"heartbeat file {path} does not exist", ""
            raise EvidenceGone(f"heartbeat file {path} deleted (it existed "
                               f"{format_duration(time.monotonic() - seen_at)} ago)") from None
        except OSError as exc:
            return False, f"heartbeat file {path}: {exc.strerror}", ""
        memory["beat_seen_at"] = time.monotonic()
        text = f"heartbeat {format_duration(max(0.0, age))} old (max {format_duration(max_age)})"
        return age <= max_age, text, ""

    def _log_paths(self, target: ProbeTarget) -> list[tuple[str, str]]:
        """(path, "stdout log" or "stderr log") of each file the process logs to."""
        if self.logs is None:
            return []
        return [(p, what) for p, what in zip(self.logs.paths(target.namespec), ("stdout log", "stderr log")) if p]

    def _readable_logs(self, target: ProbeTarget, memory: dict) -> tuple[list[tuple[str, os.stat_result]], str]:
        """The log files that are supervisord's, with their stat, and why the others are not ("" if
        none is missing)."""
        seen: dict[str, FileId] = memory.setdefault("logs_seen", {})
        readable, gone = [], []
        for path, what in self._log_paths(target):
            try:
                readable.append((path, self.open_files.evidence(path, what, seen)))
            except EvidenceGone as exc:
                gone.append(str(exc))
            except OSError as exc:
                gone.append(f"{what} {path}: {clean(exc.strerror or str(exc))}")
        return readable, "; ".join(gone)

    def _log_silence(self, spec: ProbeSpec, target: ProbeTarget, memory: dict,
                     deadline: float) -> tuple[bool, str, str]:
        """Output in any file is output; silence needs every file: one that is not supervisord's
        (deleted, moved, replaced) may be where the program's output goes now."""
        if not self._log_paths(target):
            return False, "no log file to watch (stdout_logfile and stderr_logfile are NONE)", ""
        readable, gone = self._readable_logs(target, memory)
        silent = time.monotonic() - target.started_mono  # a fresh start counts as output
        if readable:
            silent = min(silent, file_age(max(st.st_mtime for _, st in readable), memory, "log", self.clock()))
        limit = spec.params["silence"]
        if silent <= limit:
            return True, f"last log output {format_duration(max(0.0, silent))} ago", ""
        if gone:
            raise EvidenceGone(gone)
        return False, f"no log output for {format_duration(silent)} (max {format_duration(limit)})", ""

    def _log_pattern(self, spec: ProbeSpec, target: ProbeTarget, memory: dict,
                     deadline: float) -> tuple[bool, str, str]:
        """Lines matching since the last run, kept with the time they were seen for `within`.
        Reads forward from where the last run stopped, across rotation, at most LOG_READ_BYTES
        per file and run: what is skipped beyond that is said in the result, never silent."""
        p, now = spec.params, time.monotonic()
        pattern = re.compile(p["regex"])
        matches: deque = memory.setdefault("matches", deque(maxlen=LOG_PATTERN_KEPT))
        positions: dict = memory.setdefault("positions", {})

        def seen(line: str) -> None:
            if pattern.search(line):
                matches.append((now, line))

        readable, gone = self._readable_logs(target, memory)
        skipped = sum(scan_log(path, positions, seen, deadline) for path, _ in readable)
        while matches and matches[0][0] < now - p["within"]:
            matches.popleft()
        if gone and len(matches) < p["count"]:
            raise EvidenceGone(gone)  # "no match" means nothing while a file is not read: the lines may be there
        lines = [line for _, line in list(matches)[-EVIDENCE_LINES:]]
        what = f"{len(matches)} log line(s) matching /{p['regex']}/ within {format_duration(p['within'])}"
        if skipped:
            what += (f"; {skipped} bytes not read (more than {format_size(LOG_READ_BYTES)} of new log per file"
                     " and run, or past the timeout)")
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


def shown_url(scheme: str, host: str | None, port: int | None, path: str) -> str:
    """scheme://host:port/path of a probe's URL: never its user-info or query, which may hold
    credentials (http://user:pw@h/healthz?token=...)."""
    host = host or "127.0.0.1"
    host = f"[{host}]" if ":" in host else host
    return clean(f"{scheme}://{host}{f':{port}' if port else ''}{path or '/'}", max_line=200)


def command_name(argv: list[str]) -> str:
    """What an exec probe ran, without arguments that may hold credentials (`redis-cli -a PASS`):
    'check_feed.sh', 'python3 check.py' (a script run by an interpreter), "sh -c 'curl …'"."""
    name = os.path.basename(argv[0]) if argv else "?"
    rest = argv[1:]
    if name in SHELLS and "-c" in rest[:-1]:
        # The script's first command, never its assignments (PGPASSWORD=..., https_proxy=u:pw@...)
        # nor its arguments; a word that is not a plain command name is not shown at all.
        words = [w for w in rest[rest.index("-c") + 1].split() if not re.fullmatch(r"\w+=.*", w)]
        first = os.path.basename(words[0]) if words else ""
        if not re.fullmatch(r"[\w.+-]{1,40}", first):
            first = "…"
        return clean(f"{name} -c '{first}{' …' if len(words) > 1 and first != '…' else ''}'", max_line=80)
    script = next((a for a in rest if not a.startswith("-")), "")
    if script and (name in SHELLS or name.startswith(("python", "perl", "ruby", "node", "php"))) \
            and re.fullmatch(r"[\w./-]+\.\w+", script):
        return clean(f"{name} {os.path.basename(script)}", max_line=80)
    return clean(name, max_line=80)


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


def _status(code: int) -> str:
    if code >= 0:
        return f"exit status {code}"
    try:
        return f"killed by {signal.Signals(-code).name}"
    except ValueError:
        return f"killed by signal {-code}"


def file_age(mtime: float, memory: dict, key: str, wall: float) -> float:
    """Seconds since a file was written, a step of the wall clock aside: its mtime and our wall
    clock disagree by the step when it was written before it. Between runs (memory) an unchanged
    mtime ages by the monotonic time since the last look, and a changed one was written since that
    look, so it is no older than the time since."""
    mono, seen = time.monotonic(), memory.get(f"age:{key}")
    if seen is not None and seen[0] == mtime:
        age = seen[1] + (mono - seen[2])
    else:
        age = wall - mtime if seen is None else min(wall - mtime, mono - seen[2])
    age = max(0.0, age)
    memory[f"age:{key}"] = (mtime, age, mono)
    return age


def _probe_env(target: ProbeTarget) -> dict[str, str]:
    return {**os.environ, "LOOKOUT_GROUP": target.group, "LOOKOUT_NAME": target.name, "LOOKOUT_PID": str(target.pid)}
