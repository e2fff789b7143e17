"""A simulated supervisord and listener for the stateful property test of lookout's guards.

The rules (AlertEngine) and the executor's real step code (RemediationExecutor._do) run against
a model of supervisord that keeps what really happened (who stopped and started what, when),
so the test can hold lookout's decisions against the truth. Events, executor steps and their
answers travel through queues that the state machine drains in any order it likes: late events,
answers crossing operator commands, a listener killed between a call and its answer. The
listener's state goes through the real store (SQLite), as it does across a real restart.
"""

from __future__ import annotations

import itertools
import xmlrpc.client
from collections import deque
from dataclasses import dataclass, field

from lookout.clock import LookoutClock, clock_meta
from lookout.config import Config
from lookout.listener.loop.clock_steps import commit_for_step, commit_for_stored_frame
from lookout.listener.protocol.events import Delivery, ProcessGroupEvent, ProcessStateEvent, SupervisorStateEvent
from lookout.listener.rules.engine import AlertEngine
from lookout.listener.rules.models import Action, ActionResult, Outcome, ProcessSnapshot
from lookout.listener.store.schema import connect
from lookout.listener.store.state import StateStore
from lookout.listener.workers.executor import RemediationExecutor
from lookout.listener.workers.inbox import Inbox
from lookout.listener.workers.watcher import steady

BOOT = "sim-boot"  # one boot: a listener started again may find its store's times in another frame
STATE_CODES = {"STOPPED": 0, "STARTING": 10, "RUNNING": 20, "BACKOFF": 30, "STOPPING": 40, "EXITED": 100,
               "FATAL": 200}
STARTRETRIES = 3


@dataclass
class SimProc:
    group: str
    name: str
    state: str = "STOPPED"
    pid: int = 0
    start: int = 0  # supervisord's whole-second `start`
    stop: int = 0
    healthy: bool = True
    broken: bool = False  # its dependency is missing: every start dies within startsecs (BACKOFF, then FATAL)
    removed: bool = False  # `supervisorctl update` took it out of supervisord (BAD_NAME, no events)
    tries: int = 0  # supervisord's BACKOFF count: past STARTRETRIES it gives up (FATAL)
    backoff_at: float = 0.0  # when it last went BACKOFF (monotonic: the simulation's t)
    lookout_stopped_t: float = -1e9  # when lookout's stop call last stopped it (monotonic)
    old_pids: list[int] = field(default_factory=list)
    # The truth, for the checks
    last_stopper: str = "never"  # operator, lookout, supervisord (reload), never
    operator_seq: int = -1  # when (in the simulation's order of things) the last operator command changed it
    operator_serial: int = 0  # the serial of that command's last event: has the listener heard of it?
    lookout_stop_seq: int = -1  # lookout's own successful stop (a restart's first half)
    lookout_restarts: list[float] = field(default_factory=list)  # lookout stops of restarts, since operator_at
    fatal_claim_seq: int = -1  # the brake's stop found it FATAL (no operator command it had heard of since its
    # decision): lookout may start it after the wait, while no operator command comes after this

    @property
    def namespec(self) -> str:
        return f"{self.group}:{self.name}"


class Violation(AssertionError):
    pass


