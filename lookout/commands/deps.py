"""`lookout deps`: the [[dependencies]] graph with the states of now, needs first.

    risk_manager:risk_manager  RUNNING   needs database RUNNING (ready)
    execution:order_executor   FATAL     needs risk_manager FATAL (not ready)  waiting: recovery, 2m ago

Each dependant once, in dependency order (what lookout starts first comes first); `--json` prints
the same as a list of objects. Exit 0; 2 when supervisord or the store cannot be read.
"""

from __future__ import annotations

import json
import sqlite3
import sys
import time
import xmlrpc.client

from ..config import Config, format_duration
from ..dependency_view import needs_in_store
from ..listener.rules.models import display_name
from ..listener.store.files import StoreUnavailable, store_errors, store_problem
from ..listener.store.reads import StoreReader
from ..rpc import SupervisorClient, SupervisorUnavailable, snapshot_from_info


def deps_command(config: Config, as_json: bool) -> int:
    if not config.dependencies:
        print("no [[dependencies]] in the config: nothing depends on anything", file=sys.stderr)
        return 0
    try:
        infos = SupervisorClient(config.supervisor).call("supervisor.getAllProcessInfo")
    except (SupervisorUnavailable, xmlrpc.client.Fault) as exc:
        print(f"lookout: cannot read supervisord at {config.supervisor.serverurl}: {exc}", file=sys.stderr)
        return 2
    snaps = [s for s in (snapshot_from_info(i) for i in (infos if isinstance(infos, list) else [])) if s is not None]
    try:
        with store_errors(), StoreReader.open(config.state_path) as store:
            needs = needs_in_store(config, snaps, store)
    except (StoreUnavailable, sqlite3.Error) as exc:
        print(f"lookout: cannot read lookout's store {config.state_path}: {store_problem(config.state_path, exc)}",
              file=sys.stderr)
        return 2
    from ..dependency_graph import Graph

    for cycle in Graph.build(config.dependencies, [s.namespec for s in snaps]).cycles:
        shown = " -> ".join(display_name(ns) for ns in cycle)
        print(f"lookout: a cycle among the processes, ignored where it closes: {shown} (lookout check-config)",
              file=sys.stderr)
    states = {s.namespec: s.state for s in snaps}
    now = time.time()
    if as_json:
        print(json.dumps([{
            "program": display_name(ns), "namespec": ns, "state": states.get(ns, ""), "start": p.start,
            "waiting": p.waiting, "waiting_since": p.waiting_since,
            "needs": [{"need": display_name(n.need), "ready": n.ready, "failing": n.failing, "state": n.said}
                      for n in p.needs]} for ns, p in needs.items()], indent=2))
        return 0
    width = max([len(display_name(ns)) for ns in needs] + [4])
    for ns, p in needs.items():
        listed = "; ".join(f"{display_name(n.need)} {n.said} ({'ready' if n.ready else 'not ready'})"
                           for n in p.needs) or "nothing (start = true only)"
        line = f"{display_name(ns).ljust(width)}  {states.get(ns, '?').ljust(9)} needs {listed}"
        if p.waiting:
            since = f", {format_duration(max(0.0, now - p.waiting_since))} ago" if p.waiting_since else ""
            line += f"  waiting: {p.waiting}{since}"
        elif p.start:
            line += "  start = true"
        print(line)
    return 0
