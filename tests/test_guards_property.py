"""Issue 13: lookout's guards as properties over every interleaving (hypothesis, stateful).

The pure rules and the executor's real step code run against a simulated supervisord (simsup):
crashes, hangs and heals, operator stop / start / restart (also in the middle of lookout's
actions), probe results (also late ones about a previous pid), lookout's steps and their answers
in any order, the listener killed between a call and its answer (state restored through the real
store), reloads, holds and the passing of time. After every step the rules are checked:

R1 the operator wins: lookout starts only what its own call stopped, with no operator command
   since; it never stops on a decision older than an operator's command; no message claims a
   restart that did not happen.
R2 fresh judgement: a probe's action rests on failures of the current process, past its
   initial_delay, that this listener incarnation saw itself.
R3 nothing left half-done: once things settle, a program lookout stopped is running again, or an
   open alert says why it is not, or an operator holds it.
R4 budget and quiet times: at most max_restarts in `within`; nothing begins while supervisord
   stops or reloads; never on protected programs.
R5 the operator can say no: no step of lookout's on a held process.
R6 deliberate is not down: the quorum alert is open exactly when the group is short of what is
   not stopped on purpose, and names every member that is down.

`make test` runs a short profile (well under a minute); LOOKOUT_PROPERTY_EXAMPLES=2000 a long one.
"""

from __future__ import annotations

import os
import sqlite3
import tempfile

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from lookout.listener.config import parse_config
from lookout.listener.rules.models import BELOW_QUORUM, LEFT_STOPPED, QUORUM, REMOVED_FROM_CONFIG

from .simsup import STARTRETRIES, Checker, ListenerModel, SimSupervisor, Violation

EXAMPLES = int(os.environ.get("LOOKOUT_PROPERTY_EXAMPLES", "300"))
PROGRAMS = [("web", "web"), ("api", "api"), ("feed", "feed"), ("pool", "pool_0"), ("pool", "pool_1"),
            ("pool", "pool_2"), ("lookout", "lookout")]
NAMES = [f"{g}:{n}" for g, n in PROGRAMS]
OWN = "lookout:lookout"
CONFIG = parse_config({
    "probes": [
        {"match": "web", "http": {"url": "http://127.0.0.1:1/h"}, "initial_delay": "2s", "period": "1s",
         "failure_threshold": 2, "action": "restart", "evidence": ["true"]},
        {"match": "api", "http": {"url": "http://127.0.0.1:1/h"}, "initial_delay": "2s", "period": "1s",
         "failure_threshold": 2, "action": "restart"},
        {"match": "pool:*", "http": {"url": "http://127.0.0.1:1/h"}, "initial_delay": "2s", "period": "1s",
         "failure_threshold": 2, "action": "restart"},
        {"match": "lookout", "http": {"url": "http://127.0.0.1:1/h"}, "period": "1s", "failure_threshold": 1,
         "action": "restart"},
    ],
    "remediation": {"max_restarts": 2, "within": "1h", "backoff": "2s", "backoff_max": "8s"},
    "alerts": {
        "programs": [{"match": "feed", "crash_loop": {"restarts": 3, "within": "1m", "action": "backoff",
                                                       "backoff": "10s", "backoff_max": "40s",
                                                       "reset_after": "2m"}}],
        "groups": [{"match": "pool", "min_running": 3, "for": "10s"}],
    },
})

STATS: dict[str, int] = {}  # LOOKOUT_PROPERTY_STATS=1: what the runs exercised, printed at the end
names = st.sampled_from(NAMES)
probed = st.sampled_from([ns for ns in NAMES if ns != "feed:feed"])


