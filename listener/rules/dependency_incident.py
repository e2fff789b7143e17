"""The need's incident page, written by the DependencyWatch after every input (pure): a need that
has no alert of its own gets one ("need_down": stopped, exited, a BACKOFF that goes on), its page's
impact line lists the dependants it takes down with their states, and its resolution says which came
back ("4 dependants running again") once those lookout brings back are up.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Protocol

from ...dependency_graph import UP, Graph, NeedFacts
from .actions import OPERATOR
from .alerts import AlertBook
from .models import CHECK, CRASH_LOOP, NEED, NEED_DOWN, START_UP, Alert, Outcome, ProcessRecord, display_name


class DependencyWatch(Protocol):
    """What the page reads of the DependencyWatch (dependencies.py), which writes it."""

    book: AlertBook
    records: dict[str, ProcessRecord]
    held: Callable[[str], bool]

    @property
    def graph(self) -> Graph: ...
    def facts(self, need: str) -> NeedFacts | None: ...
    def failing(self, need: str) -> bool: ...
    def coming(self, need: str) -> list[str]: ...

LISTED = 10  # dependants named in an incident's impact line; the rest are counted


def needs_down(watch: DependencyWatch, now: float, out: Outcome) -> None:
    """A cause needs an alert of its own for its incident's page: a need stopped (by an operator:
    a warning), or exited, or failing past its dependants' grace with no alert of its process
    (a BACKOFF that goes on) gets one, "need_down"; it closes once the need is ready again and
    the dependants lookout brings back are up (one resolution says both)."""
    folded: dict[str, list[Alert]] = {}
    for alert in watch.book.alerts.values():  # (one told on its own needs no page of its need's)
        if alert.cause and alert.namespec in watch.graph.edges and alert.last_notice_at is None:
            folded.setdefault(alert.cause, []).append(alert)
    for need, alerts in folded.items():
        if watch.book.of(need) or not watch.failing(need):
            continue  # its own alert (FATAL, crash loop, unhealthy, down) is the incident
        facts, rec = watch.facts(need), watch.records.get(need)
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
        watch.book.raise_(NEED, need, NEED_DOWN, "warning" if by_operator else "critical", now, out,
                          opened_at=rec.state_since if rec is not None and rec.state_since else now,
                          detail=f"{display_name(need)} is {said}; what needs it fails with it")
    for alert in [a for a in watch.book.alerts.values() if a.family in (NEED, CHECK)]:
        facts = watch.facts(alert.namespec)
        if facts is not None and facts.state not in ("RUNNING",) and facts.state != UP:
            continue
        if watch.coming(alert.namespec):
            continue  # the dependants lookout starts again: the resolution says whether they came back
        watch.book.close(alert.family, alert.namespec, now, out, "back" if alert.family == NEED else "passes again",
                    notify=True)


def impact(watch: DependencyWatch, alert: Alert, now: float, out: Outcome) -> None:
    """The incident's second line: the dependants whose likely cause this is, with their states."""
    need, graph = alert.namespec, watch.graph
    mine = [d for d in graph.all_dependants(need)
            if (c := graph.cause(d, watch.facts)) is not None and c.need == need]
    states = {d: _shown(watch, d) for d in graph.all_dependants(need)}
    if alert.is_open:
        down = [d for d in mine if (states[d] != "RUNNING" or watch.book.of(d)) and not _stopped_on_purpose(watch, d)]
        waiting = [d for d in down if (r := watch.records.get(d)) is not None and r.needs_wait == START_UP]
        failing = [d for d in down if d not in waiting]  # (never started yet: waiting, not failing)
        text = "; ".join(p for p in (f"{_count(failing)} failing: {_listed(failing, states)}" if failing else "",
                                     f"{len(waiting)} waiting to start: {_listed(waiting, states)}" if waiting else "")
                         if p)
    elif alert.resolved_at == now:
        folded = [d for d in graph.all_dependants(need) if _folded_into(watch, d, need)
                  and not _stopped_on_purpose(watch, d)]
        coming = set(watch.coming(need))
        back = [d for d in folded if states[d].startswith("RUNNING") and d not in coming]
        starting = [d for d in folded if d in coming]  # (it resolves before they run: say so, not "not back")
        rest = [d for d in folded if d not in back and d not in coming]
        parts = [f"{_count(back)} running again" if back else "",
                 f"{len(starting)} being started by lookout, needs first: {_listed(starting, states)}"
                 if starting else "", f"{len(rest)} not back: {_listed(rest, states)}" if rest else ""]
        text = "; ".join(p for p in parts if p)
    else:
        return
    if text != alert.impact:
        alert.impact = text
        out.alerts[alert.key] = alert


def _shown(watch: DependencyWatch, ns: str) -> str:
    """"FATAL", "RUNNING (unhealthy)", "RUNNING (crashed, respawned)": its state, and why a RUNNING
    one is listed as failing (its open alert)."""
    rec = watch.records.get(ns)
    state = rec.state if rec is not None else "gone"
    alerts = watch.book.of(ns)
    if state != "RUNNING" or not alerts:
        return state
    why = "unhealthy" if any(a.probe for a in alerts) else \
        "crash-looping" if any(a.kind == CRASH_LOOP for a in alerts) else "crashed, respawned"
    return f"RUNNING ({why})"


def _stopped_on_purpose(watch: DependencyWatch, ns: str) -> bool:
    rec = watch.records.get(ns)
    return rec is not None and rec.state == "STOPPED" and rec.stopped_by == OPERATOR or watch.held(ns)


def _folded_into(watch: DependencyWatch, ns: str, need: str) -> bool:
    return any(a.cause == need for a in watch.book.of(ns)) or any(
        a.cause == need for a in watch.book.recently_closed.values() if a.namespec == ns)


def _clock(at: float) -> str:
    return time.strftime("%H:%M:%S", time.localtime(at))


def _count(names: list[str]) -> str:
    return f"{len(names)} dependant{'s' if len(names) != 1 else ''}"


def _listed(names: list[str], states: dict[str, str]) -> str:
    shown = [f"{display_name(d)} {states[d]}" for d in names[:LISTED]]
    return ", ".join(shown) + (f" and {len(names) - LISTED} more" if len(names) > LISTED else "")
