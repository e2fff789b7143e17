"""[[dependencies]] as metrics: each edge and whether it is satisfied, and each dependant's wait.

    lookout_dependency_ready{group="risk_manager",name="risk_manager",program="risk_manager",need="database"} 1
    lookout_dependency_waiting_seconds{group="execution",name="order_executor",program="execution:order_executor",
                                       reason="start-up"} 42

(group and name as every process metric has them, for the dashboards; program as supervisorctl names it.)

Judged with the listener's own words (lookout/dependency_graph.py) from the same scrape's process
states, so the edge and the process state agree; waiting comes from the listener's store.
"""

from __future__ import annotations

from ..config import Config
from ..dependency_view import ProbeView, program_needs
from ..listener.rules.models import display_name
from ..snapshot import ProcessSnapshot
from .metrics import Family, escape
from .source import ScrapeData


def dependency_families(data: ScrapeData, config: Config, now: float) -> list[Family]:
    if not config.dependencies:
        return []
    ready = Family("lookout_dependency_ready", "gauge",
                   "1 while the need is ready for the program ([[dependencies]] ready: running, healthy, exited)")
    waiting = Family("lookout_dependency_waiting_seconds", "gauge",
                     "how long lookout has been waiting for the program's needs to start it (0: not waiting); "
                     "reason: start-up (start = true) or recovery (it went down with a need: the need's alert "
                     "tells), none")
    snaps = [ProcessSnapshot(p.group, p.name, p.state, int(p.start_time or 0), 0, 0, p.pid,
                             p.exit_status if p.exit_status is not None else 0, "") for p in data.processes]
    probes = [ProbeView(f"{v.group}:{v.name}", v.probe, v.healthy) for v in data.probes]
    probes += [ProbeView(ns, ns, up) for ns, up in data.checks.items()]
    stopped_by = {f"{p.group}:{p.name}": p.stopped_by for p in data.processes}
    looping = frozenset(f"{p.group}:{p.name}" for p in data.processes if p.crash_looping)
    for ns, needs in program_needs(config, snaps, stopped_by, probes, data.waits, data.exits_expected,
                                   looping).items():
        group, _, name = ns.partition(":")
        who = f'group="{escape(group)}",name="{escape(name)}",program="{escape(display_name(ns))}"'
        for n in needs.needs:
            ready.add(f'{who},need="{escape(display_name(n.need))}"', 1 if n.ready else 0)
        since = needs.waiting_since if needs.waiting else None
        waiting.add(f'{who},reason="{escape(needs.waiting or "none")}"', max(0.0, now - since) if since else 0.0)
    return [ready, waiting]
