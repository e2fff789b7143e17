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
R7 a step of the wall clock changes nothing: everything runs in two worlds fed the same, one whose
   wall clock (supervisord's and the listener's) steps by minutes to hours, either way, at any
   moment (the listener running or not); what supervisord does (lookout's stops and starts among
   it, at which monotonic moment) and what people hear must be the same in both, and every time
   the rules hold lies in its listener's frame (no past time ahead of now, no wait longer than the
   longest backoff).
D1-D4 dependencies (issue 24: api needs feed; the pool needs web, healthy): D1 no restart, stop or
   brake of a dependant while a need is down; D2 nothing started for its needs before they are
   ready (as the rules know at the call); D3 never a start of what an operator stopped; D4 a
   dependant's alert that people heard of is told its end (simsup.py checks them).

`make test` runs a short profile (well under a minute); LOOKOUT_PROPERTY_EXAMPLES=2000 a long one.
"""

from __future__ import annotations

import functools
import os
import sqlite3
import tempfile
from dataclasses import dataclass, field

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from lookout.config import parse_config
from lookout.listener.rules.models import BELOW_QUORUM, LEFT_STOPPED, QUORUM, REMOVED_FROM_CONFIG
from lookout.listener.rules.timeshift import TIME_LISTS, TIMES

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
    "dependencies": [{"program": "api", "needs": ["feed"]},
                     {"program": "pool:*", "needs": ["web"], "ready": "healthy"}],
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
STEPS = [-86400, -7200, -3600, -600, -60, 60, 600, 3600, 7200, 86400]  # seconds: minutes to hours, either way
STEPPED_WALL = 1e7  # the stepped world's wall clock reads this much more from the start (80 steps stay above 0)
LONGEST_WAIT = 40.0  # feed's backoff_max; remediation's is 8 s
GATHER = 5.0  # [[dependencies]] grace: a need's first page, or a dependant's, waits this long


@dataclass
class World:
    """A supervisord, its programs and a listener with its store; the test runs two, fed the same."""

    sim: SimSupervisor
    path: str
    checker: Checker
    listener: ListenerModel | None = None
    history: list[tuple[float, str, str, str]] = field(default_factory=list)  # earlier listeners'
    said: list[tuple[str, str, str]] = field(default_factory=list)  # earlier listeners' notices

    def story(self) -> tuple[list, list]:
        """What happened (supervisord's log, at which monotonic moment) and what people heard."""
        return list(self.sim.log), self.said + self.listener.said


def each_world(rule_body):  # noqa: ANN001, ANN201
    """A rule runs in both worlds (a rule it calls runs in the world at hand); then R7."""
    @functools.wraps(rule_body)
    def run(self, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        if self.inside:
            return rule_body(self, *args, **kwargs)
        self.inside = True
        try:
            for world in self.worlds:
                self.w = world
                rule_body(self, *args, **kwargs)
        finally:
            self.inside, self.w = False, self.worlds[0]
        self._same_story()
        return None
    return run


class Guards(RuleBasedStateMachine):
    inside = False

    @property
    def sim(self) -> SimSupervisor:
        return self.w.sim

    @property
    def listener(self) -> ListenerModel:
        return self.w.listener

    @listener.setter
    def listener(self, value: ListenerModel) -> None:
        self.w.listener = value

    @property
    def path(self) -> str:
        return self.w.path

    @property
    def checker(self) -> Checker:
        return self.w.checker

    @property
    def history(self) -> list[tuple[float, str, str, str]]:
        return self.w.history

    @initialize(unhealthy=st.sets(probed))
    def boot(self, unhealthy: set[str]) -> None:
        self.dir = tempfile.TemporaryDirectory(prefix="lookout-guards-")
        self.worlds = []
        for i, wall in enumerate((0.0, STEPPED_WALL)):
            sim = SimSupervisor(PROGRAMS, wall_offset=wall)
            for p in sim.procs.values():
                sim.spawn(p)
                p.healthy = p.namespec not in unhealthy
            sim.t += 6  # past initial_delay: the probes judge from the first step
            self.w = World(sim, os.path.join(self.dir.name, f"lookout{i}.db"), Checker(sim, CONFIG))
            self.w.listener = ListenerModel(sim, CONFIG, self.w.path, self.w.checker, OWN)
            self.worlds.append(self.w)
        self.w = self.worlds[0]

    def teardown(self) -> None:
        if hasattr(self, "worlds"):
            if os.environ.get("LOOKOUT_PROPERTY_STATS"):
                for _, _ns, kind, text in self.worlds[0].history + self.worlds[0].listener.history:
                    if kind in ("action", "hold", "alert"):
                        what = text.split(":")[0].split(",")[0][:70]
                        STATS[what] = STATS.get(what, 0) + 1
            for world in self.worlds:
                world.listener.close()
            self.dir.cleanup()

    # ---- the wall clock ------------------------------------------------------------------------

    @rule(delta=st.sampled_from(STEPS))
    def the_wall_clock_steps(self, delta: float) -> None:
        """NTP or a VM restore steps the second world's wall clock (supervisord's, the listener's),
        not its monotonic clock; its listener sees it at its next turn (or its next start)."""
        self.worlds[1].sim.wall_offset += delta

    def _same_story(self) -> None:
        (done_a, said_a), (done_b, said_b) = (world.story() for world in self.worlds)
        if done_a != done_b:
            first = next(i for i, (a, b) in enumerate(zip(done_a + [None], done_b + [None])) if a != b)
            raise Violation(f"R7: with the wall clock stepped, supervisord's story differs from entry {first}: "
                            f"{done_b[first:first + 3]} instead of {done_a[first:first + 3]}")
        if said_a != said_b:
            first = next(i for i, (a, b) in enumerate(zip(said_a + [None], said_b + [None])) if a != b)
            raise Violation(f"R7: with the wall clock stepped, people hear {said_b[first:first + 3]} instead of "
                            f"{said_a[first:first + 3]}")

    # ---- time, events, lookout's steps -----------------------------------------------------

    @rule(dt=st.sampled_from([0.25, 1.0, 3.0, 6.0, 12.0, 45.0]))
    @each_world
    def time_passes(self, dt: float) -> None:
        self.sim.t += dt
        self.listener.tick()

    @rule(moves=st.lists(st.sampled_from(["event", "step", "answer"]), min_size=1, max_size=10))
    @each_world
    def the_loop_turns(self, moves: list[str]) -> None:
        """Events, the executor's steps and their answers, in the order hypothesis picks."""
        for move in moves:
            {"event": self.listener.deliver_event, "step": lambda: self.listener.run_step(0),
             "answer": self.listener.deliver_answer}[move]()

    @precondition(lambda self: self.listener.steps)
    @rule(i=st.integers(0, 3), how=st.sampled_from(["operator stop", "operator start", "operator restart", "hold",
                                                     "it dies", "listener killed"]))
    @each_world
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
    @each_world
    def reconcile(self) -> None:
        self.listener.reconcile()

    @precondition(lambda self: not self.sim.stopping)
    @rule(group=st.sampled_from(["pool", "web", "feed"]), back=st.booleans())
    @each_world
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
    @each_world
    def probe_result(self, ns: str, ok: bool, late: bool) -> None:
        p = self.sim.procs[ns]
        if late and p.old_pids:
            self.listener.probe_result(ns, p.old_pids[-1], False, self.sim.t - 0.5)  # about a previous process
        elif p.state == "RUNNING":
            self.listener.probe_result(ns, p.pid, p.healthy and ok, self.sim.t - 0.01)  # flaky at times

    @rule(flaky=st.sets(probed))
    @each_world
    def a_probe_period(self, flaky: set[str]) -> None:
        """Every probe runs once: the truth, except that flaky ones fail once."""
        self.sim.t += 1.0
        for ns in NAMES:
            p = self.sim.procs[ns]
            if p.state == "RUNNING" and ns != "feed:feed":
                self.listener.probe_result(ns, p.pid, p.healthy and ns not in flaky, self.sim.t - 0.01)

    @rule(ns=probed, healthy=st.booleans())
    @each_world
    def hangs_or_heals(self, ns: str, healthy: bool) -> None:
        self.sim.procs[ns].healthy = healthy

    @rule(ns=names)
    @each_world
    def crashes(self, ns: str) -> None:
        self.sim.crash(self.sim.procs[ns])

    @rule(ns=names)
    @each_world
    def crash_loops(self, ns: str) -> None:
        for _ in range(3):
            self.sim.t += 0.5
            self.sim.crash(self.sim.procs[ns])

    @rule(ns=st.sampled_from(["web:web", "api:api", "pool:pool_1"]), rounds=st.integers(1, 8))
    @each_world
    def unhealthy_for_a_while(self, ns: str, rounds: int) -> None:
        """A hung program and lookout dealing with it, round after round (budgets, backoff)."""
        self.sim.procs[ns].healthy = False
        for _ in range(rounds):
            self.a_probe_period(set())
            self._drain()
            self.sim.t += 2.0
            self.listener.tick()

    @rule(ns=st.sampled_from(["web:web", "api:api", "pool:pool_1"]))
    @each_world
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
    @each_world
    def feed_is_braked_and(self, how: str) -> None:
        """The crash-loop brake decides to stop feed; then something happens before its answer."""
        self.crash_loops("feed:feed")
        for _ in range(50):
            if any(a.namespec == "feed:feed" for a in self.listener.steps) or not self.listener.deliver_event():
                break
        self._at_a_bad_moment("feed:feed", how)

    @rule(how=st.sampled_from(["nothing", "kill before its call", "kill after its call", "hold", "operator start",
                               "dependency back"]))
    @each_world
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
    @each_world
    def its_dependency_goes_or_comes_back(self, ns: str, back: bool) -> None:
        self.sim.procs[ns].broken = not back

    @rule(ns=names)
    @each_world
    def supervisord_retries_or_gives_up(self, ns: str) -> None:
        self.sim.retry(self.sim.procs[ns])

    @precondition(lambda self: getattr(self.listener.engine.records.get("feed:feed"), "brake_resume_at", None))
    @rule(how=st.sampled_from(["kill before its call", "kill after its call", "hold", "operator start and stop",
                               "operator restart", "operator stop"]))
    @each_world
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
    @each_world
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
    @each_world
    def operator_stops(self, ns: str) -> None:
        self.sim.operator_stop(ns)

    @rule(ns=names)
    @each_world
    def operator_starts(self, ns: str) -> None:
        self.sim.operator_start(ns)

    @rule(ns=names)
    @each_world
    def operator_restarts(self, ns: str) -> None:
        self.sim.operator_stop(ns)
        self.sim.operator_start(ns)

    @rule(ns=names, release=st.booleans())
    @each_world
    def operator_holds_or_releases(self, ns: str, release: bool) -> None:
        conn = sqlite3.connect(self.path, timeout=5)  # another process: the `lookout` command
        with conn:
            if release:
                conn.execute("UPDATE holds SET released_at = ? WHERE namespec = ? AND released_at IS NULL",
                             (self.sim.wall(), ns))
            elif not conn.execute("SELECT 1 FROM holds WHERE namespec = ? AND released_at IS NULL", (ns,)).fetchone():
                conn.execute("INSERT INTO holds(namespec, created_at) VALUES (?, ?)", (ns, self.sim.wall()))
        conn.close()

    @rule()
    @each_world
    def listener_reads_holds(self) -> None:
        self.listener.poll_holds()

    # ---- the listener and supervisord themselves ---------------------------------------------

    @rule(ran=st.lists(st.booleans(), max_size=4))
    @each_world
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
    @each_world
    def reload_begins(self) -> None:
        self.sim.stopping = True
        self.sim.supervisor_event("STOPPING")

    @precondition(lambda self: self.sim.stopping)
    @rule()
    @each_world
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
        self.w.said.extend(self.listener.said)
        self.listener.close()
        self.listener = ListenerModel(self.sim, CONFIG, self.path, self.checker, OWN)

    # ---- settling, and what must hold then ---------------------------------------------------

    @rule()
    @each_world
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
        for world in getattr(self, "worlds", []):
            for ns in NAMES:
                said = sum(1 for _, who, kind, text in world.history + world.listener.history
                           if who == ns and text.startswith("restarted by lookout"))
                if said > world.sim.restarts_by_lookout[ns]:
                    raise Violation(f"R1: the history says lookout restarted {ns} {said} time(s); it did "
                                    f"{world.sim.restarts_by_lookout[ns]}")

    @invariant()
    def every_time_in_its_frame(self) -> None:
        """R7: a past time ahead of the listener's now, or a deadline beyond the longest wait, was not
        moved with a step of the wall clock (it would act an hour late, or at once)."""
        for world in getattr(self, "worlds", []):
            engine, now = world.listener.engine, world.listener.clock()
            for rec in engine.records.values():
                for name in TIMES[type(rec)]:
                    t, limit = getattr(rec, name), now + (LONGEST_WAIT if name in DEADLINES else 0.0)
                    if t and t > limit + 1e-6:
                        raise Violation(f"R7: {rec.namespec} {name} is {t - now:+.1f}s from now")
                for name in TIME_LISTS[type(rec)]:
                    if any(t > now + 1e-6 for t in getattr(rec, name)):
                        raise Violation(f"R7: {rec.namespec} {name} holds a time ahead of now")
            for alert in engine.book.alerts.values():  # (gather_until: a page that waits up to [[dependencies]] grace)
                if any((getattr(alert, name) or 0.0) > now + (GATHER if name == "gather_until" else 0.0) + 1e-6
                       for name in TIMES[type(alert)]):
                    raise Violation(f"R7: the alert {alert.key} holds a time ahead of now")
            spells = engine.quorum.spells.values()
            inner = {"quorum's spells": [t for sp in spells for t in (sp.started_at, sp.short_since, sp.above_since)
                                         if t is not None],
                     "stopping_since": [engine.stopping_since],
                     "unheard since": engine.process.pending.unheard_since.values(),
                     "probe failures confirming since": [t for _, t in engine.health._confirming.values()]}
            for what, times in inner.items():
                if any(t > now + 1e-6 for t in times):
                    raise Violation(f"R7: the engine's {what} holds a time ahead of now")


DEADLINES = ("brake_resume_at", "remediation_next_at")  # the times that lie ahead


# LOOKOUT_PROPERTY_NO_DB=1: no example database (when a rule is broken by hand to see the test fail,
# failures saved by an earlier run must not answer for it)
Guards.TestCase.settings = settings(max_examples=EXAMPLES, stateful_step_count=80, deadline=None,
                                    suppress_health_check=list(HealthCheck),
                                    **({"database": None} if os.environ.get("LOOKOUT_PROPERTY_NO_DB") else {}))
TestGuards = pytest.mark.long(Guards.TestCase)


def teardown_module() -> None:
    for what, n in sorted(STATS.items(), key=lambda kv: -kv[1]):
        print(f"{n:6}  {what}")
