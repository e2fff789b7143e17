"""Capabilities that act: FATAL recovery, the brake, a probe's restart, hold/release, orphans.

Each scenario says in its docstring what "the same outcome" is, under every perturbation. A
reload restarts every program, which is supervisord's doing, not lookout's: where that changes
what lookout has left to do, the docstring says so.
"""

from __future__ import annotations

import os
import signal
import time

from ..harness import free_port, stays, wait_for
from ..harness import web_program as web
from .run import Run

BRAKE_WAIT = 10.0  # crash_loop.backoff as shipped: the first wait of the brake

GATEWAY = """\
[program:gateway]
command=sh -c 'if [ -f %(here)s/db_up ]; then exec sleep 1000; fi; echo "gateway: database is down" >&2; exit 1'
startsecs=3
startretries=1
stopwaitsecs=1
"""


def fatal_recovery(run: Run) -> None:
    """FATAL at boot (its database is down), crash_loop.action = "backoff". Mid-way: FATAL and
    alerted. Then the database comes back. Outcome: lookout starts it again (the brake's cycle is
    lookout's, whatever FATAL did to its stop), RUNNING, one RESOLVED. Under a reload it goes FATAL
    again after the reload: lookout's brake still starts it once the database is back."""
    loop = {"restarts": 2, "within": "1m", "action": "backoff"}
    sup = run.supervisor(GATEWAY, run.settings(crash_loop=loop)).start()
    wait_for(lambda: sup.state_of("gateway:gateway") == "FATAL" and run.firing("gateway:gateway"), 30,
             "FATAL at boot, alerted")
    run.midway()
    (sup.root / "db_up").touch()
    wait_for(lambda: sup.state_of("gateway:gateway") == "RUNNING", run.within(2 * BRAKE_WAIT + 15),
             "lookout starts it again once its database is back")
    assert run.history("gateway:gateway", "lookout begins to start it"), run.history("gateway:gateway")
    wait_for(lambda: run.resolved("gateway:gateway"), run.within(20), "resolved")
    stays(lambda: len(run.resolved("gateway:gateway")) == 1 and sup.state_of("gateway:gateway") == "RUNNING", 3,
          "one resolution, running")


BRAKED = """\
[program:bk]
command=sh -c 'if [ -f %(here)s/fixed ]; then exec sleep 1000; fi; sleep 1.5; echo "bk: no market data" >&2; exit 3'
startsecs=1
autorestart=true
stopwaitsecs=1
"""
BACKOFF = {"restarts": 2, "within": "1m", "action": "backoff", "reset_after": "5s"}


def _braked(run: Run) -> float:
    """Waits for the brake's first stop; returns when it was seen STOPPED (monotonic)."""
    wait_for(lambda: run.firing("bk:bk", "is crash-looping"), 30, "the crash loop alert")
    wait_for(lambda: run.sup.state_of("bk:bk") == "STOPPED" and (run.sup.process_row("bk:bk") or {}).get("braked"),
             20, "braked: STOPPED while the brake waits", interval=0.05)
    return time.monotonic()


def brake(run: Run) -> None:
    """crash_loop.action = "backoff": lookout stops the crash loop and starts it again 10 s later.
    Mid-way: while it waits, STOPPED. Then it is fixed. Outcome: lookout starts it after its 10 s
    (not at once: a clock step changes no wait), it runs, one crash-loop alert, one RESOLVED. Under
    a reload supervisord starts it itself (its doing): it runs, one alert, one RESOLVED."""
    sup = run.supervisor(BRAKED, run.settings(crash_loop=BACKOFF)).start()
    stopped_at = _braked(run)
    run.midway()
    (sup.root / "fixed").touch()
    wait_for(lambda: sup.state_of("bk:bk") in ("STARTING", "RUNNING"), run.within(BRAKE_WAIT + 15),
             "started again after the brake's wait", interval=0.05)
    waited = time.monotonic() - stopped_at
    if not run.reloaded:
        assert waited >= BRAKE_WAIT - 4, f"started {waited:.1f}s after its stop: the brake waits {BRAKE_WAIT:g}s"
        assert run.history("bk:bk", "lookout begins to start it: crash-loop backoff over")
    wait_for(lambda: run.resolved("bk:bk"), run.within(20), "resolved once it runs")
    stays(lambda: len(run.firing("bk:bk", "is crash-looping")) == 1 and len(run.resolved("bk:bk")) == 1
          and sup.state_of("bk:bk") == "RUNNING", 3, "one alert, one resolution, running")