class Guards(RuleBasedStateMachine):
    @initialize(unhealthy=st.sets(probed))
    def boot(self, unhealthy: set[str]) -> None:
        self.dir = tempfile.TemporaryDirectory(prefix="lookout-guards-")
        self.path = os.path.join(self.dir.name, "lookout.db")
        self.sim = SimSupervisor(PROGRAMS)
        for p in self.sim.procs.values():
            self.sim.spawn(p)
            p.healthy = p.namespec not in unhealthy
        self.sim.t += 6  # past initial_delay: the probes judge from the first step
        self.checker = Checker(self.sim, CONFIG)
        self.listener = ListenerModel(self.sim, CONFIG, self.path, self.checker, OWN)
        self.history: list[tuple[float, str, str, str]] = []

    def teardown(self) -> None:
        if hasattr(self, "listener"):
            if os.environ.get("LOOKOUT_PROPERTY_STATS"):
                for _, _ns, kind, text in self.history + self.listener.history:
                    if kind in ("action", "hold", "alert"):
                        what = text.split(":")[0].split(",")[0][:70]
                        STATS[what] = STATS.get(what, 0) + 1
            self.listener.close()
            self.dir.cleanup()

    # ---- time, events, lookout's steps -----------------------------------------------------

    @rule(dt=st.sampled_from([0.3, 1.0, 3.0, 6.0, 12.0, 45.0]))
    def time_passes(self, dt: float) -> None:
        self.sim.t += dt
        self.listener.tick()

    @rule(moves=st.lists(st.sampled_from(["event", "step", "answer"]), min_size=1, max_size=10))
    def the_loop_turns(self, moves: list[str]) -> None:
        """Events, the executor's steps and their answers, in the order hypothesis picks."""
        for move in moves:
            {"event": self.listener.deliver_event, "step": lambda: self.listener.run_step(0),
             "answer": self.listener.deliver_answer}[move]()

    @precondition(lambda self: self.listener.steps)
    @rule(i=st.integers(0, 3), how=st.sampled_from(["operator stop", "operator start", "operator restart", "hold",
                                                     "it dies", "listener killed"]))
    def something_happens_during_a_call(self, i: int, how: str) -> None:
        """A step of lookout's makes its call, and during its stopwaitsecs or startsecs ..."""
        steps = self.listener.steps
        ns = steps[i % len(steps)].namespec
        p = self.sim.procs[ns]

        def meanwhile() -> None:
            if how == "operator stop":
                self.sim.operator_stop(ns)
            elif how == "operator start":
                self.sim.operator_start(ns)
            elif how == "operator restart":
                self.operator_restarts(ns)
            elif how == "hold":
                self.operator_holds_or_releases(ns, False)
                self.listener.poll_holds()
            elif how == "it dies" and p.state == "STARTING":
                p.state = "BACKOFF"
                self.sim._event(p, "BACKOFF", "STARTING", tries=1)

        self.listener.client.during = meanwhile
        self.listener.run_step(i)
        self.listener.client.during = None
        if how == "listener killed":
            self.listener.answers.clear()  # the call went through; its answer died with the listener
            self._new_listener()

    @rule()
    def reconcile(self) -> None:
        self.listener.reconcile()

    @precondition(lambda self: not self.sim.stopping)
    @rule(group=st.sampled_from(["pool", "web", "feed"]), back=st.booleans())
    def update_removes_a_group(self, group: str, back: bool) -> None:
        """Issue 21, case 8: `reread` + `update` removes a group (its processes stopped first, then
        PROCESS_GROUP_REMOVED): every alert of it that was open closes as "removed from supervisord's
        configuration", none stays open; its quorum alert likewise. back: added again (a changed
        configuration): a new start."""
        sim = self.sim
        if any(p.removed for p in sim.procs.values() if p.group == group):
            sim.update_adds(group)
            return
        self._drain()
        engine = self.listener.engine
        members = {ns for ns, p in sim.procs.items() if p.group == group}
        was_open = [a.key for a in engine.book.alerts.values()
                    if a.namespec in members or (a.family == QUORUM and a.namespec == group)]
        sim.update_removes(group)
        self._drain()
        engine = self.listener.engine
        still = [a.key for a in engine.book.alerts.values()
                 if a.namespec in members or (a.family == QUORUM and a.namespec == group)]
        if still:
            raise Violation(f"case 8: {group} was removed, these alerts stay open: {still}")
        for key in was_open:
            alert = engine.book.recently_closed.get(key)
            if alert is None or alert.resolution != REMOVED_FROM_CONFIG:
                raise Violation(f"case 8: {key} of removed {group} closed as {alert and alert.resolution!r}")
        if back:
            sim.update_adds(group)

    # ---- the programs ------------------------------------------------------------------------

    @rule(ns=probed, ok=st.booleans(), late=st.booleans())
    def probe_result(self, ns: str, ok: bool, late: bool) -> None:
        p = self.sim.procs[ns]
        if late and p.old_pids:
            self.listener.probe_result(ns, p.old_pids[-1], False, self.sim.t - 0.5)  # about a previous process
        elif p.state == "RUNNING":
            self.listener.probe_result(ns, p.pid, p.healthy and ok, self.sim.t - 0.01)  # flaky at times

    @rule(flaky=st.sets(probed))
    def a_probe_period(self, flaky: set[str]) -> None:
        """Every probe runs once: the truth, except that flaky ones fail once."""
        self.sim.t += 1.0
        for ns in NAMES:
            p = self.sim.procs[ns]
            if p.state == "RUNNING" and ns != "feed:feed":
                self.listener.probe_result(ns, p.pid, p.healthy and ns not in flaky, self.sim.t - 0.01)

    @rule(ns=probed, healthy=st.booleans())
    def hangs_or_heals(self, ns: str, healthy: bool) -> None:
        self.sim.procs[ns].healthy = healthy

    @rule(ns=names)
    def crashes(self, ns: str) -> None:
        self.sim.crash(self.sim.procs[ns])

    @rule(ns=names)
    def crash_loops(self, ns: str) -> None:
        for _ in range(3):
            self.sim.t += 0.5
            self.sim.crash(self.sim.procs[ns])

    @rule(ns=st.sampled_from(["web:web", "api:api", "pool:pool_1"]), rounds=st.integers(1, 8))
    def unhealthy_for_a_while(self, ns: str, rounds: int) -> None:
        """A hung program and lookout dealing with it, round after round (budgets, backoff)."""
        self.sim.procs[ns].healthy = False
        for _ in range(rounds):
            self.a_probe_period(set())
            self._drain()
            self.sim.t += 2.0
            self.listener.tick()

    @rule(ns=st.sampled_from(["web:web", "api:api", "pool:pool_1"]))
    def held_while_it_hangs_then_released(self, ns: str) -> None:
        """Issue 21, case 9: lookout wants a restart while an operator holds the program. Released, with
        the probe still failing, lookout asks again: within one probe period + backoff it begins the
        restart (or, its budget spent, says it is exhausted). Never while held (R5 checks every step)."""
        self._drain()
        p, e = self.sim.procs[ns], self.listener.engine
        self.operator_holds_or_releases(ns, False)
        self.listener.poll_holds()
        p.healthy = False
        for _ in range(3):
            self.a_probe_period(set())
            self._drain()
        rec = e.records[ns]
        judged = bool(e.health.unhealthy(ns))  # this listener's verdict on the process running now
        wanted = judged and rec.action is None and p.state == "RUNNING" and not self.sim.stopping and e.held(ns) \
            and not rec.remediation_exhausted
        self.operator_holds_or_releases(ns, True)
        self.listener.poll_holds()
        r = CONFIG.remediation
        for _ in range(int(r.backoff_max) + 2):
            self.listener.tick()
            if any(a.namespec == ns for a in self.listener.steps) or rec.remediation_exhausted:
                return
            self.a_probe_period(set())
        if wanted and p.state == "RUNNING" and not self.sim.stopping:
            raise Violation(f"case 9: {ns} was released with a restart held back, still fails, and lookout does "
                            "nothing")

    @rule(how=st.sampled_from(["kill before its call", "kill after its call", "hold", "operator start and stop",
                               "operator restart", "operator stop"]))
    def feed_is_braked_and(self, how: str) -> None:
        """The crash-loop brake decides to stop feed; then something happens before its answer."""
        self.crash_loops("feed:feed")
        for _ in range(50):
            if any(a.namespec == "feed:feed" for a in self.listener.steps) or not self.listener.deliver_event():
                break
        self._at_a_bad_moment("feed:feed", how)

    @rule(how=st.sampled_from(["nothing", "kill before its call", "kill after its call", "hold", "operator start",
                               "dependency back"]))
    def feed_goes_fatal_during_the_brakes_stop(self, how: str) -> None:
        """A crash loop at boot: feed's dependency is missing, so every start dies within startsecs;
        the brake decides to stop it, and supervisord gives up (FATAL) before the stop's call."""
        sim, p = self.sim, self.sim.procs["feed:feed"]
        p.broken = True
        sim.crash(p)
        for _ in range(2 * STARTRETRIES + 2):
            for _ in range(50):
                if any(a.namespec == "feed:feed" for a in self.listener.steps) or not self.listener.deliver_event():
                    break
            if p.state == "FATAL":
                break
            sim.t += 0.5
            sim.retry(p)
        if how == "operator start":
            sim.operator_start("feed:feed")
        elif how == "dependency back":
            p.broken = False
        elif how != "nothing":
            self._at_a_bad_moment("feed:feed", how)

    @rule(ns=names, back=st.booleans())
    def its_dependency_goes_or_comes_back(self, ns: str, back: bool) -> None:
        self.sim.procs[ns].broken = not back

    @rule(ns=names)
    def supervisord_retries_or_gives_up(self, ns: str) -> None:
        self.sim.retry(self.sim.procs[ns])

    @precondition(lambda self: getattr(self.listener.engine.records.get("feed:feed"), "brake_resume_at", None))
    @rule(how=st.sampled_from(["kill before its call", "kill after its call", "hold", "operator start and stop",
                               "operator restart", "operator stop"]))
    def while_the_brake_waits(self, how: str) -> None:
        self._at_a_bad_moment("feed:feed", how)
        self.sim.t += 41.0
        self.listener.tick()

    def _at_a_bad_moment(self, ns: str, how: str) -> None:
        if how.startswith("kill"):
            self.listener_killed([how == "kill after its call"])
        elif how == "hold":
            self.operator_holds_or_releases(ns, False)
            self.listener.poll_holds()
        elif how == "operator start and stop":
            self.sim.operator_start(ns)
            self.sim.operator_stop(ns)
        elif how == "operator restart":
            self.operator_restarts(ns)
        else:
            self.sim.operator_stop(ns)

    # ---- the operator ------------------------------------------------------------------------

    def _acting_on(self) -> list[str]:
        return sorted(ns for ns, rec in self.listener.engine.records.items() if rec.action is not None
                      or rec.brake_resume_at is not None)

    @precondition(lambda self: self._acting_on())
    @rule(i=st.integers(0, 5), how=st.sampled_from(["stop", "start", "restart", "hold", "kill"]))
    def operator_acts_while_lookout_does(self, i: int, how: str) -> None:
        """The interesting moment: an operator (or a kill -9 of the listener) in the middle of lookout's action."""
        acting = self._acting_on()
        ns = acting[i % len(acting)]
        if how in ("stop", "restart"):
            self.sim.operator_stop(ns)
        if how in ("start", "restart"):
            self.sim.operator_start(ns)
        if how == "hold":
            self.operator_holds_or_releases(ns, False)
        if how == "kill":
            self.listener_killed([True])

    @rule(ns=names)
    def operator_stops(self, ns: str) -> None:
        self.sim.operator_stop(ns)

    @rule(ns=names)
    def operator_starts(self, ns: str) -> None:
        self.sim.operator_start(ns)

    @rule(ns=names)
    def operator_restarts(self, ns: str) -> None:
        self.sim.operator_stop(ns)
        self.sim.operator_start(ns)

    @rule(ns=names, release=st.booleans())
    def operator_holds_or_releases(self, ns: str, release: bool) -> None:
        conn = sqlite3.connect(self.path, timeout=5)  # another process: the `lookout` command
        with conn:
            if release:
                conn.execute("UPDATE holds SET released_at = ? WHERE namespec = ? AND released_at IS NULL",
                             (self.sim.t, ns))
            elif not conn.execute("SELECT 1 FROM holds WHERE namespec = ? AND released_at IS NULL", (ns,)).fetchone():
                conn.execute("INSERT INTO holds(namespec, created_at) VALUES (?, ?)", (ns, self.sim.t))
        conn.close()

    @rule()
    def listener_reads_holds(self) -> None:
        self.listener.poll_holds()

    # ---- the listener and supervisord themselves ---------------------------------------------

    @rule(ran=st.lists(st.booleans(), max_size=4))
    def listener_killed(self, ran: list[bool]) -> None:
        """kill -9 (or a crash) of the listener: steps in flight may or may not have made their call;
        their answers are lost; supervisord keeps the undelivered events for the next listener."""
        old = self.listener
        for did_run in ran:
            if old.steps and did_run:
                old.run_step(0)
        self._new_listener()

    @precondition(lambda self: not self.sim.stopping)
    @rule()
    def reload_begins(self) -> None:
        self.sim.stopping = True
        self.sim.supervisor_event("STOPPING")

    @precondition(lambda self: self.sim.stopping)
    @rule()
    def reload_ends(self) -> None:
        """supervisord stopped everything (the listener too: events of that window are lost) and
        starts everything again with new pids."""
        sim = self.sim
        sim.events.clear()
        for p in sim.procs.values():
            if p.state in ("RUNNING", "STARTING", "BACKOFF") and not p.removed:
                sim.halt(p, "supervisord")
            p.operator_seq, p.lookout_restarts = sim.next_seq(), []
        sim.events.clear()
        sim.stopping = False
        sim.supervisor_event("RUNNING")
        for p in sim.procs.values():
            sim.spawn(p)
            p.operator_serial = sim.serial
        self._new_listener()

    def _new_listener(self) -> None:
        self.history.extend(self.listener.history)
        self.listener.close()
        self.listener = ListenerModel(self.sim, CONFIG, self.path, self.checker, OWN)

    # ---- settling, and what must hold then ---------------------------------------------------

    @rule()
    def things_settle(self) -> None:
        """Everything in flight arrives, time passes beyond every wait: R3 and R6 hold then."""
        if self.sim.stopping:
            self.reload_ends()
        for _ in range(3):
            self._drain()
            for p in self.sim.procs.values():  # supervisord's retries: RUNNING, or FATAL in the end
                for _ in range(STARTRETRIES + 2):
                    self.sim.retry(p)
            self._drain()
            self.sim.t += 60
            self.listener.tick()
        self._drain()
        engine = self.listener.engine
        for ns, p in self.sim.procs.items():
            if p.removed:
                continue
            if p.state == "STOPPED" and p.last_stopper == "lookout" and ns != OWN:
                open_alerts = engine.book.of(ns)
                rec = engine.records[ns]
                if not open_alerts and not engine.held(ns) and rec.brake_resume_at is None:
                    raise Violation(f"R3: {ns} is left STOPPED by lookout with no alert, no hold, no pending start")
            if p.state == "FATAL" and ns != OWN and engine.book.get("process", ns) is None:
                raise Violation(f"R3: {ns} is FATAL with no alert")
        self._check_quorum()

    def _drain(self) -> None:
        for _ in range(500):
            moved = self.listener.deliver_event() or self.listener.run_step(0) or self.listener.deliver_answer()
            if self.listener.reconcile_due and not moved and not self.sim.stopping:
                self.listener.reconcile()
                moved = True
            if not moved:
                self.listener.poll_holds()
                return
        raise AssertionError("the simulation does not settle")

    def _check_quorum(self) -> None:
        engine = self.listener.engine
        procs = [p for p in self.sim.procs.values() if p.group == "pool" and not p.removed]
        unknown = [p for p in procs if (engine.book.get("remediation", p.namespec) or None) is not None
                   and engine.book.get("remediation", p.namespec).kind == LEFT_STOPPED]
        running = sum(p.state == "RUNNING" for p in procs)
        deliberate = sum(p.state == "STOPPED" and p.last_stopper in ("operator", "never") for p in procs)
        short = running < min(3, len(procs) - deliberate)
        alert = engine.book.get(QUORUM, "pool")
        if not unknown and short != (alert is not None):
            raise Violation(f"R6: pool short={short} (running {running}, deliberate {deliberate}) but alert={alert}")
        if alert is not None:
            assert alert.kind == BELOW_QUORUM
            down = [p.name for p in procs if p.state != "RUNNING" and not (
                p.state == "STOPPED" and p.last_stopper in ("operator", "never"))]
            missing = [name for name in down if name not in alert.detail]
            if missing and not unknown:
                raise Violation(f"R6: the quorum alert does not name {missing}: {alert.detail}")

    @invariant()
    def no_claim_of_what_did_not_happen(self) -> None:
        if not hasattr(self, "listener"):
            return
        for ns in NAMES:
            said = sum(1 for _, who, kind, text in self.history + self.listener.history
                       if who == ns and text.startswith("restarted by lookout"))
            if said > self.sim.restarts_by_lookout[ns]:
                raise Violation(f"R1: the history says lookout restarted {ns} {said} time(s); it did "
                                f"{self.sim.restarts_by_lookout[ns]}")


# LOOKOUT_PROPERTY_NO_DB=1: no example database (when a rule is broken by hand to see the test fail,
# failures saved by an earlier run must not answer for it)
Guards.TestCase.settings = settings(max_examples=EXAMPLES, stateful_step_count=80, deadline=None,
                                    suppress_health_check=list(HealthCheck),
                                    **({"database": None} if os.environ.get("LOOKOUT_PROPERTY_NO_DB") else {}))
TestGuards = Guards.TestCase


def teardown_module() -> None:
    for what, n in sorted(STATS.items(), key=lambda kv: -kv[1]):
        print(f"{n:6}  {what}")