class SimSupervisor:
    def __init__(self, programs: list[tuple[str, str]], wall_offset: float = 0.0) -> None:
        self.t = 1000.0  # the truth: monotonic time
        self.wall_offset = wall_offset  # the wall clock (supervisord's times, the listener's) is t + this
        self.procs = {f"{g}:{n}": SimProc(g, n) for g, n in programs}
        self.events: deque[object] = deque()  # to the listener, in supervisord's order
        self.serial = 0  # of the last event queued
        self.delivered = 0  # serial of the last event the listener has read
        self.started_at: dict[int, float] = {}  # pid -> when it was spawned
        self.log: list[tuple[float, str, str]] = []  # what really happened, for reading a failure
        self.stopping = False
        self._pids = itertools.count(100)
        self._serial = itertools.count(1)
        self._seq = itertools.count(1)
        self.restarts_by_lookout: dict[str, int] = {ns: 0 for ns in self.procs}  # stop and start both lookout's

    def wall(self) -> float:
        return self.t + self.wall_offset

    def next_seq(self) -> int:
        """The order of things that happen at the same simulated time."""
        return next(self._seq)

    # ---- transitions (each queues its events) --------------------------------------------

    def _event(self, p: SimProc, state: str, from_state: str, **kw: object) -> None:
        n = self.serial = next(self._serial)
        self.events.append(ProcessStateEvent(Delivery("sim", n, "lookout", n, f"PROCESS_STATE_{state}"), state,
                                             p.group, p.name, from_state, **kw))  # type: ignore[arg-type]

    def supervisor_event(self, state: str) -> None:
        n = next(self._serial)
        self.events.append(SupervisorStateEvent(Delivery("sim", n, "lookout", n, f"SUPERVISOR_STATE_CHANGE_{state}"),
                                                state))

    def update_removes(self, group: str) -> None:
        """`supervisorctl update` after its group left the configuration: stopProcessGroup (STOPPING /
        STOPPED events, nobody's in particular), then removeProcessGroup (PROCESS_GROUP_REMOVED)."""
        for p in self.procs.values():
            if p.group == group and not p.removed:
                if p.state in ("RUNNING", "STARTING", "BACKOFF"):
                    self.halt(p, "update")
                p.removed = True
        n = next(self._serial)
        self.events.append(ProcessGroupEvent(Delivery("sim", n, "lookout", n, "PROCESS_GROUP_REMOVED"), "REMOVED",
                                             group))

    def update_adds(self, group: str) -> None:
        """The group back in the configuration (a changed one): new processes, started (autostart)."""
        for p in self.procs.values():
            if p.group == group and p.removed:
                p.removed, p.state, p.tries, p.last_stopper = False, "STOPPED", 0, "never"
                self.spawn(p, "update")
                p.operator_seq, p.operator_serial, p.lookout_restarts = self.next_seq(), self.serial, []

    def spawn(self, p: SimProc, by: str = "") -> None:
        if p.removed:
            return
        self.spawn_begin(p, by)
        if p.broken:
            self.dies_starting(p)
        else:
            self.spawn_finish(p)

    def dies_starting(self, p: SimProc) -> None:
        """It exits within startsecs: BACKOFF (supervisord retries it later: retry)."""
        if p.state == "STARTING":
            p.state, p.stop, p.tries, p.backoff_at = "BACKOFF", int(self.wall()), p.tries + 1, self.t
            self._event(p, "BACKOFF", "STARTING", tries=p.tries)

    def retry(self, p: SimProc) -> None:
        """supervisord's next attempt after a BACKOFF, or, past startretries, it gives up: FATAL."""
        if p.state != "BACKOFF" or p.removed:
            return
        if p.tries > STARTRETRIES:
            p.state, p.tries = "FATAL", 0
            self.log.append((self.t, p.namespec, "FATAL: supervisord gave up"))
            self._event(p, "FATAL", "BACKOFF")
            return
        self.t = max(self.t, p.backoff_at + p.tries)  # supervisord waits `tries` seconds before the next attempt
        self.spawn(p)

    def spawn_begin(self, p: SimProc, by: str = "") -> None:
        """STARTING: a new process, not RUNNING until its startsecs have passed (spawn_finish)."""
        self.log.append((self.t, p.namespec, f"spawned by {by or 'supervisord'} (was {p.state}, pid {p.pid})"))
        if p.pid:
            p.old_pids = (p.old_pids + [p.pid])[-3:]
        was = p.state
        p.pid, p.start, p.state = next(self._pids), int(self.wall()), "STARTING"
        self.started_at[p.pid] = self.t
        self._event(p, "STARTING", was, tries=0)

    def spawn_finish(self, p: SimProc) -> None:
        if p.state == "STARTING":
            p.state, p.tries = "RUNNING", 0
            self._event(p, "RUNNING", "STARTING", pid=p.pid)

    def halt(self, p: SimProc, by: str) -> None:
        self.halt_begin(p, by)
        self.halt_finish(p, by)

    def halt_begin(self, p: SimProc, by: str) -> None:
        """STOPPING (from RUNNING or STARTING): not STOPPED until the process has gone (halt_finish)."""
        if p.state in ("RUNNING", "STARTING"):
            self._event(p, "STOPPING", p.state, pid=p.pid)
            p.state = "STOPPING"

    def halt_finish(self, p: SimProc, by: str) -> None:
        was, pid = p.state, p.pid
        self.log.append((self.t, p.namespec, f"stopped by {by} (was {was}, pid {pid})"))
        p.state, p.stop, p.last_stopper = "STOPPED", int(self.wall()), by
        if was == "BACKOFF":
            pid = 0  # (no process: STOPPED pid:0, and no STOPPING before it)
        self._event(p, "STOPPED", "STOPPING" if was != "BACKOFF" else "BACKOFF", pid=pid)

    def crash(self, p: SimProc) -> None:
        """An unexpected exit after RUNNING; autorestart respawns it at once."""
        if p.state != "RUNNING" or p.removed:
            return
        p.state, p.stop = "EXITED", int(self.wall())
        self._event(p, "EXITED", "RUNNING", expected=False, pid=p.pid)
        self.spawn(p)

    # ---- the operator (supervisorctl) ------------------------------------------------------

    def operator_stop(self, ns: str) -> bool:
        p = self.procs[ns]
        if p.state not in ("RUNNING", "STARTING", "BACKOFF") or p.removed:
            return False  # "ERROR (not running)" (or "no such process"): no event at all
        self.halt(p, "operator")
        p.operator_seq, p.operator_serial, p.lookout_restarts = self.next_seq(), self.serial, []
        return True

    def operator_start(self, ns: str) -> bool:
        p = self.procs[ns]
        if p.state in ("RUNNING", "STARTING", "BACKOFF", "STOPPING") or p.removed:
            return False  # ALREADY_STARTED (and supervisord refuses a start while it stops one)
        # A person's start comes at least a second after lookout's stop of the same program. (Within the
        # same whole second, and with its events unheard by the listener for the brake's whole wait,
        # supervisord's `start` could not tell the two runs apart: lookout's start mark is whole seconds.)
        self.t = max(self.t, p.lookout_stopped_t + 1.0)
        self.spawn(p, "operator")
        p.operator_seq, p.operator_serial, p.lookout_restarts = self.next_seq(), self.serial, []
        return True

    # ---- supervisord's XML-RPC, as lookout's executor sees it ------------------------------

    def info(self, ns: str) -> dict:
        p = self.procs[ns]
        return {"group": p.group, "name": p.name, "statename": p.state, "state": STATE_CODES[p.state],
                "start": p.start, "stop": p.stop, "now": int(self.wall()), "pid": p.pid if p.state in (
                    "RUNNING", "STARTING", "STOPPING") else 0, "exitstatus": 0, "spawnerr": ""}

    def snapshot(self) -> list[ProcessSnapshot]:
        return [ProcessSnapshot(p.group, p.name, p.state, p.start, p.stop, int(self.wall()),
                                self.info(ns)["pid"], 0, "") for ns, p in self.procs.items() if not p.removed]

    def age(self, pid: int) -> float | None:
        """What /proc says: seconds since the process was spawned (no wall-clock step moves it)."""
        return self.t - self.started_at[pid] if pid in self.started_at else None


