"""Listener benchmarks, each against a baseline measured in the same run.

throughput  Both listeners are SIGSTOPped under one supervisord while a numprocs pool is stopped
            and started until N PROCESS_STATE events wait in each pool's buffer; then each is
            resumed alone and timed until it has taken all of them (events/s).
latency     group_wait = "100ms": kill -9 a RUNNING program, time until the webhook has the alert.
memory      RSS of lookout-listener after 10k and 100k events, and the growth between them.
"""

from __future__ import annotations

import os
import signal
import sys
import tempfile
import time
from pathlib import Path

from tests.harness import REPO, Supervisor, Webhook

from .patience import PATIENCE

LISTENER_EXTRA: dict[str, object] = {}
POOL = 100  # flapping processes; one stop+start of the pool = 4 events per process
EVENTS_PER_CYCLE = 4 * POOL


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _minimal_snippet(report: Path, trace: Path | None = None) -> str:
    env = f'MINIMAL_REPORT="{report}"' + (f',MINIMAL_TRACE="{trace}"' if trace else "")
    return f"""
[eventlistener:minimal]
command={sys.executable} {REPO / "bench" / "minimal_listener.py"}
events=PROCESS_STATE,TICK_60,SUPERVISOR_STATE_CHANGE
buffer_size=100000
environment={env}
priority=-20
stderr_logfile=%(here)s/minimal.stderr.log
"""


def _flap_supervisor(root: Path, settings: dict | None = None, extra_programs: str = "") -> tuple[Supervisor, Path]:
    report = root / "minimal.report"
    programs = extra_programs + f"""\
[program:flap]
command=sleep 100000
process_name=%(program_name)s_%(process_num)03d
numprocs={POOL}
startsecs=0
autorestart=false
""" + _minimal_snippet(report)
    sup = Supervisor(root, programs, {"listener": {"log_level": "info", **LISTENER_EXTRA}, **(settings or {})})
    sup.conf.write_text(sup.conf.read_text().replace("buffer_size=4096", "buffer_size=100000"))
    return sup.start(), report


def _minimal(report: Path) -> tuple[int, float]:
    try:
        count, last = report.read_text().split()
        return int(count), float(last)
    except (OSError, ValueError):
        return 0, 0.0


def _lookout_position(sup: Supervisor) -> tuple[int, float]:
    with sup.db() as c:
        row = c.execute("SELECT poolserial, last_event_at FROM stream WHERE id = 1").fetchone()
    return (int(row[0]), float(row[1])) if row else (0, 0.0)


def _cycle(sup: Supervisor, n: int) -> None:
    for _ in range(n):
        PATIENCE.call(sup, "supervisor.stopProcessGroup", "flap", True)
        PATIENCE.call(sup, "supervisor.startProcessGroup", "flap", True)


def _settle(sup: Supervisor, report: Path) -> None:
    """Both listeners idle: their counters stop moving."""

    def still() -> bool:
        a = (_minimal(report)[0], _lookout_position(sup)[0])
        time.sleep(0.5)
        return a == (_minimal(report)[0], _lookout_position(sup)[0])

    PATIENCE.wait(still, 120, "listeners idle", interval=0)


