"""Capabilities that alert: crash, crash loop, FATAL, must_run, quorum, silence, dead man's switch.

Each scenario says in its docstring what "the same outcome" is, under every perturbation; "one"
means exactly one entry at the judged target (doubled is as wrong as lost).
"""

from __future__ import annotations

import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from ..harness import Supervisor, free_port, stays, wait_for
from .run import Run

CRASH_ON_CUE = """\
[program:c]
command=sh -c 'if [ -f %(here)s/crashed.c ]; then exec sleep 1000; fi; while [ ! -f %(here)s/go.c ]; do sleep 0.1;
    done; touch %(here)s/crashed.c; echo "c lost its upstream" >&2; exit 3'
startsecs=1
autorestart=true
stopwaitsecs=1
"""

CRASHER = """\
[program:flaky]
command=sh -c 'if [ -f %(here)s/fixed ]; then exec sleep 1000; fi; sleep 1.5; echo "flaky: cannot bind port 7001" >&2;
    exit 3'
startsecs=1
autorestart=true
stopwaitsecs=1
"""


def crash_alert(run: Run) -> None:
    """A program crashes once and is respawned. Mid-way: just after the crash, before the alert.
    Outcome: one "c crashed and was restarted" naming exit status 3, then one RESOLVED once it runs
    stable. Under a reload too (the crash came before it; the respawned program runs on)."""
    sup = run.supervisor(CRASH_ON_CUE, run.settings()).start()
    run.wait_running("c:c")
    (sup.root / "go.c").touch()
    wait_for(lambda: "exited: c " in sup.log(), 10, "the crash")
    run.midway()
    alert = wait_for(lambda: run.firing("c:c", "crashed and was restarted"), run.within(20), "the crash alert")[0]
    assert "exit status 3" in alert, alert
    wait_for(lambda: run.resolved("c:c"), run.within(20), "the crash resolved")
    stays(lambda: len(run.firing("c:c")) == 1 and len(run.resolved("c:c")) == 1, 3, "one alert, one resolution")


def crash_loop(run: Run) -> None:
    """A program crashes every 1.5 s (crash_loop: 3 within 1m). Mid-way: after its first crash.
    Outcome: one "is crash-looping" (at most one "crashed" before it); fixed, one RESOLVED. Under a
    reload the loop goes on across it (the reload restarts the crashing program)."""
    sup = run.supervisor(CRASHER, run.settings(crash_loop={"restarts": 3, "within": "1m"})).start()
    wait_for(lambda: "exited: flaky " in sup.log(), 20, "the first crash")
    run.midway()
    alert = wait_for(lambda: run.firing("flaky:flaky", "is crash-looping"), run.within(30), "the crash loop")[0]
    assert "exit status 3" in alert, alert
    (sup.root / "fixed").touch()
    wait_for(lambda: run.resolved("flaky:flaky"), run.within(30), "resolved once it runs")
    stays(lambda: len(run.firing("flaky:flaky", "is crash-looping")) == 1
          and len(run.firing("flaky:flaky", "crashed and was restarted")) <= 1
          and len(run.resolved("flaky:flaky")) == 1, 3, "one crash loop, one resolution")


# It runs 1.5 s before it looks for its cue (past startsecs: an exit 0 is an expected exit, not a failed
# start), after a reload too.
MUST_RUN = """\
[program:critical_service]
command=sh -c 'sleep 1.5; while [ ! -f %(here)s/quit ]; do sleep 0.1; done; echo "critical_service: done" >&2;
    exit 0'
startsecs=1
autorestart=unexpected
stopwaitsecs=1
"""


