"""Issue 13: lookout's restarts, stops and starts never go against an operator, a reload, a stale
judgement or its own restart. Against a real supervisord, real programs, the real `lookout`
command. (The same rules over every interleaving: test_guards_property.py.)"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time

import pytest

from .conftest import fast_alerts
from .harness import free_port, stays, wait_for
from .test_brake import CRASHER
from .test_probes import PATIENT, http_probe, settings, web


def history(sup, namespec: str, *needles: str) -> list[tuple[float, str]]:
    with sup.db() as c:
        rows = c.execute("SELECT at, detail FROM history WHERE namespec = ? ORDER BY id", (namespec,)).fetchall()
    return [(at, d) for at, d in rows if all(n in d for n in needles)]


def spawns(sup, name: str) -> int:
    return len(re.findall(rf"spawned: '{name}' with pid", sup.log()))


def lookout_cli(sup, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lookout", "-c", str(sup.config_path), *args],
                          capture_output=True, text=True, timeout=60)


@pytest.mark.long
def test_an_operator_stop_or_restart_during_lookouts_evidence_wins(supervisor_factory, webhook, tmp_path):
    """Acceptance 3: the evidence command runs (3 s); the operator stops the program meanwhile: it
    stays STOPPED, and no message says lookout restarted it. Then the same with an operator restart:
    one restart, not two."""
    port, marker = free_port(), tmp_path / "evidence.web"  # the evidence command leaves it: it is running
    probe = http_probe(port, action="restart", failure_threshold=1, initial_delay="1s", **PATIENT,
                       evidence=["sh", "-c", f"touch {marker}; sleep 3"])
    sup = supervisor_factory(web(port), settings(webhook, [probe], {"evidence_timeout": "10s"}))
    (sup.root / "fail.web").touch()
    sup.start()
    wait_for(marker.exists, 30, "lookout's evidence command running")
    assert sup.ctl("stop", "web").returncode == 0  # the operator, while lookout gathers its evidence
    stays(lambda: sup.state_of("web:web") == "STOPPED", 15, "the operator's stop holds")
    assert not webhook.matching("restarted by lookout")
    assert history(sup, "web:web", "called off")
    # Now an operator restart at the same moment: one restart (theirs), lookout's is called off.
    marker.unlink()
    assert sup.ctl("start", "web").returncode == 0
    wait_for(marker.exists, 30, "lookout's evidence command running again")
    before = spawns(sup, "web")
    (sup.root / "fail.web").unlink()  # the operator fixed it and restarts it
    assert sup.ctl("restart", "web").returncode == 0
    stays(lambda: spawns(sup, "web") == before + 1, 10, "exactly one restart")
    assert sup.state_of("web:web") == "RUNNING" and not webhook.matching("restarted by lookout")


@pytest.mark.long
def test_a_restarted_listener_does_not_act_on_an_old_verdict(supervisor_factory, webhook):
    """Acceptance 4: the listener is stopped while lookout waits out its backoff to restart an
    unhealthy program; the program heals; the backoff ends; the listener starts: no restart."""
    port = free_port()
    probe = http_probe(port, action="restart", failure_threshold=1, initial_delay="1s", **PATIENT)
    sup = supervisor_factory(web(port), settings(webhook, [probe], {"backoff": "15s", "max_restarts": 3}))
    (sup.root / "fail.web").touch()
    sup.start()
    wait_for(lambda: history(sup, "web:web", "restarted by lookout, 1st"), 30, "lookout's first restart")
    wait_for(lambda: sup.state_of("web:web") == "RUNNING", 15, "running again, still failing")
    wait_for(lambda: (sup.process_row("web:web") or {}).get("remediation_wanted"), 15, "the next restart waits")
    assert sup.ctl("stop", "lookout").returncode == 0
    (sup.root / "fail.web").unlink()  # it heals, same process
    pid = sup.info("web:web")["pid"]
    wait_for(lambda: time.time() > (sup.process_row("web:web") or {}).get("remediation_next_at", 0) + 1, 30,
             "the backoff is over")
    assert sup.ctl("start", "lookout").returncode == 0
    wait_for(lambda: sup.listener_output().count("lookout-listener ready") >= 2, 30, "the listener back")
    stays(lambda: sup.info("web:web")["pid"] == pid, 30, "no restart on the old verdict")
    assert len(history(sup, "web:web", "lookout begins to restart")) == 1


def test_after_a_reload_no_action_before_the_new_process_is_judged(supervisor_factory, webhook):
    """Acceptance 4, reload: while a probe fails, `supervisorctl reload`; the new process gets its
    initial_delay and failure_threshold fresh failures before lookout may act."""
    port = free_port()
    probe = http_probe(port, action="restart", failure_threshold=3, initial_delay="4s", period="1s")
    sup = supervisor_factory(web(port), settings(webhook, [probe], {"backoff": "1s", "max_restarts": 100}))
    (sup.root / "fail.web").touch()
    sup.start()
    wait_for(lambda: history(sup, "web:web", "lookout begins to restart"), 30, "lookout acts once")
    sup.ctl("reload")
    wait_for(lambda: sup.listener_output().count("lookout-listener ready") >= 2, 40, "a new listener")
    wait_for(lambda: history(sup, "web:web", "RUNNING (from STARTING") and sup.state_of("web:web") == "RUNNING",
             20, "the new process runs")
    started = sup.info("web:web")["start"]
    begun = wait_for(lambda: [at for at, _ in history(sup, "web:web", "lookout begins to restart") if at > started],
                     40, "lookout acts on the new process, in time")
    earliest = started + 4 + 2 * 1  # initial_delay, then the 3rd failure one period after another
    assert begun[0] >= earliest - 1.0, (begun[0] - started)  # supervisord's `start` is whole seconds


def test_listener_killed_while_its_stop_waits_finishes_or_says_so(supervisor_factory, webhook):
    """Acceptance 5: kill -9 of the listener while its restart's stop waits on stopwaitsecs (the
    program ignores SIGTERM): within 30 s of its restart the program runs again, or a critical
    alert says it is stopped and why. Never silently STOPPED, never a false 'restarted'."""
    programs = """\