class FakeClient:
    """SupervisorClient's call() against the simulation, with supervisord's faults."""

    def __init__(self, sim: SimSupervisor, checker: Checker) -> None:
        self.sim, self.checker = sim, checker
        self.action: Action | None = None  # the step being run, for the checks
        self.during: object = None  # called in the middle of a stop or start call (stopwaitsecs, startsecs)

    def patient(self, timeout: float) -> FakeClient:
        return self

    def call(self, method: str, *args: object) -> object:
        sim = self.sim
        ns = str(args[0])
        if ns not in sim.procs or sim.procs[ns].removed:
            raise xmlrpc.client.Fault(10, "BAD_NAME")
        if sim.stopping and method != "supervisor.getProcessInfo":
            raise xmlrpc.client.Fault(6, "SHUTDOWN_STATE")
        p = sim.procs[ns]
        if method == "supervisor.getProcessInfo":
            if self.action is not None and self.action.source == "brake" and self.action.step == "stop" \
                    and p.state == "FATAL":
                self.checker.brake_finds_fatal(p, self.action)
            return sim.info(ns)
        assert self.action is not None
        if method == "supervisor.stopProcess":
            if p.state not in ("RUNNING", "STARTING", "BACKOFF"):
                raise xmlrpc.client.Fault(70, "NOT_RUNNING")
            self.checker.lookout_stops(p, self.action)
            p.lookout_stopped_t = sim.t
            if p.state == "BACKOFF":
                sim.halt(p, "lookout")
                return True
            sim.halt_begin(p, "lookout")
            self._meanwhile()
            if p.state == "STOPPING":
                sim.halt_finish(p, "lookout")
            return True
        if method == "supervisor.startProcess":
            if p.state in ("RUNNING", "STARTING", "BACKOFF"):
                raise xmlrpc.client.Fault(60, "ALREADY_STARTED")
            self.checker.lookout_starts(p, self.action)
            sim.spawn_begin(p, "lookout")
            self._meanwhile()
            if p.broken:
                sim.dies_starting(p)
            sim.spawn_finish(p)
            if p.state != "RUNNING":  # supervisord's wait: RUNNING (whoever's run it is), or a fault
                raise xmlrpc.client.Fault(40, "ABNORMAL_TERMINATION")
            return True
        raise AssertionError(method)

    def _meanwhile(self) -> None:
        during, self.during = self.during, None
        if callable(during):
            during()