def must_run(run: Run) -> None:
    """A must_run program (grace 2s) exits 0 under autorestart=unexpected and stays EXITED. Mid-way:
    just after its exit, before the alert. Outcome: one "is not running, and it must run"; started
    again by an operator, one RESOLVED. Under a reload it runs again and exits again: still one alert."""
    settings = run.settings()
    settings["alerts"]["programs"] = [{"match": "critical_service", "must_run": True, "grace": "2s"}]
    sup = run.supervisor(MUST_RUN, settings).start()
    run.wait_running("critical_service:critical_service")
    (sup.root / "quit").touch()
    wait_for(lambda: "exited: critical_service " in sup.log(), 20, "the exit")
    run.midway()
    ns = "critical_service:critical_service"
    wait_for(lambda: run.firing(ns, "is not running, and it must run"), run.within(30), "the must_run alert")
    run.settled()
    (sup.root / "quit").unlink()
    wait_for(lambda: sup.state_of(ns) == "EXITED", run.within(20), "EXITED")
    assert sup.ctl("start", ns).returncode == 0
    wait_for(lambda: run.resolved(ns), run.within(30), "resolved once it runs")
    stays(lambda: len(run.firing(ns)) == 1 and len(run.resolved(ns)) == 1, 3, "one alert, one resolution")


# startsecs = 5: an exit at once stays one before RUNNING on a busy machine too (a fork and exec of
# sh can take over a second there, and supervisord then calls the run RUNNING and its exit a crash).
QUITTER = """\
[program:quitter]
command=sh -c 'echo "quitter: API_KEY is not set" >&2; exit 1'
startsecs=5
startretries=3
"""


def fatal(run: Run) -> None:
    """A program that exits at once: supervisord retries it 3 times (backoff 1, 2, 3 s) and gives up
    (FATAL). Mid-way: after its first exit. Outcome: one "gave up starting (FATAL)" with its stderr,
    the program FATAL, no RESOLVED. Under a reload the retries start over: still one alert."""
    sup = run.supervisor(QUITTER, run.settings()).start()
    wait_for(lambda: "exited: quitter " in sup.log(), 20, "the first exit")
    run.midway()
    alert = wait_for(lambda: run.firing("quitter:quitter", "gave up starting"), run.within(30), "FATAL")[0]
    assert "quitter: API_KEY is not set" in alert, alert
    sup.wait_state("quitter:quitter", "FATAL", 10)
    stays(lambda: len(run.firing("quitter:quitter")) == 1 and not run.resolved("quitter:quitter"), 4,
          "one alert, still open")


POOL = """\
[program:pool]
command=sh -c 'if [ -f %(here)s/down.$SUPERVISOR_PROCESS_NAME ]; then exit 1; fi; exec sleep 1000'
process_name=%(program_name)s_%(process_num)d
numprocs=4
startsecs=3
startretries=0
autorestart=true
stopwaitsecs=1
"""


def _quorum_entries(run: Run, resolved: bool) -> list[str]:
    return [e for e in run.hook.entries() if e.split(None, 2)[1:2] == ["pool"]
            and e.startswith("RESOLVED") == resolved and ("back to" in e if resolved else "below quorum" in e)]


def quorum(run: Run) -> None:
    """A pool of 4 with min_running 3 (for 2s): two members killed and kept down (FATAL). Mid-way:
    just after the kills. Outcome: one "pool is below quorum" naming both down, 2 of 4 running;
    the operator starts them again: one RESOLVED "back to". Under a reload the two go FATAL again:
    the same, but the count may be of a moment when the other two were still STARTING."""
    settings = run.settings()
    settings["alerts"]["groups"] = [{"match": "pool", "min_running": 3, "for": "2s"}]
    sup = run.supervisor(POOL, settings).start()
    for i in range(4):
        run.wait_running(f"pool:pool_{i}")
    for i in (1, 2):
        (sup.root / f"down.pool_{i}").touch()
        sup.ctl("signal", "KILL", f"pool:pool_{i}")
    run.midway()
    alert = wait_for(lambda: _quorum_entries(run, False), run.within(30), "the quorum alert")[0]
    assert "pool_1 FATAL" in alert and "pool_2 FATAL" in alert and "(minimum 3)" in alert, alert
    if not run.reloaded:  # (after a reload the others may still be STARTING, counted as not running)
        assert "pool: 2 of 4 running (minimum 3)" in alert, alert
    for i in (1, 2):
        (sup.root / f"down.pool_{i}").unlink()
    run.settled()
    wait_for(lambda: all(sup.state_of(f"pool:pool_{i}") in ("FATAL", "EXITED", "STOPPED") for i in (1, 2)), 20,
             "both down")
    for i in (1, 2):
        assert sup.ctl("start", f"pool:pool_{i}").returncode == 0
    wait_for(lambda: _quorum_entries(run, True), run.within(30), "quorum back")
    stays(lambda: len(_quorum_entries(run, False)) == 1 and len(_quorum_entries(run, True)) == 1, 3,
          "one alert, one resolution")