def hold_release(run: Run) -> None:
    """The brake waits, the operator holds it (`lookout hold bk`). Mid-way: held. Outcome: lookout
    does nothing to it while held (past the brake's wait); fixed and released, lookout starts it,
    it runs, one RESOLVED. Under a reload supervisord starts it, and that start ends the hold as an
    operator's start would (README, guards 5: events do not tell them apart): the hold ends with
    the reload, said in its history; the brake goes on; fixed, it runs, one RESOLVED."""
    sup = run.supervisor(BRAKED, run.settings(crash_loop=BACKOFF)).start()
    stopped_at = _braked(run)
    held = run.lookout("hold", "bk", "--reason", "investigating")
    assert held.returncode == 0 and "bk: held" in held.stdout, held.stdout + held.stderr
    acted = len(run.history("bk:bk", "lookout begins to"))
    run.midway()
    run.settled()
    if run.reloaded:
        wait_for(lambda: run.history("bk:bk", "released: an operator started it"), 20, "the hold ended by the reload")
        (sup.root / "fixed").touch()
    else:
        past_the_wait = max(3.0, BRAKE_WAIT + 3 - (time.monotonic() - stopped_at))
        stays(lambda: len(run.history("bk:bk", "lookout begins to")) == acted and sup.state_of("bk:bk") == "STOPPED",
              past_the_wait, "held: lookout leaves it alone")
        (sup.root / "fixed").touch()
        released = run.lookout("release", "bk")
        assert released.returncode == 0 and "released" in released.stdout, released.stdout + released.stderr
        wait_for(lambda: run.history("bk:bk", "lookout begins to start it"), run.within(15),
                 "the brake starts it once released")
    wait_for(lambda: sup.state_of("bk:bk") == "RUNNING", run.within(BRAKE_WAIT + 20), "running")
    wait_for(lambda: run.resolved("bk:bk"), run.within(20), "resolved once it runs")
    stays(lambda: len(run.resolved("bk:bk")) == 1 and sup.state_of("bk:bk") == "RUNNING", 3, "one resolution")




def _probe_row(run: Run) -> dict:
    with run.sup.db() as c:
        row = c.execute("SELECT * FROM probes WHERE namespec = 'web:web' AND probe = 'http'").fetchone()
        return dict(row) if row else {}


def probe_restart(run: Run) -> None:
    """An HTTP probe (every 2 s, restart after 2 failures) and an endpoint that hangs (a restart heals it).
    Mid-way: after its first failed probe. Outcome: one "is unhealthy (http probe)", restarted by
    lookout once, one RESOLVED "healthy again". Under a reload supervisord's restart heals it: the
    same end (healthy, every alert it had resolved once), lookout restarting it at most once."""
    port = free_port()
    probe = {"match": "web", "http": {"url": "http://127.0.0.1:{port}/healthz", "body": "ok"}, "port_base": port,
             "initial_delay": "1s", "period": "2s", "timeout": "2s", "failure_threshold": 2, "action": "restart"}
    settings = run.settings()
    settings["probes"] = [probe]
    settings["remediation"] = {"backoff": "2s", "backoff_max": "20s"}
    sup = run.supervisor(web(port), settings).start()
    wait_for(lambda: _probe_row(run).get("healthy") == 1, 20, "healthy first")
    pid = sup.info("web:web")["pid"]
    (sup.root / "hang.web").touch()
    wait_for(lambda: _probe_row(run).get("last_ok") == 0, 20, "the first failed probe")
    run.midway()
    if not run.reloaded:
        wait_for(lambda: run.firing("web:web", "is unhealthy (http probe)"), run.within(20), "unhealthy alert")
        wait_for(lambda: run.history("web:web", "lookout begins to restart it"), run.within(20), "lookout restarts")
        wait_for(lambda: sup.info("web:web")["pid"] != pid, run.within(15), "a new process")
    wait_for(lambda: _probe_row(run).get("healthy") == 1 and sup.info("web:web")["pid"] != pid, run.within(30),
             "healthy again")
    if run.firing("web:web"):
        wait_for(lambda: run.resolved("web:web", "healthy again"), run.within(20), "resolved")

    def one_of_each() -> bool:
        alerts, restarts = len(run.firing("web:web", "is unhealthy")), len(run.history("web:web", "begins to restart"))
        if run.reloaded:
            return alerts <= 1 and restarts <= 1 and len(run.resolved("web:web")) == alerts
        return alerts == 1 and restarts == 1 and len(run.resolved("web:web", "healthy again")) == 1

    stays(one_of_each, 4, "one alert, one restart by lookout, one resolution")


FEED = "[program:feed]\ncommand=sleep 1000\nstartsecs=1\n"


def orphans(run: Run) -> None:
    """supervisord killed -9 with feed running, started again: feed runs twice. Mid-way: alerted.
    Outcome: the alert stays open and `lookout status` names the orphan as long as it runs (across
    restarts of the listener and reloads: orphans are state); the orphan killed, one RESOLVED."""
    sup = run.supervisor(FEED, run.settings()).start()
    run.wait_running("feed:feed")
    # Its own RUNNING event heard too: a reconcile may know the pid before the boot's queued STARTING
    # arrives (which says no pid), and a death in between leaves lookout no pid to name.
    wait_for(lambda: run.history("feed:feed", "RUNNING (from STARTING"), 20, "feed's RUNNING event")
    orphan = sup.info("feed:feed")["pid"]
    run.leftovers.append(orphan)
    sup.proc.kill()
    sup.proc.wait(10)
    wait_for(lambda: run.hook.matching("died without shutting down"), 15, "the listener's last words")
    sup.start()
    alert = wait_for(lambda: run.firing("feed:feed", "runs twice"), 30, "runs twice")[0]
    assert f"orphan pid {orphan}" in alert, alert
    run.midway()
    run.settled()
    stays(lambda: not run.resolved("feed:feed"), 5, "the alert open while the orphan runs")
    status = run.lookout("status")
    assert f"ORPHAN pid {orphan} still runs" in status.stdout, status.stdout
    run.leftovers.remove(orphan)
    os.kill(orphan, signal.SIGKILL)
    wait_for(lambda: run.resolved("feed:feed", "orphan is gone"), run.within(30), "resolved: the orphan is gone")
    stays(lambda: len(run.firing("feed:feed", "runs twice")) == 1 and len(run.resolved("feed:feed")) == 1, 3,
          "one alert, one resolution")