class Checker:
    """The rules R1-R6, held against the simulation's truth at the moment lookout acts."""

    def __init__(self, sim: SimSupervisor, config: Config) -> None:
        self.sim, self.config = sim, config
        self.engine: AlertEngine | None = None
        self.decided: dict[str, int] = {}  # action id -> when it was decided (sequence)
        self.begun: set[str] = set()  # ids of actions whose decision was checked

    def lookout_stops(self, p: SimProc, action: Action) -> None:
        """A probe's restart stops only the process it judged (its pid, checked by the call); the brake
        stops whichever run a crash loop has respawned, so it can only honour operator commands it has
        heard of (their events delivered): a start that lands between its decision and its call, a
        few milliseconds in reality, is the one race it cannot see."""
        decided = self.decided.get(action.id, -1)
        if action.source.startswith("probe:") and p.pid != action.pid:
            raise Violation(f"R2: lookout stopped {p.namespec} pid {p.pid}, judged was pid {action.pid}")
        heard = action.source != "brake" or p.operator_serial <= self.sim.delivered
        if action.source in ("probe:http", "brake") and decided < p.operator_seq and heard:
            raise Violation(f"R1: lookout stopped {p.namespec} on a decision ({decided}) older than the operator's "
                            f"last command ({p.operator_seq})")
        if action.kind == "restart":
            r = self.config.remediation
            p.lookout_restarts = [t for t in p.lookout_restarts if t > self.sim.t - r.within] + [self.sim.t]
            if len(p.lookout_restarts) > r.max_restarts:
                raise Violation(f"R4: {len(p.lookout_restarts)} restarts of {p.namespec} within {r.within}s")
        p.lookout_stop_seq = self.sim.next_seq()

    def brake_finds_fatal(self, p: SimProc, action: Action) -> None:
        """The brake's stop looks and finds it FATAL: down already. It may claim it (start it after
        the wait) unless an operator command it had heard of came after its decision."""
        heard = p.operator_serial <= self.sim.delivered
        late = self.decided.get(action.id, -1) < p.operator_seq and heard
        p.fatal_claim_seq = -1 if late else self.sim.next_seq()

    def lookout_starts(self, p: SimProc, action: Action) -> None:
        if action.source == "dependency":
            self.dependency_starts(p)
            return
        if p.state == "FATAL":
            if action.source != "brake" or p.fatal_claim_seq < 0 or p.operator_seq >= p.fatal_claim_seq:
                raise Violation(f"R1: lookout started {p.namespec}, FATAL; the brake's claim at {p.fatal_claim_seq}, "
                                f"operator at {p.operator_seq}")
            p.fatal_claim_seq = -1  # (one start per look)
            return
        if p.last_stopper != "lookout" or p.operator_seq >= p.lookout_stop_seq:
            raise Violation(f"R1: lookout started {p.namespec}, last stopped by {p.last_stopper} "
                            f"(operator at {p.operator_seq}, lookout's stop at {p.lookout_stop_seq})")
        if action.kind == "restart":
            self.sim.restarts_by_lookout[p.namespec] += 1


    def dependency_starts(self, p: SimProc) -> None:
        """D2 nothing starts before its needs are ready (as the rules know at the call: news of a need
        that went down since the decision calls the start off); D3 the operator wins: never a start of
        what an operator stopped."""
        assert self.engine is not None
        if p.state == "STOPPED" and p.last_stopper == "operator":
            raise Violation(f"D3: lookout started {p.namespec}, which an operator stopped")
        down = self.engine.deps.not_ready(p.namespec)
        if down:
            raise Violation(f"D2: lookout started {p.namespec} while its need {down} is not ready")