def silence(run: Run) -> None:
    """A crash loop under a 2 h silence (longer than a clock step: what a silence means when the
    wall clock steps is not this matrix's question). Mid-way: the loop seen, nothing sent. Outcome:
    nothing about it while silenced; `lookout silence`'s unsilence: one "is crash-looping"."""
    sup = run.supervisor(CRASHER, run.settings(crash_loop={"restarts": 3, "within": "1m"}))
    made = subprocess_ok(run.lookout("silence", "flaky:*", "--for", "2h", "--reason", "deploy"))
    assert "silence 1" in made, made
    sup.start()
    wait_for(lambda: (sup.process_row("flaky:flaky") or {}).get("crash_looping") == 1, 30, "the crash loop seen")
    run.midway()
    run.settled()
    stays(lambda: not run.hook.entries_for("flaky:flaky"), 4, "silenced")
    subprocess_ok(run.lookout("unsilence", "1"))
    wait_for(lambda: run.firing("flaky:flaky", "is crash-looping"), run.within(15), "the alert after the silence")
    stays(lambda: len(run.firing("flaky:flaky", "is crash-looping")) == 1, 3, "one alert")


def subprocess_ok(done: subprocess.CompletedProcess) -> str:
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


CHECK = "/ping/5f0b9c2e-1b2c-4d5e-8f90-123456789abc"


class Checker:
    """A dead man's switch service: records (monotonic time, path) of each call."""

    def __init__(self) -> None:
        self.calls: list[tuple[float, str]] = []
        calls = self.calls

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                calls.append((time.monotonic(), self.path))
                self.send_response(200)
                self.end_headers()
                self.wfile.write(b"OK")

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}{CHECK}"

    def healthy(self, since: float = 0.0) -> list[float]:
        return [at for at, path in list(self.calls) if path == CHECK and at >= since]

    def failed(self) -> list[float]:
        return [at for at, path in list(self.calls) if path == CHECK + "/fail"]


def deadman(run: Run) -> None:
    """The switch calls every 1 s while lookout is healthy, its fail form while lookout cannot
    deliver or write (fail_after 10s). Mid-way: before a crash. Outcome: the crash alerted once; the
    switch never silent for long: under "trickle" and "store-locked" (lookout rightly degraded) the
    fail form comes, and after the lock the healthy calls again; under the others no fail form, and
    calls every interval once the listener is back, counted in the store across restarts."""
    checker = Checker()
    settings = run.settings()
    settings["deadman"] = {"url": checker.url, "interval": "1s", "fail_after": "10s", "timeout": "2s"}
    try:
        sup = run.supervisor(CRASH_ON_CUE, settings).start()
        run.wait_running("c:c")
        wait_for(lambda: len(checker.healthy()) >= 3, 15, "a call every interval while healthy")
        run.midway()
        (sup.root / "go.c").touch()
        wait_for(lambda: run.firing("c:c", "crashed and was restarted"), run.within(20), "the crash alert")
        if run.perturbation.degrades:
            wait_for(checker.failed, 40, "the fail form while lookout is degraded")
        if run.perturbation.name != "trickle":  # a target that goes on trickling keeps lookout degraded
            run.settled()
            back = time.monotonic()
            wait_for(lambda: len(checker.healthy(back)) >= 5, run.within(15), "healthy calls every interval")
            calls = checker.healthy(back)
            gaps = [b - a for a, b in zip(calls, calls[1:])]
            assert max(gaps) < 3.0, gaps
        if not run.perturbation.degrades:
            assert not checker.failed(), "the fail form while lookout was healthy"
        wait_for(lambda: _counted(sup) >= len(checker.healthy()) - 3, 10,
                 "every healthy call counted in the store (lookout_deadman_pings_total), across restarts")
    finally:
        checker.server.shutdown()


def _counted(sup: Supervisor) -> int:
    with sup.db() as c:
        row = c.execute("SELECT value FROM meta WHERE key = 'deadman_ok'").fetchone()
    return int(float(row[0])) if row and row[0] else 0
