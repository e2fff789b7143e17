"""How far one event travels through the code: calls between files, and calls back into a file
already passed, over a real listener (`python -m bench.trace_calls`).

Two paths, each from its trigger to the webhook's message, over every thread of the listener:
  exit   a RUNNING program killed with SIGKILL -> "crashed" at the webhook
  probe  an exec probe starts failing (failure_threshold 1, action "restart") -> "restarted by
         lookout" at the webhook
bench/trace/sitecustomize.py records each call from one of lookout's files into another (sys.setprofile
and threading.setprofile, in the listener only); this script counts those inside the window, by
the monotonic clock, which all processes share. Each path runs RUNS times; the median is printed.

What is counted: "calls" are the distinct calls between files on the path (caller file, callee
file, function), in the order first made, so an idle loop turn that repeats a call does not count
twice; "back" are those among them into a file the path had already entered; "raw" counts every
call, repeats included. The loop's own turn (the dead man's switch, the drains, the timers' next
deadline) runs whether or not anything happens; the second table leaves out every call an idle
window of IDLE seconds just before the trigger made too, so what it counts is the event's own path.
"""

from __future__ import annotations

import os
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path

from tests.harness import REPO, Supervisor, Webhook, wait_for

RUNS = 3
IDLE = 3.0  # seconds of an idle listener watched before each trigger
SOURCES = [REPO / "listener", REPO / "exporter", REPO / "lookout"]


def _calls(trace: Path, start_ns: int, end_ns: int) -> list[tuple[str, str, str]]:
    calls = []
    for line in trace.read_text(errors="replace").splitlines():
        parts = line.split("\t")
        if len(parts) == 5 and start_ns <= int(parts[0]) <= end_ns:
            calls.append((parts[2], parts[3], parts[4]))
    return calls


def count(trace: Path, start_ns: int, end_ns: int, idle_ns: int | None = None) -> dict[str, int]:
    """The window's counts; with idle_ns (the idle window's start, ending at start_ns), the path's:
    without the calls the idle window made too."""
    idle = set(_calls(trace, idle_ns, start_ns - 1)) if idle_ns is not None else set()
    raw = back = 0
    edges: set[tuple[str, str, str]] = set()
    entered: set[str] = set()
    for caller, callee, function in _calls(trace, start_ns, end_ns):
        if (caller, callee, function) in idle:
            continue
        raw += 1
        if (caller, callee, function) in edges:
            continue
        edges.add((caller, callee, function))
        if not entered:
            entered.add(caller)
        back += callee in entered
        entered.add(callee)
    return {"calls": len(edges), "back": back, "files": len(entered), "raw": raw}


def both(trace: Path, idle_ns: int, start_ns: int, end_ns: int) -> dict[str, dict[str, int]]:
    return {"all": count(trace, start_ns, end_ns), "path": count(trace, start_ns, end_ns, idle_ns)}


def _quiet(trace: Path, calm: float = 0.5, timeout: float = 30) -> None:
    """Until the listener has made no call between files for `calm` seconds (its start settled)."""
    last = [trace.stat().st_size if trace.exists() else 0, time.monotonic()]

    def settled() -> bool:
        size = trace.stat().st_size if trace.exists() else 0
        if size != last[0]:
            last[:] = [size, time.monotonic()]
        return time.monotonic() - last[1] >= calm

    wait_for(settled, timeout, "the listener to settle", interval=0.05)


def _supervisor(root: Path, hook: Webhook, programs: str, settings: dict) -> Supervisor:
    trace = root / "trace.tsv"
    env = {"LOOKOUT_TRACE_FILE": str(trace), "LOOKOUT_TRACE_ROOTS": os.pathsep.join(map(str, SOURCES)),
           "PYTHONPATH": os.pathsep.join([str(REPO / "bench" / "trace"), os.environ.get("PYTHONPATH", "")])}
    base = {"notify": {"urls": [hook.url()]}, "alerts": {"group_wait": "0.1s", "stable_after": "60s"},
            "listener": {"nudge": True}}
    merged = {k: settings[k] if isinstance(settings.get(k), list) else {**base.get(k, {}), **settings.get(k, {})}
              for k in {**base, **settings}}
    return Supervisor(root, programs, merged, environment=env).start()


def exit_path(root: Path) -> dict[str, dict[str, int]]:
    hook = Webhook().start()
    sup = _supervisor(root, hook, "[program:svc]\ncommand=sleep 100000\nstartsecs=1\nautorestart=true\n", {})
    try:
        sup.wait_state("svc:svc", "RUNNING", 20)
        _quiet(root / "trace.tsv")  # the start's own calls (reconcile, lookups) stay outside the window
        idle = time.monotonic_ns()
        time.sleep(IDLE)  # the idle window: what the loop does when nothing happens
        start = time.monotonic_ns()
        os.kill(sup.info("svc:svc")["pid"], signal.SIGKILL)
        hook.wait("svc", "crashed", timeout=30)
        end = time.monotonic_ns()
        return both(root / "trace.tsv", idle, start, end)
    finally:
        sup.stop()
        hook.stop()


def probe_path(root: Path) -> dict[str, dict[str, int]]:
    hook = Webhook().start()
    flag = root / "fail"
    probe = {"match": "svc", "exec": ["sh", "-c", f"test ! -e {flag}"], "period": "1s", "timeout": "1s",
             "failure_threshold": 1, "action": "restart", "initial_delay": "0s"}
    sup = _supervisor(root, hook, "[program:svc]\ncommand=sleep 100000\nstartsecs=1\nautorestart=true\n",
                      {"probes": [probe], "remediation": {"backoff": "1s"}})
    try:
        sup.wait_state("svc:svc", "RUNNING", 20)
        wait_for(lambda: (sup.db().execute("SELECT count(*) FROM probes WHERE last_ok = 1").fetchone()[0]), 20,
                 "a passing probe run first, outside the window")
        idle = time.monotonic_ns()
        time.sleep(IDLE)  # the idle window: the loop's turns and passing probe runs
        start = time.monotonic_ns()
        flag.write_text("")
        hook.wait("svc", "restarted by lookout", timeout=60)
        end = time.monotonic_ns()
        flag.unlink()
        return both(root / "trace.tsv", idle, start, end)
    finally:
        sup.stop()
        hook.stop()


def main() -> int:
    results: dict[str, list[dict[str, dict[str, int]]]] = {"exit": [], "probe": []}
    for name, path in (("exit", exit_path), ("probe", probe_path)):
        for _ in range(RUNS):
            with tempfile.TemporaryDirectory(prefix=f"lookout-trace-{name}-") as tmp:
                results[name].append(path(Path(tmp)))
    for view, title in (("all", "every call in the window"),
                        ("path", f"the event's own path (less what {IDLE:.0f} s of an idle listener call)")):
        print(f"\n{title}\n")
        print("| path | calls between files | back into a file already passed | files | raw calls |")
        print("|---|---|---|---|---|")
        for name, runs in results.items():
            med = {k: statistics.median(r[view][k] for r in runs) for k in ("calls", "back", "files", "raw")}
            print(f"| {name} | {med['calls']:.0f} | {med['back']:.0f} | {med['files']:.0f} | {med['raw']:.0f} |"
                  f"  (runs: {', '.join(str(r[view]['calls']) for r in runs)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