class ListenerModel:
    """One incarnation of the listener: the engine, fed like app.Listener feeds it, committing every
    outcome to the real store before the executor hears of it. Its clock is a LookoutClock on the
    simulation's wall and monotonic time, looked at before every input as the loop does once a turn
    (a step of the wall clock moves what it holds, clock_steps.py); at start, what the store holds
    is brought onto it."""

    def __init__(self, sim: SimSupervisor, config: Config, path: str, checker: Checker,
                 own_namespec: str) -> None:
        self.sim, self.config, self.checker = sim, config, checker
        self.clock = LookoutClock(wall=sim.wall, mono=lambda: sim.t)
        self.conn = connect(path)
        self.store = StateStore(self.conn, config.history)
        s = self.store
        self.engine = AlertEngine(config.alerts, s.load_records(), s.load_open_alerts(), stopping=s.stopping(),
                                  own_namespec=own_namespec, probes=config.probes, remediation=config.remediation,
                                  probe_states=s.load_probe_states(), dependencies=config.dependencies,
                                  checks=config.checks)
        checker.engine = self.engine
        self.said: list[tuple[str, str, str]] = []  # (notice kind, family, namespec): what people heard, in order
        self.steps_given: list[tuple[str, str, str, str]] = []  # (namespec, step, kind, source) for the executor
        self.client = FakeClient(sim, checker)
        self.executor = RemediationExecutor(self.client, config.remediation, Inbox(None, b"r"))  # type: ignore[arg-type]
        self.steps: list[Action] = []  # handed to the executor, not run yet
        self.answers: deque[ActionResult] = deque()  # run, not yet read by the loop
        self.reconcile_due = True  # the listener reconciles when it starts
        self.fresh: dict[tuple[str, int], int] = {}  # (namespec, pid) -> consecutive failures seen by THIS one
        self.history: list[tuple[float, str, str, str]] = []
        adopt = commit_for_stored_frame(self.clock, s, self.engine, BOOT)
        if adopt is not None:
            self.apply(adopt.outcome, shifted=True, **adopt.kwargs)
        self.apply(Outcome(), meta=clock_meta(self.clock.offset, BOOT))
        self.apply(self.engine.on_holds(s.active_holds(), self.clock()))

    def close(self) -> None:
        self.conn.close()

    def now(self) -> float:
        """The loop's turn: a look at the wall clock first, then its time for the input at hand."""
        delta = self.clock.step()
        if delta:
            commit = commit_for_step(self.engine, delta, self.clock(), clock_meta(self.clock.offset, BOOT))
            self.apply(commit.outcome, shifted=True, **commit.kwargs)
            self.clock.publish()
        return self.clock()

    def apply(self, out: Outcome, shifted: bool = False, **kwargs: object) -> None:
        was_stopping = self.engine.stopping
        if not shifted:  # (a step of the wall clock holds every alert again, moved: no news)
            self._told_its_end(out)
        self.store.commit(out, stopping=self.engine.stopping, **kwargs)  # type: ignore[arg-type]
        self.history.extend((h.at, h.namespec, h.kind, h.detail) for h in out.history)
        self.said.extend((n.kind, *n.key) for n in out.notices)
        self.steps_given.extend((a.namespec, a.step, a.kind, a.source) for a in out.actions)
        self.executor.cancel(out.cancelled)
        for action in out.actions:
            self._check_step(action, was_stopping)
            self.steps.append(action)
        if out.reconcile:
            self.reconcile_due = True

    def _told_its_end(self, out: Outcome) -> None:
        """D4: a dependant's alert that people heard of is told its end, folded into its need's or not."""
        resolved = {n.key for n in out.notices if n.kind == "resolved"}
        for key, alert in out.alerts.items():
            if not alert.is_open and alert.updated_at == alert.resolved_at and alert.last_notice_at is not None \
                    and alert.namespec in self.engine.deps.graph.edges and key not in resolved \
                    and alert.resolved_at == self.clock():
                raise Violation(f"D4: {key} was told and closed ({alert.resolution}) without a word "
                                f"(notices {out.notices}, cause {alert.cause!r}, told at {alert.last_notice_at}, "
                                f"closed at {alert.resolved_at}, now {self.clock()})")

    def _check_step(self, action: Action, was_stopping: bool) -> None:
        e, ns = self.engine, action.namespec
        if e.policies.protected(ns):
            raise Violation(f"R4: lookout acts on protected {ns}")
        if action.source != "hold" and e.held(ns):
            raise Violation(f"R5: lookout's {action.step} of {ns} while an operator holds it")
        pending = e.records[ns].action
        if action.id in self.checker.begun or pending is None or pending.id != action.id:
            return  # a later step, or one a restarted listener finishes: decided before
        self.checker.begun.add(action.id)  # a new action: was it decided as the rules say?
        self.checker.decided[action.id] = self.sim.next_seq()
        if was_stopping and e.stopping:  # (a reconcile that shows supervisord RUNNING again ends the quiet)
            raise Violation(f"R4: lookout began to act on {ns} while supervisord was stopping or reloading")
        down = e.deps.down(ns)
        if down and (action.source == "brake" or action.source.startswith("probe:")):  # (undo: the operator's)
            raise Violation(f"D1: lookout began to {action.kind} {ns} ({action.source}) while its need {down} is down")
        if action.source.startswith("probe:") and action.kind != "start":  # (a start finishes a restart: R1's)
            spec = e.policies.probe(ns, action.source[6:])
            seen = self.fresh.get((ns, pending.pid), 0)
            if spec is None or seen < spec.failure_threshold or pending.pid != e.records[ns].pid:
                raise Violation(f"R2: lookout acts on {ns} (pid {pending.pid}) after {seen} fresh failure(s) of it")

    # ---- inputs ---------------------------------------------------------------------------

    def deliver_event(self) -> bool:
        if not self.sim.events:
            return False
        event = self.sim.events.popleft()
        self.sim.delivered = event.delivery.serial  # type: ignore[attr-defined]
        self.apply(self.engine.on_event(event, self.now()))
        return True

    def probe_result(self, ns: str, pid: int, ok: bool, started_at: float) -> None:
        from lookout.listener.rules.models import ProbeResult

        spec = self.engine.policies.probe(ns, "http")
        counts = spec is not None and started_at >= self.sim.started_at.get(pid, 0.0) + spec.initial_delay
        if counts:  # a result about this very process (the rules may not know yet that it has died)
            self.fresh[(ns, pid)] = 0 if ok else self.fresh.get((ns, pid), 0) + 1
        now = self.now()  # (started on the monotonic clock, as a probe's run is: onto the loop's clock)
        result = ProbeResult(ns, "http", ok, "HTTP 200" if ok else "HTTP 503", self.clock.from_mono(started_at),
                             0.01, pid=pid)
        self.apply(self.engine.on_probe_result(result, now))

    def run_step(self, index: int) -> bool:
        if not self.steps:
            return False
        action = self.steps.pop(index % len(self.steps))
        self.client.action = action
        self.answers.append(self.executor._do(action, None))
        return True

    def deliver_answer(self) -> bool:
        if not self.answers:
            return False
        self.apply(self.engine.on_action_result(self.answers.popleft(), self.now()))
        return True

    def reconcile(self) -> None:
        if self.sim.stopping:
            return  # Fault 6: deferred
        self.reconcile_due = False
        now = self.now()  # (supervisord's start times as the watcher gives them: from /proc's ages)
        view = [steady(info, self.sim.age(info.pid), self.sim.wall()) for info in self.sim.snapshot()]
        self.apply(self.engine.on_snapshot(view, now, now))

    def tick(self) -> None:
        self.apply(self.engine.on_time(self.now()))

    def poll_holds(self) -> None:
        self.apply(self.engine.on_holds(self.store.active_holds(), self.now()))