[program:stubborn]
command=sh -c 'trap "" TERM; while :; do sleep 0.2; done'
stopwaitsecs=4
startsecs=1
"""
    probe = {"match": "stubborn", "exec": ["false"], "initial_delay": "1s", "period": "1s", "failure_threshold": 1,
             "action": "restart"}
    sup = supervisor_factory(programs, settings(webhook, [probe]))
    sup.start()
    wait_for(lambda: sup.state_of("stubborn:stubborn") == "STOPPING", 30, "lookout's stop waiting")
    listener = sup.listener_pid()
    os.kill(listener, signal.SIGKILL)
    wait_for(lambda: sup.listener_running_anew(listener), 30, "the listener restarted")
    back = time.time()

    def settled() -> bool:
        running = sup.state_of("stubborn:stubborn") == "RUNNING"
        said = webhook.matching("CRITICAL", "stubborn is stopped", "lookout hold stubborn")
        return running or bool(said)

    wait_for(settled, 30, "RUNNING again, or a critical alert that says why not")
    assert time.time() - back <= 30
    assert not webhook.matching("restarted by lookout")


@pytest.mark.long
def test_hold_keeps_a_braked_program_down_and_release_starts_it(supervisor_factory, webhook):
    """Acceptance 6: crash-loop brake "backoff"; during its wait `lookout hold bk`: still STOPPED 60 s
    later (the brake would have started it after 10 s); `lookout release bk`: started."""
    loop = {"restarts": 2, "within": "1m", "action": "backoff"}
    sup = supervisor_factory(CRASHER.format(name="bk"), fast_alerts(webhook, crash_loop=loop)).start()
    webhook.wait("bk is crash-looping", timeout=30)
    wait_for(lambda: sup.state_of("bk:bk") == "STOPPED", 20, "braked: STOPPED during the wait")
    held = lookout_cli(sup, "hold", "bk", "--reason", "investigating")
    assert held.returncode == 0 and "bk: held" in held.stdout, held.stdout + held.stderr
    status = lookout_cli(sup, "status", "bk")
    assert "held" in status.stdout and "lookout release bk" in status.stdout, status.stdout
    assert sup.ctl("stop", "bk").stdout.strip().endswith("ERROR (not running)")  # why a hold is needed
    starts = spawns(sup, "bk")
    stays(lambda: sup.state_of("bk:bk") == "STOPPED" and spawns(sup, "bk") == starts, 60, "held down")
    released = lookout_cli(sup, "release", "bk")
    assert released.returncode == 0 and "released" in released.stdout
    wait_for(lambda: spawns(sup, "bk") > starts, 15, "started by the brake once released")


POOL = """\
[program:pool]
command=sh -c 'while [ ! -f %(here)s/down.$SUPERVISOR_PROCESS_NAME ]; do sleep 0.2; done; exit 3'
process_name=%(program_name)s_%(process_num)d
numprocs=3
startsecs=1
autorestart=false
"""


def test_operator_stops_are_not_an_outage_but_a_crash_is_named(supervisor_factory, webhook):
    """Acceptance 7: `supervisorctl stop pool:*` pages nobody; one member crashing for good
    (autorestart=false) in a pool of 3 with min_running = 3: one quorum alert naming it."""
    s = fast_alerts(webhook)
    s["alerts"]["groups"] = [{"match": "pool", "min_running": 3, "for": "2s"}]
    sup = supervisor_factory(POOL, s).start()
    for i in range(3):
        sup.wait_state(f"pool:pool_{i}", "RUNNING", 15)
    assert sup.ctl("stop", "pool:*").returncode == 0
    stays(lambda: not webhook.messages, 6, "no message for the operator's own stops")
    assert sup.ctl("start", "pool:*").returncode == 0
    for i in range(3):
        sup.wait_state(f"pool:pool_{i}", "RUNNING", 15)
    (sup.root / "down.pool_1").touch()
    alert = webhook.wait("pool is below quorum", timeout=30)[0]
    assert "pool: 2 of 3 running (minimum 3); down: pool_1 EXITED since" in alert.text, alert.text
    stays(lambda: len(webhook.matching("pool is below quorum")) == 1, 4, "one quorum alert")
    lines = lookout_cli(sup, "status").stdout
    assert "group pool: 2 of 3 running (minimum 3), short by 1: 1 down (pool_1)" in lines


SLOW_STARTER = """\
[program:{name}]
command=sh -c 'exec sleep 1000'
startsecs=6
stopwaitsecs=2
"""


@pytest.mark.long
def test_the_operator_wins_during_lookouts_start(supervisor_factory, webhook, tmp_path):
    """Review findings: during lookout's start (startsecs = 6), an operator's restart (a), hold (b)
    or stop (c). Afterwards a and b run, c is stopped; lookout never stops any of them again, never
    says it could not restart them."""
    names = ("a", "b", "c")
    probes = [{"match": n, "exec": ["sh", "-c", f"test ! -e {tmp_path}/fail.{n}"], "initial_delay": "1s",
               "period": "1s", "failure_threshold": 1, "action": "restart"} for n in names]
    sup = supervisor_factory("".join(SLOW_STARTER.format(name=n) for n in names), settings(webhook, probes))
    for n in names:
        (tmp_path / f"fail.{n}").touch()
    sup.start()
    for n in names:
        wait_for(lambda n=n: history(sup, f"{n}:{n}", "stopped by lookout's own call")
                 and sup.state_of(f"{n}:{n}") == "STARTING", 40, f"lookout's start of {n} under way")
        (tmp_path / f"fail.{n}").unlink()
    assert sup.ctl("stop", "c").returncode == 0  # (quick ones first: all three inside lookout's 6 s start)
    assert "b: held" in lookout_cli(sup, "hold", "b").stdout
    assert sup.ctl("restart", "a").returncode == 0
    stays(lambda: [sup.state_of(f"{n}:{n}") for n in names] in (["STARTING", "RUNNING", "STOPPED"],
                                                                ["RUNNING", "RUNNING", "STOPPED"]), 12,
          "the operator's word stands")
    for n in names:
        assert len(history(sup, f"{n}:{n}", "lookout begins to stop")) == 0, history(sup, f"{n}:{n}")
        assert len(history(sup, f"{n}:{n}", "lookout begins to restart")) == 1
    assert not webhook.matching("could not be restarted") and not webhook.matching("restarted by lookout")


def test_no_restart_when_it_recovers_during_the_evidence(supervisor_factory, webhook, tmp_path):
    """Review finding: a slow evidence command (py-spy dump) and a process that recovers meanwhile:
    lookout checks again before it stops anything."""
    port, marker = free_port(), tmp_path / "evidence.web"
    probe = http_probe(port, action="restart", failure_threshold=2, initial_delay="1s",
                       evidence=["sh", "-c", f"touch {marker}; sleep 5; echo stack-dump"])
    sup = supervisor_factory(web(port), settings(webhook, [probe], {"evidence_timeout": "10s"}))
    (sup.root / "fail.web").touch()
    sup.start()
    wait_for(marker.exists, 30, "lookout's evidence command running")
    pid = sup.info("web:web")["pid"]
    (sup.root / "fail.web").unlink()
    wait_for(lambda: history(sup, "web:web", "unhealthy (http probe) resolved: healthy again"), 20, "healthy again")
    wait_for(lambda: history(sup, "web:web", "recovered while lookout gathered its evidence"), 20, "called off")
    assert sup.info("web:web")["pid"] == pid and not webhook.matching("restarted by lookout")


def test_a_graceful_operator_stop_of_a_pool_pages_nobody(supervisor_factory, webhook):
    """Review finding: members that take longer than `for` to stop (STOPPING) are stopped on purpose."""
    pool = """\
[program:pool]
command=sh -c 'trap "sleep 4; exit 0" TERM; while :; do sleep 0.2; done'
process_name=%(program_name)s_%(process_num)d
numprocs=3
startsecs=1
stopwaitsecs=10
"""
    s = fast_alerts(webhook)
    s["alerts"]["groups"] = [{"match": "pool", "min_running": 3, "for": "2s"}]
    sup = supervisor_factory(pool, s).start()
    for i in range(3):
        sup.wait_state(f"pool:pool_{i}", "RUNNING", 15)
    assert sup.ctl("stop", "pool:*").returncode == 0
    stays(lambda: not webhook.messages, 5, "no page for an operator's slow stop")
