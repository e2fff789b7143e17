"""DependencyWatch: [[dependencies]] + states -> one incident per cause, recovery in dependency
order, start-up that waits for readiness. Pure: no I/O, no clock reads.

- **One incident.** A dependant's alert whose need is failing folds into the need's: it sends no
  page of its own (the need's page lists it, `impact`), and an alert already sent before it folded
  still gets its own resolution. A dependant's first page waits `grace` (gather_until), so a need
  failing just after it is still found to be the cause; a need's first page waits `grace` too, so
  its dependants failing just after it join its one message. A folded alert whose need is fine
  again while it stays down (nobody brings it back) gets its own page then: nothing is lost.
- **Hands off.** While a need is not ready, lookout does not restart, brake or stop a dependant
  (`down`, asked by the guard and the brake): its failing probes and crashes are the need's.
- **Recovery and start-up.** A dependant that went down while a need was down (FATAL, an unexpected
  exit, stopped by lookout), or a `start = true` program supervisord never started, owes a start
  (`needs_wait`, in the store): lookout starts it once every need is ready, needs first. Never one
  an operator stopped or holds; an operator's start settles it. Still waiting at start-up after
  `start_timeout`: one alert naming the need and its state.
- **The need's page** (dependency_incident.py): its need_down alert, the impact line, and its
  resolution, which waits for the dependants lookout brings back.
- **Checks.** [[checks]] results (things outside supervisord) count like a probe's; a check that
  fails failure_threshold times is an alert of its own, and a cause like any need.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from ...config import ProbeSpec
from ...config.dependencies import CHECK_PREFIX, Dependency
from ...dependency_graph import DOWN, UNKNOWN, UP, Edge, Graph, NeedFacts, NeedState, judge
from ...patterns import select
from .actions import LOOKOUT, OPERATOR, OwnActions
from .alerts import AlertBook
from .dependency_incident import impact, needs_down
from .health import HealthTracker
from .models import (
    CHECK,
    CHECK_DOWN,
    DEPENDENCY,
    FIRING,
    RECOVERY,
    RESOLVED,
    START_UP,
    WAITING,
    Alert,
    HistoryEntry,
    Outcome,
    ProbeResult,
    ProbeState,
    ProcessRecord,
    ProcessSnapshot,
    display_name,
)

REPLACING = 30.0  # a need gone from supervisord this recently is being replaced (`update`): not ready
UP_STATES = ("STARTING", "RUNNING", "BACKOFF", "STOPPING")  # (started: it owes no start any more)


@dataclass
class CheckState:
    """A [[checks]] need: up after success_threshold passes, down after failure_threshold failures."""

    up: bool | None = None
    failures: int = 0
    successes: int = 0
    detail: str = ""


class DependencyWatch:
    def __init__(self, deps: tuple[Dependency, ...], checks: tuple[ProbeSpec, ...],
                 records: dict[str, ProcessRecord], book: AlertBook, health: HealthTracker, actions: OwnActions,
                 held: Callable[[str], bool], stopping: Callable[[], bool],
                 probe_states: Iterable[ProbeState] = ()) -> None:
        self.deps, self.records, self.book, self.health = deps, records, book, health
        self.actions, self.held, self.stopping = actions, held, stopping
        self.check_specs = {c.match: c for c in checks}
        self.checks = {ns: CheckState() for ns in self.check_specs}
        for st in probe_states:  # shown until the first new result (a check's state is re-probed)
            if st.namespec in self.checks and st.healthy is not None:
                self.checks[st.namespec].up = st.healthy
        self.exit_ok: dict[str, bool] = {}  # an exit no event told of (rec.last_exit_expected): exitstatus 0
        self._graph = Graph()
        self._built_on: frozenset[str] = frozenset()
        self._built_for = -1
        self._present: frozenset[str] = frozenset()  # what settle() last saw in supervisord
        self.gone_at: dict[str, float] = {}  # namespec -> when it left supervisord (kept REPLACING seconds)
        self.needs_fine_at: dict[str, float] = {}  # dependant -> when all its needs were last fine (memory)

    # ---- the graph --------------------------------------------------------------------------

    @property
    def graph(self) -> Graph:
        """Resolved on the processes supervisord has: rebuilt when one comes (cheap to ask: by count),
        and at every settle when one goes (refresh)."""
        if self.deps and len(self.records) != self._built_for:
            self.refresh()
        return self._graph

    def refresh(self) -> None:
        names = frozenset(ns for ns, r in self.records.items() if r.present)
        self._built_for = len(self.records)
        if names != self._built_on:
            self._graph, self._built_on = Graph.build(self.deps, sorted(names)), names

    def facts(self, need: str) -> NeedFacts | None:
        if need.startswith(CHECK_PREFIX):
            st = self.checks.get(need)
            state = UNKNOWN if st is None or st.up is None else (UP if st.up else DOWN)
            return NeedFacts(state, unhealthy=state == DOWN)
        rec = self.records.get(need)
        if rec is None or not rec.present:
            return None
        states = self.health.states.get(need, {})
        specs = self.health.policies.probes(need)
        return NeedFacts(
            rec.state, stopped_by=rec.stopped_by if rec.state == "STOPPED" else "",
            failed_exit=rec.pending_exit_at is not None or rec.failing_since is not None,
            exit_ok=bool(rec.last_exit_expected) if rec.last_exit_expected is not None else self.exit_ok.get(need),
            unhealthy=any(st.healthy is False for st in states.values()),
            judged_healthy=all(states.get(s.name) is not None and states[s.name].healthy for s in specs),
            unsettled=rec.crash_looping or rec.failing_since is not None)

    def grace(self, ns: str) -> float:
        """How long a dependant's first page waits for a need's failure to show: its `grace`, and at
        least as long as a check, or a need's probes (ready = "healthy"), take to judge it down."""
        verdicts = [0.0]
        for e in self.graph.edges.get(ns, ()):
            specs = [self.check_specs[e.need]] if e.need in self.check_specs else \
                self.health.policies.probes(e.need) if e.ready == "healthy" else ()
            verdicts += [s.period * s.failure_threshold + s.timeout for s in specs]
        return max(self.graph.grace.get(ns, 0.0), *verdicts)

    def failing(self, need: str) -> bool:
        """Something went wrong with it, as its dependants need it: stopped, FATAL, unhealthy, a check down."""
        ready = next((e.ready for edges in self.graph.edges.values() for e in edges if e.need == need), "running")
        return judge(Edge(need, ready), self.facts(need)).failing

    def down(self, namespec: str) -> str:
        """'' when every need of it is ready and fine, else the first that is not: "database FATAL",
        "database RUNNING (crash-looping)": lookout keeps its hands off the dependant meanwhile."""
        return self._first(namespec, lambda st: not st.ready or st.failing)

    def not_ready(self, namespec: str) -> str:
        """'' when every need of it is ready (lookout may start it), else the first that is not."""
        return self._first(namespec, lambda st: not st.ready)

    def _first(self, namespec: str, bad: Callable[[NeedState], bool]) -> str:
        if not self.deps:
            return ""
        for st in self.graph.states(namespec, self.facts):
            if bad(st):
                return f"{display_name(st.need)} {st.said}"
        return ""

    # ---- notices (AlertBook.quiet) ------------------------------------------------------------

    def quiet(self, alert: Alert, kind: str, now: float) -> bool:
        """Whether this notice of alert is folded into its cause's incident, or waits (gather_until)."""
        if not self.deps:
            return False
        if kind == RESOLVED and alert.cause and alert.last_notice_at is None:
            return True  # folded, never told (its program may be gone from the graph: `update` removed it)
        graph, ns = self.graph, alert.namespec
        if kind == FIRING and alert.last_notice_at is None and alert.gather_until is None and graph.dependants.get(ns):
            alert.gather_until = now + max(graph.grace.get(d, 0.0) for d in graph.dependants[ns])  # (its own: grace)
        if ns not in graph.edges or alert.family == CHECK:
            return False
        cause = graph.cause(ns, self.facts)
        if cause is not None:
            alert.cause = cause.need
            return kind != RESOLVED or alert.last_notice_at is None
        if alert.last_notice_at is not None:
            return False
        if kind == RESOLVED:
            return True  # never told (it waited, folded): nobody needs to hear of its end
        if alert.gather_until is None:
            alert.gather_until = now + self.grace(ns)
        return now < alert.gather_until or bool(alert.cause)

    # ---- inputs -----------------------------------------------------------------------------

    def on_check_result(self, result: ProbeResult, now: float, out: Outcome) -> None:
        spec = self.check_specs.get(result.namespec)
        st = self.checks.get(result.namespec)
        if spec is None or st is None or not result.judged:
            return
        st.detail = result.detail[:500]
        if result.ok:
            st.successes, st.failures = st.successes + 1, 0
            if st.up is not True and st.successes >= spec.success_threshold:
                st.up = True
                if not self.deps or not self.coming(result.namespec):  # (else settle() closes it, once they are up)
                    self.book.close(CHECK, result.namespec, now, out, "passes again", notify=True)
        else:
            st.failures, st.successes = st.failures + 1, 0
            if st.up is not False and st.failures >= spec.failure_threshold:
                st.up = False
                self.book.raise_(CHECK, result.namespec, CHECK_DOWN, spec.severity, now, out,
                                 detail=f"{spec.kind} check failed {st.failures} times: {st.detail}")
        shown = ProbeState(result.namespec, spec.name, healthy=st.up, consecutive_failures=st.failures,
                           consecutive_successes=st.successes, last_ok=result.ok, last_detail=st.detail,
                           last_duration=result.duration, last_at=result.started_at)
        out.probe_states[shown.key] = shown

    def on_snapshot(self, infos: Iterable[ProcessSnapshot], now: float, out: Outcome) -> None:
        """start = true programs this supervisord never started (its `start` is 0) owe their start; an
        exit no event told of is expected when its status is 0 (supervisord's default exitcodes). A
        check's alert whose [[checks]] entry is gone from lookout.toml closes (nothing else would)."""
        for alert in [a for a in self.book.alerts.values() if a.family == CHECK and a.namespec not in self.checks]:
            self.book.close(CHECK, alert.namespec, now, out, "removed from lookout.toml", notify=True)
        if not self.deps:
            return
        graph = self.graph
        for info in infos:
            rec = self.records.get(info.namespec)
            if info.state == "EXITED" and rec is not None and rec.last_exit_expected is None:
                self.exit_ok[info.namespec] = info.exitstatus == 0
            if rec is not None and graph.start.get(info.namespec) and info.state == "STOPPED" and info.start == 0 \
                    and not rec.needs_wait:
                rec.needs_wait, rec.waiting_since = START_UP, now
                out.records[rec.namespec] = rec

    # ---- after every input ----------------------------------------------------------------------

    def settle(self, now: float, out: Outcome) -> None:
        """Starts owed (needs first), start-up waits past start_timeout, folds, owed pages, impacts."""
        if not self.deps or self.stopping():
            return
        self.refresh()
        for ns in self._present - self._built_on:
            self.gone_at[ns] = now  # (a need `update` replaces is back within REPLACING)
        self.gone_at = {ns: at for ns, at in self.gone_at.items() if now - at <= REPLACING}
        self._present = self._built_on
        graph = self.graph
        for ns in graph.order():
            rec = self.records.get(ns)
            if rec is not None and rec.present:
                self._owed_start(rec, now, out)
        for alert in list(self.book.alerts.values()):
            if alert.namespec in graph.edges and alert.family != CHECK:
                self._fold(alert, now, out)
        needs_down(self, now, out)
        for alert in list(self.book.alerts.values()) + [a for a in out.alerts.values() if not a.is_open]:
            if graph.dependants.get(alert.namespec) or alert.impact:
                impact(self, alert, now, out)

    def _owed_start(self, rec: ProcessRecord, now: float, out: Outcome) -> None:
        ns = rec.namespec
        if rec.state in UP_STATES or (rec.state == "STOPPED" and rec.stopped_by == OPERATOR):
            if rec.needs_wait:  # started (by anyone), or an operator's stop: it owes nothing any more
                rec.needs_wait, rec.waiting_since = "", None
                out.records[ns] = rec
                self.book.close(DEPENDENCY, ns, now, out, "started" if rec.state in UP_STATES else "stopped",
                                notify=True)
            return
        down, waiting = self.down(ns), self.not_ready(ns)
        a = rec.action
        if waiting and a is not None and a.source == "dependency" and not a.cancelled:
            self.actions.cancel(rec, f"its need {waiting} is not ready any more", now, out)  # (its call not made yet)
        failed = rec.state == "FATAL" or (rec.state == "EXITED" and (rec.failing_since is not None
                                                                     or rec.pending_exit_at is not None)) \
            or (rec.state == "STOPPED" and rec.stopped_by == LOOKOUT and not rec.braked)
        if not down:
            self.needs_fine_at[ns] = now
        if down and failed and not rec.needs_wait and not self._down_on_its_own(rec):
            rec.needs_wait, rec.waiting_since = RECOVERY, now  # (down with its need: lookout brings it back)
            out.records[ns] = rec
        if self._need_removed(ns, now, out):
            return
        if not rec.needs_wait:
            return
        if waiting:
            timeout = self.graph.start_timeout.get(ns, 0.0)
            if rec.needs_wait == START_UP and rec.waiting_since is not None and now - rec.waiting_since >= timeout \
                    and self.book.get(DEPENDENCY, ns) is None:
                self.book.raise_(DEPENDENCY, ns, WAITING, "warning", now, out, opened_at=rec.waiting_since,
                                 detail=f"waits for {waiting} (start = true, start_timeout = {int(timeout)}s); "
                                        f"`supervisorctl start {display_name(ns)}` starts it now")
            return
        if rec.action is not None or self.held(ns) or rec.state not in ("STOPPED", "FATAL", "EXITED"):
            return
        if rec.needs_wait == START_UP:
            rec.own_stop_mark = 0.0  # only while supervisord never started it (an operator's start wins)
        elif not (rec.state == "STOPPED" and rec.stopped_by == LOOKOUT):
            rec.own_stop_mark = -1.0  # FATAL or EXITED: while it still is (state checked before the call)
        needs = ", ".join(f"{display_name(s.need)} {s.said}" for s in self.graph.states(ns, self.facts))
        why = "its needs are ready" if rec.needs_wait == RECOVERY else "start = true, and its needs are ready"
        self.actions.begin(rec, "start", "dependency", f"{why} ({needs})" if needs else "start = true", (), now, out)

    def _down_on_its_own(self, rec: ProcessRecord) -> bool:
        """It went down while its needs were still fine past its grace: its own failure, the operator's
        to mend, not lookout's to restart when a need fails later. Known from when its needs were last
        seen fine; after a listener restart, from its own page (a dependant's first page waits grace
        for a failing need, so one sent on its own, in its present state, was its own)."""
        ns = rec.namespec
        if ns in self.needs_fine_at:
            return rec.state_since < self.needs_fine_at[ns] - self.grace(ns)
        return any(a.last_notice_at is not None and a.last_notice_at >= rec.state_since for a in self.book.of(ns))

    def _need_removed(self, ns: str, now: float, out: Outcome) -> bool:
        """A need gone from supervisord: for a moment (`update` replacing it) not ready either; for good,
        a start owed for recovery is called off (its own alert pages). A need that never named anything
        (a typo, check-config warns) holds nothing back."""
        missing = self.graph.missing.get(ns, ())
        if self.gone_at:  # (any need pattern of it, also one that still names another process: `db_*`)
            patterns = [n.pattern for d in self.deps if select(d.program, [ns]) for n in d.needs]
            if any(now - at <= REPLACING and any(select(p, [gone]) for p in patterns)
                   for gone, at in self.gone_at.items() if gone != ns):
                return True
        if not missing:
            return False
        removed = [r.namespec for r in self.records.values()
                   if not r.present and any(select(p, [r.namespec]) for p in missing)]
        rec = self.records[ns]
        if removed and rec.needs_wait == RECOVERY:
            rec.needs_wait, rec.waiting_since = "", None
            out.records[ns] = rec
            out.history.append(HistoryEntry(now, ns, "action", f"lookout will not start it: its need "
                                                               f"{display_name(removed[0])} left supervisord"))
        return False

    def _fold(self, alert: Alert, now: float, out: Outcome) -> None:
        graph, ns = self.graph, alert.namespec
        cause = graph.cause(ns, self.facts)
        rec = self.records.get(ns)
        coming_back = rec is not None and (rec.state in ("STARTING", "RUNNING") or rec.action is not None
                                           or bool(rec.needs_wait))
        if cause is not None:
            if alert.cause and alert.cause != cause.need and coming_back and not self.failing(alert.cause):
                return  # its incident's need is back, and so is it, in order: it stays that incident's
            if alert.cause != cause.need:
                alert.cause = cause.need
                out.alerts[alert.key] = alert
            return
        if alert.last_notice_at is not None:
            return  # told on its own: its pages go on
        if alert.cause:
            if coming_back or self.down(ns):
                return  # its need is back and lookout brings it back too, or a need is not ready yet
            alert.cause = ""  # its need is fine and it stays down: its own page, now
        elif alert.gather_until is not None and now < alert.gather_until:
            return
        out.alerts[alert.key] = alert
        self.book.raise_owed(alert, now, out)

    def resolution_waits(self, need: str, running_for: float) -> bool:
        """A need back from its incident resolves once the dependants lookout brings back are up (one
        message says both), or past their start_timeout: "not back" then names those that did not come."""
        if not self.deps or not self.graph.dependants.get(need) or not any(a.impact for a in self.book.of(need)):
            return False
        longest = max((self.graph.start_timeout.get(d, 0.0) for d in self.graph.all_dependants(need)), default=0.0)
        return running_for < longest and bool(self.coming(need))

    def coming(self, need: str) -> list[str]:
        """Its dependants on their way back (lookout starts them, they start, or they wait only for needs
        that are on their way back themselves): its resolution waits for them."""
        coming: list[str] = []
        rest = [d for d in self.graph.all_dependants(need) if d in self.records]
        while True:
            more = [d for d in rest if (r := self.records[d]).action is not None or r.state == "STARTING" or (
                r.needs_wait and not self.held(d)
                and all(st.ready or st.need in coming for st in self.graph.states(d, self.facts)))]
            if not more:
                return coming
            coming += more
            rest = [d for d in rest if d not in more]

    def deadline(self) -> float | None:
        if not self.deps:
            return None
        times = [a.gather_until for a in self.book.alerts.values()
                 if a.gather_until is not None and a.last_notice_at is None and not a.cause]
        for ns in self.graph.edges:
            rec = self.records.get(ns)
            if rec is not None and rec.needs_wait == START_UP and rec.waiting_since is not None \
                    and self.book.get(DEPENDENCY, ns) is None:
                times.append(rec.waiting_since + self.graph.start_timeout.get(ns, 0.0))
        return min(times) if times else None