def drain_rates(sup: Supervisor, report: Path, events: int) -> dict[str, float]:
    """Events/s of each listener draining the same backlog, best of three rounds."""
    info = {p["name"]: p["pid"] for p in PATIENCE.call(sup, "supervisor.getAllProcessInfo")}
    minimal_pid, lookout_pid = info["minimal"], info["lookout"]
    results: dict[str, float] = {"minimal_eps": 0.0, "lookout_eps": 0.0}
    per_round = events // 3 // EVENTS_PER_CYCLE * EVENTS_PER_CYCLE
    # Best of three rounds, alternating who drains first: two cores shared by supervisord,
    # both listeners and this script make single drains noisy (0.74x-0.92x seen).
    for order in (("minimal", "lookout"), ("lookout", "minimal"), ("minimal", "lookout")):
        os.kill(minimal_pid, signal.SIGSTOP)
        os.kill(lookout_pid, signal.SIGSTOP)
        m_start, l_start = _minimal(report)[0], _lookout_position(sup)[0]
        _cycle(sup, per_round // EVENTS_PER_CYCLE)
        for name in order:
            pid = minimal_pid if name == "minimal" else lookout_pid
            if name == "minimal":
                def done(m=m_start) -> bool:
                    return _minimal(report)[0] - m >= per_round
            else:
                def done(base=l_start) -> bool:
                    return _lookout_position(sup)[0] - base >= per_round
            start = time.time()
            os.kill(pid, signal.SIGCONT)
            PATIENCE.wait(done, 60, f"{name} to drain {per_round} events", interval=0.02)
            last = _minimal(report)[1] if name == "minimal" else _lookout_position(sup)[1]
            results[f"{name}_eps"] = max(results[f"{name}_eps"], per_round / max(last - start, 1e-6))
    assert "overflowed" not in sup.log()
    return results


def throughput_and_memory(events: int = 60_000, memory_marks: tuple[int, ...] = (10_000, 100_000)) -> dict[str, float]:
    root = Path(tempfile.mkdtemp(prefix="lookout-bench-"))
    sup, report = _flap_supervisor(root)
    try:
        _settle(sup, report)
        info = {p["name"]: p["pid"] for p in PATIENCE.call(sup, "supervisor.getAllProcessInfo")}
        minimal_pid, lookout_pid = info["minimal"], info["lookout"]
        l0 = _lookout_position(sup)[0]
        results = drain_rates(sup, report, events)

        # Memory: keep events flowing with both listeners running.
        def taken() -> int:
            return _lookout_position(sup)[0] - l0

        for mark in memory_marks:
            while taken() < mark:
                _cycle(sup, max(1, min(25, (mark - taken()) // EVENTS_PER_CYCLE)))
            _settle(sup, report)
            results[f"lookout_rss_{mark}"] = rss_mb(lookout_pid)
            results[f"minimal_rss_{mark}"] = rss_mb(minimal_pid)
        with sup.db() as c:
            results["history_rows"] = c.execute("SELECT COUNT(*) FROM history").fetchone()[0] \
                if c.execute("SELECT 1 FROM sqlite_master WHERE name = 'history'").fetchone() else 0
        results["store_mb"] = sum(os.path.getsize(f"{sup.state_path}{s}") for s in ("", "-wal")
                                  if os.path.exists(f"{sup.state_path}{s}")) / 1e6
        return results
    finally:
        sup.stop()


def latency(samples: int = 40) -> dict[str, float]:
    """kill -9 -> alert at the webhook, with group_wait = "100ms" (its minimum), group_interval "0s".

    Baseline, in the same run and supervisord: with lookout stopped, how long a minimal listener
    waits for the EXITED event of the same kind of kill: supervisord's own dispatch latency.
    """
    root = Path(tempfile.mkdtemp(prefix="lookout-bench-lat-"))
    hook = Webhook().start()
    trace = root / "minimal.trace"
    programs = "\n".join(f"[program:victim{i:02d}]\ncommand=sleep 100000\n" for i in range(2 * samples))
    programs += _minimal_snippet(root / "minimal.report", trace)
    settings = {
        "notify": {"urls": [hook.url()]},
        # the smallest group_wait lookout.toml accepts, and no group_interval: each kill is timed on its own
        # (with the shipped 10s, a kill within 10s of the last message waits for its end: shipped_defaults())
        "alerts": {"group_wait": "100ms", "group_interval": "0s"},
        "listener": {"log_level": "info"},
    }
    sup = Supervisor(root, programs, settings).start()
    try:
        names = [f"victim{i:02d}" for i in range(2 * samples)]
        PATIENCE.wait(lambda: all(sup.state_of(f"{n}:{n}") == "RUNNING" for n in names), 30, "victims RUNNING")

        def kill(name: str) -> float:
            pid = PATIENCE.call(sup, "supervisor.getProcessInfo", f"{name}:{name}")["pid"]
            t0 = time.time()
            os.kill(pid, signal.SIGKILL)
            return t0

        def traced(name: str) -> list[float]:
            return [float(line.split()[0]) for line in trace.read_text().splitlines()
                    if f"PROCESS_STATE_EXITED processname:{name}" in line]

        sup.ctl("stop", "lookout")
        baseline = []
        for name in names[:samples]:
            t0 = kill(name)
            baseline.append(PATIENCE.wait(lambda n=name: traced(n), 10, "minimal listener got EXITED")[0] - t0)
        restarted = time.time()
        sup.ctl("start", "lookout")
        PATIENCE.wait(lambda: all(sup.state_of(f"{n}:{n}") == "RUNNING" for n in names), 30, "victims RUNNING")

        def reconciled() -> bool:
            with sup.db() as c:
                row = c.execute("SELECT value FROM meta WHERE key = 'last_reconcile_at'").fetchone()
            return row is not None and float(row[0]) > restarted
        PATIENCE.wait(reconciled, 30, "the restarted listener has caught up")
        total = []
        for name in names[samples:]:
            t0 = kill(name)
            total.append(PATIENCE.wait(lambda n=name: hook.matching(f"{n} crashed"), 30, "the alert")[0].at - t0)
        return {
            "latency_p50": _pct(total, 50), "latency_p95": _pct(total, 95),
            "supervisord_p50": _pct(baseline, 50), "supervisord_p95": _pct(baseline, 95),
        }
    finally:
        sup.stop()
        hook.stop()


def shipped_defaults(samples: int = 12, storm: int = 150) -> dict[str, float]:
    """With the shipped timers (group_wait 1s, group_interval 10s, the defaults of conf.d/lookout.toml):
    kill -9 -> the webhook's alert on a quiet host (each kill waits until the last message's
    group_interval is over), then `storm` processes killed at once: how many messages carry their
    crashes, and how many crashes no message names."""
    root = Path(tempfile.mkdtemp(prefix="lookout-bench-shipped-"))
    hook = Webhook().start()
    programs = "\n".join(f"[program:victim{i:02d}]\ncommand=sleep 100000\n" for i in range(samples))
    programs += (f"\n[program:storm]\ncommand=sleep 100000\nnumprocs={storm}\n"
                 "process_name=%(program_name)s_%(process_num)03d\n")
    sup = Supervisor(root, programs, {"notify": {"urls": [hook.url()]}, "listener": {"log_level": "info"}}).start()
    try:
        everyone = [f"victim{i:02d}:victim{i:02d}" for i in range(samples)] + \
            [f"storm:storm_{i:03d}" for i in range(storm)]
        PATIENCE.wait(lambda: sum(p["statename"] == "RUNNING" for p in PATIENCE.call(
            sup, "supervisor.getAllProcessInfo")) == len(everyone) + 1, 60, "every program RUNNING")
        total = []
        for i in range(samples):
            name = f"victim{i:02d}"
            if hook.messages:  # a quiet host: the last message's group_interval is over
                PATIENCE.wait(lambda: time.time() - hook.messages[-1].at > 10.5, 30, "the interval over")
            pid = PATIENCE.call(sup, "supervisor.getProcessInfo", f"{name}:{name}")["pid"]
            t0 = time.time()
            os.kill(pid, signal.SIGKILL)
            total.append(PATIENCE.wait(lambda n=name: hook.matching(f"{n} crashed"), 30, "the alert")[0].at - t0)
        PATIENCE.wait(lambda: time.time() - hook.messages[-1].at > 10.5, 30, "the interval over")
        before = len(hook.messages)
        pids = [p["pid"] for p in PATIENCE.call(sup, "supervisor.getAllProcessInfo") if p["group"] == "storm"]
        for pid in pids:
            os.kill(pid, signal.SIGKILL)
        names = [f"storm_{i:03d}" for i in range(storm)]

        def named() -> set[str]:
            return {n for n in names if any(n in m.text for m in hook.messages[before:])}
        PATIENCE.wait(lambda: len(named()) == storm, 120, "every crash of the storm in a message")
        storm_messages = [m for m in hook.messages[before:] if "crashed" in m.text]
        return {"shipped_p50": _pct(total, 50), "shipped_p95": _pct(total, 95),
                "storm_messages": float(len(storm_messages)), "storm_lost": float(storm - len(named()))}
    finally:
        sup.stop()
        hook.stop()


def _pct(values: list[float], pct: int) -> float:
    ordered = sorted(values)
    return ordered[max(0, int(round(pct / 100 * len(ordered))) - 1)]
