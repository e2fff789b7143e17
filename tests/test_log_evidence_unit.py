"""Issue 21, case 7, without supervisord: which file is evidence (logs.OpenFiles, checks.py) and
what a result that could not judge does to health (rules/health.py, pure, fake clock).

The test process itself plays supervisord where a writer is needed: it holds the log file open
and OpenFiles looks at its own /proc/<pid>/fd, as the listener looks at supervisord's."""

from __future__ import annotations

import itertools
import os
import time
from pathlib import Path

import pytest

from lookout.config import parse_config
from lookout.config.probes import parse_probes
from lookout.listener.probes import checks
from lookout.listener.probes.checks import Check
from lookout.listener.probes.target import ProbeTarget
from lookout.listener.protocol.events import Delivery, ProcessStateEvent
from lookout.listener.rules.engine import AlertEngine
from lookout.listener.rules.models import FIRING, RESOLVED, UNHEALTHY, ProbeResult
from lookout.listener.workers.log_reader import OpenFiles

TARGET = ProbeTarget("svc", "svc", os.getpid(), 0.0)


class Logs:
    """ProcessLogs.paths for a process that logs to these files ("" for none)."""

    def __init__(self, stdout: Path, stderr: Path | None = None) -> None:
        self.stdout, self.stderr = str(stdout), str(stderr) if stderr else ""

    def paths(self, namespec: str) -> tuple[str, str]:
        return self.stdout, self.stderr


def spec(**entry: object):  # noqa: ANN201
    return parse_probes([{"match": "svc", "timeout": "1s", **entry}])[0]


SILENCE = spec(log_silence="2s")
PATTERN = spec(log_pattern={"regex": "CRITICAL", "count": 1, "within": "1m"})


class Writer:
    """supervisord's side: a log file held open and written to, whatever its name becomes."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.file = open(path, "ab")  # noqa: SIM115

    def write(self, data: bytes) -> None:
        self.file.write(data)
        self.file.flush()

    def reopen(self) -> None:
        """supervisord's rotation or a restart: the path opened anew (before the old file is
        closed here, so that the new one cannot get the inode number of a deleted old one)."""
        old, self.file = self.file, open(self.path, "ab")  # noqa: SIM115
        old.close()

    def close(self) -> None:
        self.file.close()


@pytest.fixture
def writer(tmp_path):
    w = Writer(tmp_path / "svc.log")
    w.write(b"started\n")
    yield w
    w.close()


class SteadyTime:
    """checks.py's `time`, whose monotonic clock follows the test's clock: files age between runs
    by the monotonic time (checks.file_age), so the test's ten minutes must pass on both."""

    def __init__(self) -> None:
        self.clock: list[float] | None = None

    def monotonic(self) -> float:
        return time.monotonic() if self.clock is None else self.clock[0]

    def __getattr__(self, name: str) -> object:
        return getattr(time, name)


@pytest.fixture(autouse=True)
def steady_time(monkeypatch):
    shim = SteadyTime()
    monkeypatch.setattr(checks, "time", shim)
    return shim


def checker(logs: Logs, clock: list[float], writer_pid: int | None) -> Check:
    checks.time.clock = clock  # (the steady_time fixture's)
    return Check(logs, clock=lambda: clock[0], open_files=OpenFiles(lambda: writer_pid, max_age=0.0))  # type: ignore[arg-type]


def test_a_deleted_log_judges_nothing_however_long_the_silence(writer):
    clock = [os.stat(writer.path).st_mtime + 1]
    check, memory = checker(Logs(writer.path), clock, os.getpid()), {}
    result = check.run(SILENCE, TARGET, memory)
    assert result.judged and result.ok, result.detail
    os.unlink(writer.path)
    writer.write(b"still logging, to the deleted file\n")
    clock[0] += 600  # by the path: ten minutes of silence
    result = check.run(SILENCE, TARGET, memory)
    assert not result.judged and not result.ok
    assert result.detail == f"stdout log {writer.path} deleted: supervisord writes on to the deleted file"
    writer.reopen()  # supervisord's rotation (or a restart) makes the path its file again
    clock[0] = os.stat(writer.path).st_mtime + 1
    result = check.run(SILENCE, TARGET, memory)
    assert result.judged and result.ok, result.detail
    clock[0] += 600  # and real silence in the new file is judged
    result = check.run(SILENCE, TARGET, memory)
    assert result.judged and not result.ok and result.detail.startswith("no log output for 10m")


