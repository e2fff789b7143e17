"""HealthTracker: probe results + time -> healthy / unhealthy. Pure.

Kubernetes' semantics, per probe and process: failure_threshold consecutive failures make it
unhealthy (and, for memory and cpu with `for`, failing for that long), success_threshold
consecutive successes make it healthy again. Results count only while the process is RUNNING
and past initial_delay since THIS start: a result from before a restart, or from inside the
grace, is ignored, and so is a result about another process of the program (its pid); every
start resets the counts (superlance and ochinchina/supervisord re-apply no grace after a
restart). An open "unhealthy" alert stays open across a restart by lookout until the probe
passes again.

Fresh judgement: a verdict is acted on (restart, stop) only when it rests on results this
listener observed itself. States loaded from the store after a listener restart or a reload are
shown (status, metrics, the open alert), but lookout acts on such a process only once
failure_threshold new failures of the current process agree (`judged`).

Cannot judge: a result that could not read its evidence (a log file deleted under supervisord)
is neither success nor failure. It counts nothing, acts on nothing, recovers nothing; the counts
start over after it, and a verdict it interrupted needs failure_threshold new failures again
before lookout acts (as after a listener restart).
"""

from __future__ import annotations

from collections.abc import Iterable

from ...config import ProbeSpec, format_duration
from .alerts import AlertBook
from .models import HEALTH, UNHEALTHY, Outcome, ProbeResult, ProbeState, ProcessRecord
from .policy import PolicyBook


def family(probe: str) -> str:
    return f"{HEALTH}:{probe}"


def describe(spec: ProbeSpec, state: ProbeState, result: ProbeResult) -> str:
    """'HTTP 503 (body: "down") 3 times in a row over 20s', 'RSS 2.3 GB > 2 GB for 5m'."""
    if spec.sustain:
        return f"{result.detail} for {format_duration(spec.sustain)}"
    n = state.consecutive_failures
    if n <= 1:
        return result.detail
    span = result.started_at - (state.first_failure_at or result.started_at)
    return f"{result.detail} {n} times in a row over {format_duration(span + spec.period)}"


class HealthTracker:
    def __init__(self, policies: PolicyBook, alerts: AlertBook, states: Iterable[ProbeState] = ()) -> None:
        self.policies, self.alerts = policies, alerts
        self.states: dict[str, dict[str, ProbeState]] = {}  # namespec -> probe -> state
        for st in states:
            self.states.setdefault(st.namespec, {})[st.probe] = st
            # Counts from before this listener started are shown, never built upon (fresh judgement).
            st.consecutive_failures = st.consecutive_successes = 0
            st.first_failure_at = None
        # Unhealthy by results this listener saw, of the process running now: what may be acted on.
        self.judged: set[tuple[str, str]] = set()
        # A stored unhealthy verdict being confirmed by new results: (consecutive failures, first at).
        self._confirming: dict[tuple[str, str], tuple[int, float]] = {}

    def on_result(self, result: ProbeResult, rec: ProcessRecord | None, now: float,
                  out: Outcome) -> ProbeSpec | None:
        """Count one result; returns the probe's spec when this listener has just judged the process
        unhealthy (a new verdict, or a stored one that new results confirm)."""
        spec = self.policies.probe(result.namespec, result.probe)
        if spec is None or rec is None or rec.state != "RUNNING" or rec.running_since is None:
            return None
        if result.pid and rec.pid and result.pid != rec.pid:
            return None  # about an earlier process of this program
        if result.started_at < rec.running_since + spec.initial_delay:
            return None  # from before this start, or inside its grace
        mine = self.states.setdefault(result.namespec, {})
        st = mine.get(result.probe)
        if st is None:
            st = mine[result.probe] = ProbeState(result.namespec, result.probe)
        st.last_detail, st.last_judged = result.detail[:500], result.judged
        st.last_duration, st.last_at = result.duration, result.started_at
        out.probe_states[st.key] = st
        if not result.judged:
            self._unjudged(st)
            return None
        st.last_ok = result.ok
        fam = family(spec.name)
        if result.ok:
            st.consecutive_successes += 1
            st.consecutive_failures, st.first_failure_at = 0, None
            self._confirming.pop(st.key, None)
            if st.healthy is not True and st.consecutive_successes >= spec.success_threshold:
                self.judged.discard(st.key)
                st.healthy = True
                self.alerts.close(fam, result.namespec, now, out, "healthy again", notify=True)
            return None
        st.failures_total += 1
        st.consecutive_failures += 1
        st.consecutive_successes = 0
        if st.first_failure_at is None:
            st.first_failure_at = result.started_at
        if st.healthy is False:
            return self._confirm(spec, st, result)
        sustained = not spec.sustain or result.started_at - st.first_failure_at >= spec.sustain
        if st.consecutive_failures < spec.failure_threshold or not sustained:
            return None
        st.healthy = False
        self.judged.add(st.key)
        policy = self.policies.lookup(result.namespec)
        if policy.ignore:
            return None
        self.alerts.raise_(fam, result.namespec, UNHEALTHY, policy.severity or spec.severity, now, out,
                           opened_at=st.first_failure_at,
                           tags=policy.tags, detail=describe(spec, st, result), evidence=result.evidence)
        return spec

    def _unjudged(self, st: ProbeState) -> None:
        """A run that could not read its evidence: no failure, no success. The verdict stands (an
        open alert stays open, nothing recovers) but is not acted on, and the next verdict rests on
        an unbroken run of results that could judge."""
        st.consecutive_failures = st.consecutive_successes = 0
        st.first_failure_at = None
        self._confirming.pop(st.key, None)
        self.judged.discard(st.key)

    def _confirm(self, spec: ProbeSpec, st: ProbeState, result: ProbeResult) -> ProbeSpec | None:
        """Unhealthy already: new failures count towards a fresh judgement unless this listener made
        the verdict itself (then it has already been acted on)."""
        if st.key in self.judged:
            return None
        count, first = self._confirming.get(st.key, (0, result.started_at))
        count += 1
        self._confirming[st.key] = (count, first)
        if count < spec.failure_threshold or (spec.sustain and result.started_at - first < spec.sustain):
            return None
        del self._confirming[st.key]
        self.judged.add(st.key)
        return None if self.policies.lookup(result.namespec).ignore else spec

    def reset(self, namespec: str, out: Outcome) -> None:
        """A new start of the process, or an operator taking over: counts from zero, the grace
        applies again."""
        for st in self.states.get(namespec, {}).values():
            self.judged.discard(st.key)
            self._confirming.pop(st.key, None)
            if st.healthy is not None or st.consecutive_failures or st.consecutive_successes:
                st.healthy, st.first_failure_at = None, None
                st.consecutive_failures = st.consecutive_successes = 0
                out.probe_states[st.key] = st

    def unhealthy(self, namespec: str) -> list[ProbeSpec]:
        """The probes (with their specs) that judge this process unhealthy by this listener's own
        results of the process running now: what lookout may act on."""
        out = []
        for st in self.states.get(namespec, {}).values():
            if st.healthy is False and st.key in self.judged:
                spec = self.policies.probe(namespec, st.probe)
                if spec is not None:
                    out.append(spec)
        return out
