"""What the readers (`lookout status`, `lookout deps`, the exporter) say about [[dependencies]]:
each dependant's needs and their states, from supervisord's answer and the store's rows, judged
with the listener's own words (dependency_graph.py)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .config import Config
from .config.dependencies import CHECK_PREFIX
from .dependency_graph import DOWN, UNKNOWN, UP, Graph, NeedFacts, NeedState
from .patterns import matches
from .snapshot import ProcessSnapshot

if TYPE_CHECKING:
    from .listener.store.reads import StoreReader


@dataclass(frozen=True)
class ProgramNeeds:
    namespec: str
    needs: tuple[NeedState, ...]
    waiting: str = ""  # "start-up" or "recovery": lookout starts it once every need is ready
    waiting_since: float | None = None
    start: bool = False  # start = true: lookout starts it (supervisord autostart=false)

    @property
    def not_ready(self) -> list[NeedState]:
        return [n for n in self.needs if not n.ready]


@dataclass(frozen=True)
class ProbeView:
    namespec: str
    probe: str
    healthy: bool | None


def program_needs(config: Config, snaps: Iterable[ProcessSnapshot], stopped_by: dict[str, str],
                  probes: Iterable[ProbeView], waits: dict[str, tuple[str, float | None]],
                  expected: dict[str, bool] | None = None,
                  unsettled: frozenset[str] = frozenset()) -> dict[str, ProgramNeeds]:
    """Every dependant supervisord has now, with its needs judged (expected: the store's word on each
    last exit, by exitcodes; else an exit status 0 is taken for a success)."""
    expected = expected or {}
    if not config.dependencies:
        return {}
    by_ns = {s.namespec: s for s in snaps}
    health: dict[str, list[bool | None]] = {}
    for p in probes:
        health.setdefault(p.namespec, []).append(p.healthy)

    def facts(need: str) -> NeedFacts | None:
        if need.startswith(CHECK_PREFIX):
            seen = health.get(need, [None])
            return NeedFacts(UP if seen[0] is True else DOWN if seen[0] is False else UNKNOWN)
        snap = by_ns.get(need)
        if snap is None:
            return None
        judged = health.get(need, [])
        configured = [p for p in config.probes if matches(p.match, need)]
        exit_ok = expected.get(need, snap.exitstatus == 0 and not snap.spawnerr.startswith("Bad exit code"))
        return NeedFacts(snap.state, stopped_by=stopped_by.get(need, "") if snap.state == "STOPPED" else "",
                         failed_exit=snap.state == "EXITED" and not exit_ok,
                         exit_ok=exit_ok if snap.state == "EXITED" else None,
                         unhealthy=any(h is False for h in judged),
                         judged_healthy=len([h for h in judged if h]) >= len(configured),
                         unsettled=need in unsettled)  # (the listener's "not stable yet", from the store)

    graph = Graph.build(config.dependencies, list(by_ns))
    out = {}
    for ns in graph.order():
        if ns not in graph.edges:
            continue
        why, since = waits.get(ns, ("", None))
        out[ns] = ProgramNeeds(ns, tuple(graph.states(ns, facts)), why, since, graph.start.get(ns, False))
    return out


def needs_in_store(config: Config, snaps: Iterable[ProcessSnapshot], store: StoreReader) -> dict[str, ProgramNeeds]:
    """program_needs() with what the listener's store knows: who stopped each process, its probes' and
    checks' verdicts, who waits and since when, whether each last exit was expected."""
    states = store.lookout_states()
    stopped_by = {look.namespec: look.stopped_by for look in states}
    probes = [ProbeView(p.namespec, p.probe, p.healthy) for p in store.probes()]
    return program_needs(config, snaps, stopped_by, probes, store.dependency_waits(), store.exits_expected(),
                         frozenset(look.namespec for look in states if look.unsettled))


def said(needs: ProgramNeeds, state: str) -> str:
    """The words `lookout status` adds to a dependant's line: "waiting for database (FATAL)",
    "down: database FATAL", "needs database, which is FATAL"; "" when its needs are ready."""
    from .listener.rules.models import display_name

    down = needs.not_ready
    if not down:
        return ""
    named = ", ".join(f"{display_name(n.need)} {n.said}" for n in down)
    if needs.waiting or (needs.start and state == "STOPPED"):
        return f"waiting for {', '.join(display_name(n.need) for n in down)} ({named})"
    if state in ("RUNNING", "STARTING"):
        return f"its need is not ready: {named}"
    return f"down: {named}"



def checks_down(config: Config) -> list[str]:
    """`lookout status`'s lines for [[checks]] with an open alert (no process has their line):
    "check:vpn  DOWN since 03:01:12: tcp check failed 3 times: ..."; --check counts each."""
    if not config.checks:
        return []
    import sqlite3
    import time

    from .listener.store.files import StoreUnavailable, store_errors
    from .listener.store.reads import StoreReader

    try:
        with store_errors(), StoreReader.open(config.state_path) as store:
            rows = [a for a in store.open_alerts() if a.namespec.startswith(CHECK_PREFIX)]
    except (StoreUnavailable, sqlite3.Error):
        return []  # (status says what it cannot read on its own lines)
    return [f"{a.namespec}  DOWN since {time.strftime('%H:%M:%S', time.localtime(a.opened_at))}: {a.detail}"
            for a in sorted(rows, key=lambda a: a.namespec)]