def test_moved_and_replaced_logs_say_where_supervisord_writes(writer, tmp_path):
    clock = [os.stat(writer.path).st_mtime + 60]
    check, memory = checker(Logs(writer.path), clock, os.getpid()), {}
    assert check.run(PATTERN, TARGET, memory).judged
    moved = tmp_path / "svc.log.old"
    os.rename(writer.path, moved)
    result = check.run(SILENCE, TARGET, memory)
    assert not result.judged and result.detail == (f"stdout log {writer.path} moved to {moved}: supervisord "
                                                   "writes on to it there")
    writer.path.write_bytes(b"")  # logrotate's `create`: a new file supervisord does not write
    writer.path.write_bytes(b"a line by somebody else\n")
    for kind in (SILENCE, PATTERN):
        result = check.run(kind, TARGET, memory)
        assert not result.judged and result.detail == f"stdout log {writer.path} replaced: supervisord writes on " \
                                                      f"to {moved}", result.detail


def test_copytruncate_and_a_rotation_keep_judging(writer, tmp_path):
    clock = [os.stat(writer.path).st_mtime + 1]
    check, memory = checker(Logs(writer.path), clock, os.getpid()), {}
    writer.write(b"an ordinary line\n" * 20)
    assert check.run(PATTERN, TARGET, memory).ok  # the first look notes where the file ends
    os.truncate(writer.path, 0)  # logrotate's copytruncate: the same file, emptied
    writer.write(b"CRITICAL after the truncation\n")
    result = check.run(PATTERN, TARGET, memory)
    assert result.judged and not result.ok and "CRITICAL after the truncation" in result.evidence
    os.rename(writer.path, f"{writer.path}.1")  # supervisord's rotation: path.1, a new path
    writer.reopen()
    writer.write(b"CRITICAL again\n")
    result = check.run(PATTERN, TARGET, memory)
    assert result.judged and not result.ok and "CRITICAL again" in result.evidence


def test_output_in_one_file_is_output_silence_needs_every_file(tmp_path):
    out, err = Writer(tmp_path / "out.log"), Writer(tmp_path / "err.log")
    try:
        clock = [max(os.stat(out.path).st_mtime, os.stat(err.path).st_mtime) + 1]
        check, memory = checker(Logs(out.path, err.path), clock, os.getpid()), {}
        assert check.run(SILENCE, TARGET, memory).ok
        os.unlink(err.path)
        assert check.run(SILENCE, TARGET, memory).ok  # stdout is fresh: that is output, whatever stderr does
        clock[0] += 60
        result = check.run(SILENCE, TARGET, memory)
        assert not result.judged and "stderr log" in result.detail and "deleted" in result.detail
        out.write(b"CRITICAL seen in the file that is still read\n")
        memory = {}
        assert check.run(PATTERN, TARGET, memory).judged is False  # first look; stderr is gone
        out.write(b"CRITICAL once more\n")
        result = check.run(PATTERN, TARGET, memory)  # a match is evidence enough: judged, failed
        assert result.judged and not result.ok and "CRITICAL once more" in result.evidence
    finally:
        out.close()
        err.close()


def test_without_the_writers_fds_a_new_file_counts_once_written(writer):
    """/proc of supervisord unreadable (another user): the file seen last time stands in."""
    clock = [os.stat(writer.path).st_mtime + 1]
    check, memory = checker(Logs(writer.path), clock, None), {}
    assert check.run(SILENCE, TARGET, memory).ok
    os.unlink(writer.path)
    clock[0] += 60
    result = check.run(SILENCE, TARGET, memory)
    assert not result.judged and result.detail == f"stdout log {writer.path} gone (deleted or moved)"
    writer.reopen()  # a new, empty file: supervisord's rotation, or logrotate's create
    result = check.run(SILENCE, TARGET, memory)
    assert not result.judged and result.detail == f"stdout log {writer.path} replaced by a new, empty file"
    writer.write(b"written: it is the one written to\n")
    clock[0] = os.stat(writer.path).st_mtime + 1
    result = check.run(SILENCE, TARGET, memory)
    assert result.judged and result.ok


