"""`lookout alerts [PATTERN] [--json]`: the open alerts, from the store."""

from __future__ import annotations

import json
import sqlite3
import sys
import time

from ..config import Config, format_duration
from ..listener.rules.models import display_name
from ..listener.store.files import StoreUnavailable, store_errors, store_problem
from ..listener.store.reads import StoreReader
from ..patterns import ProcessPattern, no_match, select


def alerts_command(config: Config, pattern: str, as_json: bool) -> int:
    """The open alerts of the processes PATTERN names (a group's own alert: when it names the group)."""
    try:
        wanted = ProcessPattern.parse(pattern)
    except ValueError as exc:
        print(f"lookout: {exc}", file=sys.stderr)
        return 2
    try:
        with store_errors():
            store = StoreReader.open(config.state_path)
        with store:
            rows = store.open_alerts()
            known = store.namespecs()
    except (StoreUnavailable, sqlite3.Error) as exc:
        print(f"lookout: cannot read lookout's store {config.state_path}: {store_problem(config.state_path, exc)}",
              file=sys.stderr)
        return 2
    if pattern != "*":
        rows = [r for r in rows if wanted.matches(r.namespec)]
        if not rows and not select(wanted, known):
            print(no_match(pattern, "in lookout's store; `lookout status` lists them"), file=sys.stderr)
            return 2
    now = time.time()
    if as_json:
        print(json.dumps([{"name": display_name(r.namespec), "namespec": r.namespec, "family": r.family,
                           "kind": r.kind, "severity": r.severity, "since": r.opened_at,
                           "detail": r.detail, "action_taken": r.action_taken} for r in rows], indent=2))
        return 0
    if not rows:
        print("no open alerts")
    for r in rows:
        detail = f"  {r.detail[:100]}" if r.detail else ""
        print(f"{r.severity.upper():<8} {display_name(r.namespec):<30} {r.kind:<18} "
              f"since {format_duration(now - r.opened_at)}{detail}")
    return 0
