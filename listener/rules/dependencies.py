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
- **Checks.** [[checks]] results (things outside supervisord) count like a probe's; a check that
  fails failure_threshold times is an alert of its own, and a cause like any need.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from ...config import ProbeSpec
from ...config.dependencies import CHECK_PREFIX, Dependency
from ...dependency_graph import DOWN, UNKNOWN, UP, Edge, Graph, NeedFacts, NeedState, judge
from .actions import LOOKOUT, OPERATOR, OwnActions
from .alerts import AlertBook
from .health import HealthTracker
from .models import (
    CHECK,
    CHECK_DOWN,
    DEPENDENCY,
    FIRING,
    NEED,
    NEED_DOWN,
    RESOLVED,
    WAITING,
    Alert,
    Outcome,
    ProbeResult,
    ProbeState,
    ProcessRecord,
    ProcessSnapshot,
    display_name,
)

START_UP, RECOVERY = "start-up", "recovery"
UP_STATES = ("STARTING", "RUNNING", "BACKOFF", "STOPPING")  # (started: it owes no start any more)
LISTED = 10  # dependants named in an incident's impact line; the rest are counted


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
        self._built_on: frozenset[str] | None = None
        self._built_for = -1

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
        exit no event told of is expected when its status is 0 (supervisord's default exitcodes)."""
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
        graph = self.graph
        for ns in graph.order():
            rec = self.records.get(ns)
            if rec is not None and rec.present:
                self._owed_start(rec, now, out)
        for alert in list(self.book.alerts.values()):
            if alert.namespec in graph.edges and alert.family != CHECK:
                self._fold(alert, now, out)
        self._needs_down(now, out)
        for alert in list(self.book.alerts.values()) + [a for a in out.alerts.values() if not a.is_open]:
            if graph.dependants.get(alert.namespec) or alert.impact:
                self._impact(alert, now, out)

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
        if down and failed and not rec.needs_wait:
            rec.needs_wait, rec.waiting_since = RECOVERY, now
            out.records[ns] = rec
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
        if self.graph.missing.get(ns):  # a need gone from supervisord (`update` replacing it): not ready either
            return
        if rec.needs_wait == START_UP:
            rec.own_stop_mark = 0.0  # only while supervisord never started it (an operator's start wins)
        elif not (rec.state == "STOPPED" and rec.stopped_by == LOOKOUT):
            rec.own_stop_mark = -1.0  # FATAL or EXITED: while it still is (state checked before the call)
        needs = ", ".join(f"{display_name(s.need)} {s.said}" for s in self.graph.states(ns, self.facts))
        why = "its needs are ready" if rec.needs_wait == RECOVERY else "start = true, and its needs are ready"
        self.actions.begin(rec, "start", "dependency", f"{why} ({needs})" if needs else "start = true", (), now, out)

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

    def _needs_down(self, now: float, out: Outcome) -> None:
        """A cause needs an alert of its own for its incident's page: a need stopped (by an operator:
        a warning), or exited, or failing past its dependants' grace with no alert of its process
        (a BACKOFF that goes on) gets one, "need_down"; it closes once the need is ready again and
        the dependants lookout brings back are up (one resolution says both)."""
        folded: dict[str, list[Alert]] = {}
        for alert in self.book.alerts.values():  # (one told on its own needs no page of its need's)
            if alert.cause and alert.namespec in self.graph.edges and alert.last_notice_at is None:
                folded.setdefault(alert.cause, []).append(alert)
        for need, alerts in folded.items():
            if self.book.of(need) or not self.failing(need):
                continue  # its own alert (FATAL, crash loop, unhealthy, down) is the incident
            facts, rec = self.facts(need), self.records.get(need)
            if facts is None:
                continue
            # Stopped (nobody restarts it), or an exit no rule will page (expected): now. Else (a crash
            # respawned, its exit grace) its own alert may still come: only past the dependants' grace.
            quiet_exit = facts.state == "EXITED" and rec is not None and rec.pending_exit_at is None
            settled = facts.state == "STOPPED" or quiet_exit or all(
                a.gather_until is not None and now >= a.gather_until for a in alerts)
            if not settled:
                continue
            by_operator = facts.state == "STOPPED" and facts.stopped_by == OPERATOR
            when = f" at {_clock(rec.state_since)}" if rec is not None and rec.state_since else ""
            said = f"stopped by an operator{when}" if by_operator else f"{facts.state}{when}"
            self.book.raise_(NEED, need, NEED_DOWN, "warning" if by_operator else "critical", now, out,
                             opened_at=rec.state_since if rec is not None and rec.state_since else now,
                             detail=f"{display_name(need)} is {said}; what needs it fails with it")
        for alert in [a for a in self.book.alerts.values() if a.family == NEED]:
            facts = self.facts(alert.namespec)
            if facts is not None and facts.state not in ("RUNNING",) and facts.state != UP:
                continue
            coming = [d for d in self.graph.all_dependants(alert.namespec)
                      if (r := self.records.get(d)) is not None and (r.action is not None or r.state == "STARTING"
                                                                     or (r.needs_wait and not self.not_ready(d)))]
            if coming:
                continue  # the dependants lookout starts again: the resolution says whether they came back
            self.book.close(NEED, alert.namespec, now, out, "back", notify=True)

    def _impact(self, alert: Alert, now: float, out: Outcome) -> None:
        """The incident's second line: the dependants whose likely cause this is, with their states."""
        need, graph = alert.namespec, self.graph
        mine = [d for d in graph.all_dependants(need)
                if (c := graph.cause(d, self.facts)) is not None and c.need == need]
        states = {d: self._shown(d) for d in graph.all_dependants(need)}
        if alert.is_open:
            failing = [d for d in mine
                       if (states[d] != "RUNNING" or self.book.of(d)) and not self._stopped_on_purpose(d)]
            text = f"{_count(failing)} failing: {_listed(failing, states)}" if failing else ""
        elif alert.resolved_at == now:
            folded = [d for d in graph.all_dependants(need) if self._folded_into(d, need)
                      and not self._stopped_on_purpose(d)]
            back = [d for d in folded if states[d].split(" ")[0] in ("RUNNING", "STARTING")]
            rest = [d for d in folded if d not in back]
            text = f"{_count(back)} running again" if back else ""
            if rest:
                text += ("; " if text else "") + f"{len(rest)} not back: {_listed(rest, states)}"
        else:
            return
        if text != alert.impact:
            alert.impact = text
            out.alerts[alert.key] = alert

    def _shown(self, ns: str) -> str:
        """"FATAL", "RUNNING (unhealthy)": its state, and a failing probe of it."""
        rec = self.records.get(ns)
        state = rec.state if rec is not None else "gone"
        unhealthy = any(a.probe for a in self.book.of(ns))
        return f"{state} (unhealthy)" if unhealthy and state == "RUNNING" else state

    def _stopped_on_purpose(self, ns: str) -> bool:
        rec = self.records.get(ns)
        return rec is not None and rec.state == "STOPPED" and rec.stopped_by == OPERATOR or self.held(ns)

    def _folded_into(self, ns: str, need: str) -> bool:
        return any(a.cause == need for a in self.book.of(ns)) or any(
            a.cause == need for a in self.book.recently_closed.values() if a.namespec == ns)

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


def _clock(at: float) -> str:
    return time.strftime("%H:%M:%S", time.localtime(at))


def _count(names: list[str]) -> str:
    return f"{len(names)} dependant{'s' if len(names) != 1 else ''}"


def _listed(names: list[str], states: dict[str, str]) -> str:
    shown = [f"{display_name(d)} {states[d]}" for d in names[:LISTED]]
    return ", ".join(shown) + (f" and {len(names) - LISTED} more" if len(names) > LISTED else "")