def test_a_heartbeat_never_written_fails_one_deleted_judges_nothing(tmp_path):
    beat = tmp_path / "svc.beat"
    clock = [1_000_000.0]
    check, memory = checker(Logs(tmp_path / "none.log"), clock, os.getpid()), {}
    hb = spec(heartbeat={"path": str(beat), "max_age": "30s"})
    result = check.run(hb, TARGET, memory)
    assert result.judged and not result.ok and result.detail == f"heartbeat file {beat} does not exist"
    beat.write_text("1")
    clock[0] = beat.stat().st_mtime + 5
    assert check.run(hb, TARGET, memory).ok
    tmp = tmp_path / "svc.beat.tmp"  # the usual way to write one: a new file renamed over it
    tmp.write_text("2")
    os.replace(tmp, beat)
    clock[0] = beat.stat().st_mtime + 40
    result = check.run(hb, TARGET, memory)  # (no older than the 35 s since the last look: checks.file_age)
    assert result.judged and not result.ok and result.detail.startswith("heartbeat 35s old")
    beat.unlink()  # a tmp cleaner, or an operator
    result = check.run(hb, TARGET, memory)
    assert not result.judged and result.detail.startswith(f"heartbeat file {beat} deleted (it existed ")
    beat.write_text("3")
    clock[0] = beat.stat().st_mtime + 1
    assert check.run(hb, TARGET, memory).ok


def test_open_files_lists_once_per_max_age():
    files = OpenFiles(os.getpid, max_age=3600.0)
    first = files.files()
    assert first is not None and files.files() is first  # cached: 200 probes a second cost one listing
    assert OpenFiles(lambda: None).files() is None  # no pid: nothing to compare, the probes' memory stands in


# ---- the rules: a result that could not judge ---------------------------------------------

SERIAL = itertools.count(1)
RESTART = {"match": "svc", "log_silence": "20s", "period": "10s", "initial_delay": "5s", "failure_threshold": 2,
           "action": "restart"}


def engine() -> AlertEngine:
    c = parse_config({"probes": [RESTART], "remediation": {"max_restarts": 3, "within": "1h", "backoff": "1m"}})
    e = AlertEngine(c.alerts, probes=c.probes, remediation=c.remediation)
    for state, before in (("STARTING", "STOPPED"), ("RUNNING", "STARTING")):
        n = next(SERIAL)
        e.on_event(ProcessStateEvent(Delivery("s", n, "p", n, f"PROCESS_STATE_{state}"), state, "svc", "svc", before,
                                     pid=500 if state == "RUNNING" else None), 0.0 if state == "STARTING" else 1.0)
    return e


def result(e: AlertEngine, t: float, ok: bool, judged: bool = True):  # noqa: ANN201
    detail = "last log output 1s ago" if ok else "no log output for 25s (max 20s)"
    if not judged:
        detail = "stdout log /l/svc.log deleted: supervisord writes on to the deleted file"
    return e.on_probe_result(ProbeResult("svc:svc", "log_silence", ok, detail, t, 0.01, pid=500, judged=judged), t)


def said(out) -> list[tuple[str, str]]:  # noqa: ANN001
    return [(n.kind, out.alerts[n.key].kind) for n in out.notices]


def test_cannot_judge_is_no_failure_and_no_action():
    e = engine()
    result(e, 10, True)
    for t in range(20, 200, 10):
        out = result(e, t, False, judged=False)
        assert not out.actions and not said(out)
    st = e.health.states["svc:svc"]["log_silence"]
    assert st.healthy is True and st.failures_total == 0 and st.consecutive_failures == 0
    assert not st.last_judged and st.last_ok is True and "deleted" in st.last_detail
    assert out.probe_states[st.key] is st  # stored: `lookout status` shows it


def test_cannot_judge_breaks_a_run_of_failures():
    e = engine()
    result(e, 10, False)  # one failure of two
    result(e, 20, False, judged=False)
    out = result(e, 30, False)  # one failure again, not the second in a row
    assert not out.actions and not said(out)
    out = result(e, 40, False)
    assert said(out) == [(FIRING, UNHEALTHY)] and out.actions  # lookout's restart begins


def test_cannot_judge_neither_recovers_nor_acts_on_an_open_verdict():
    e = engine()
    ns = "svc:svc"
    result(e, 10, False)
    out = result(e, 20, False)
    assert said(out) == [(FIRING, UNHEALTHY)] and out.actions  # lookout's restart begins
    assert e.health.unhealthy(ns)  # judged by this listener: what lookout may act on
    out = result(e, 30, True, judged=False)
    assert not said(out) and e.alerts[("health:log_silence", ns)].is_open  # no recovery
    assert e.health.states[ns]["log_silence"].healthy is False
    assert not e.health.unhealthy(ns)  # not acted on while it cannot judge (a wanted restart is dropped)
    result(e, 40, False)
    assert not e.health.unhealthy(ns)  # one new failure does not confirm it
    result(e, 50, False)
    assert e.health.unhealthy(ns)  # failure_threshold new failures do
    assert said(result(e, 60, True)) == [(RESOLVED, UNHEALTHY)]  # a success that judged recovers it
