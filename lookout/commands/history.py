"""`lookout history NAME [--since 24h]`: what happened to one process, in time order.

State changes, exits with their statuses, alerts raised, sent and resolved, and what lookout
itself did, from the store's bounded history table (state.history_* in lookout.toml).
"""

from __future__ import annotations

import json
import sqlite3
import sys
import time

from ..config import Config
from ..listener.rules.models import display_name
from ..listener.store.files import StoreUnavailable, store_errors, store_problem
from ..listener.store.reads import StoreReader
from ..patterns import ProcessPattern, no_match, select


def resolve(store: StoreReader, pattern: ProcessPattern) -> list[str]:
    """The processes PATTERN names (patterns.py): 'reconciler' -> 'reconciler:reconciler'; 'pool_1'
    -> 'pool:pool_1'; 'pool' -> every member of the pool (then the caller says which to pick). Among
    the processes the store knows, else among those it still has history of (a removed program)."""
    return select(pattern, store.namespecs(present_only=False)) or select(pattern, store.history_namespecs())


def history_command(config: Config, name: str, since: float, as_json: bool) -> int:
    now = time.time()
    try:
        pattern = ProcessPattern.parse(name)
    except ValueError as exc:
        print(f"lookout: {exc}", file=sys.stderr)
        return 2
    try:
        with store_errors():
            store = StoreReader.open(config.state_path)
        with store:
            namespecs = resolve(store, pattern)
            if not namespecs:
                print(no_match(name, "in lookout's store; `lookout status` lists them"), file=sys.stderr)
                return 2
            if len(namespecs) > 1:
                print(f"lookout: {name!r} is ambiguous: {', '.join(display_name(ns) for ns in namespecs)}",
                      file=sys.stderr)
                return 2
            rows = store.history(namespecs[0], now - since)
    except (StoreUnavailable, sqlite3.Error) as exc:
        print(f"lookout: cannot read lookout's store {config.state_path}: {store_problem(config.state_path, exc)}",
              file=sys.stderr)
        return 2
    if as_json:
        print(json.dumps([{"at": r.at, "kind": r.kind, "detail": r.detail} for r in rows], indent=2))
        return 0 if rows else 1
    if not rows:
        print(f"no history for {display_name(namespecs[0])} in the last {_window(since)}")
        return 1
    print(f"{display_name(namespecs[0])}, the last {_window(since)}:")
    for r in rows:
        stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(r.at)) + f".{int(r.at * 1000) % 1000:03d}"
        print(f"{stamp}  {r.kind:<8} {r.detail}")
    return 0


def _window(seconds: float) -> str:
    from ..config import format_duration

    return format_duration(seconds)
