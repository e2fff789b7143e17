"""`lookout hold NAME` / `lookout release NAME`: the operator's "leave it as it is".

While the crash-loop brake (or a pending restart) holds a program STOPPED, `supervisorctl stop`
answers "not running" and has no effect: lookout would start it again when its wait is over. A
hold is the operator's word for "keep it down": lookout starts, stops and restarts nothing of that
process until `lookout release NAME` or an operator starts it (`supervisorctl start`).

The hold is a row in the store's `holds` table; the listener picks it up within a second and
marks it seen, and this command waits for that, so that "held" is printed only once it holds.
"""

from __future__ import annotations

import os
import sqlite3
import sys
import time

from ..config import Config, format_duration
from ..listener.rules.models import display_name
from ..listener.store.files import StoreUnavailable, store_errors, store_problem
from ..listener.store.operator import add_hold, release_holds
from ..listener.store.reads import StoreReader
from ..listener.store.schema import connect
from ..patterns import ProcessPattern, no_match, select

CONFIRM_WAIT = 5.0  # how long `hold` waits for the listener to apply it


def _resolve(store: StoreReader, pattern: ProcessPattern) -> list[str]:
    """The processes PATTERN names among those the store knows supervisord runs: 'feed',
    'trading:feed', 'pool' (the whole group, as `supervisorctl stop pool`), 'pool:*', 'pool_0*'."""
    return select(pattern, store.namespecs())


def hold_command(config: Config, name: str, reason: str, release: bool) -> int:
    try:
        pattern = ProcessPattern.parse(name)
    except ValueError as exc:
        print(f"lookout: {exc}", file=sys.stderr)
        return 2
    if not os.path.exists(config.state_path) or os.path.getsize(config.state_path) == 0:  # reach it, never start one
        print(f"lookout: no store at {config.state_path} yet (has lookout-listener run with this state.path?)",
              file=sys.stderr)
        return 2
    conn = None
    try:
        with store_errors():
            conn = connect(config.state_path)
            targets = _resolve(StoreReader(conn), pattern)
            if not targets:
                print(no_match(name, "in lookout's store; `lookout status` lists them"), file=sys.stderr)
                return 2
            return _release(conn, targets) if release else _hold(conn, targets, reason)
    except StoreUnavailable as exc:
        print(f"lookout: cannot {'release' if release else 'hold'} through lookout's store {config.state_path}: "
              f"{store_problem(config.state_path, exc)}", file=sys.stderr)
        return 2
    finally:
        if conn is not None:
            conn.close()


def _hold(conn: sqlite3.Connection, targets: list[str], reason: str) -> int:
    now = time.time()
    store = StoreReader(conn)
    ids = {}
    with conn:
        for ns in targets:
            held = store.open_hold(ns)
            if held is not None:
                print(f"{display_name(ns)}: already held (since {format_duration(now - held.since)} ago)")
                continue
            ids[ns] = add_hold(conn, ns, reason, now)
    if not ids:
        return 0
    deadline = time.monotonic() + CONFIRM_WAIT
    pending = dict(ids)
    while pending and time.monotonic() < deadline:
        time.sleep(0.1)
        for ns, hold_id in list(pending.items()):
            if store.hold_seen(hold_id):
                del pending[ns]
    for ns in ids:
        shown = display_name(ns)
        if ns in pending:
            print(f"{shown}: hold written, but the listener has not applied it yet (is lookout-listener running?); "
                  "it applies as soon as the listener reads the store", file=sys.stderr)
        else:
            print(f"{shown}: held. lookout will not start, stop or restart it until `lookout release {shown}` "
                  "(or an operator starts it)")
    return 0 if not pending else 1


def _release(conn: sqlite3.Connection, targets: list[str]) -> int:
    now = time.time()
    store = StoreReader(conn)
    with conn:
        for ns in targets:
            if release_holds(conn, ns, now):
                row = store.release_waiting(ns)
                waiting = " (the crash-loop brake that was waiting starts it now)" if row and row.brake_waits else ""
                if row and row.restart_wanted:
                    waiting += " (lookout now does the restart it held back, if its probe still says so)"
                print(f"{display_name(ns)}: released; lookout may act on it again{waiting}")
            else:
                print(f"{display_name(ns)}: was not held")
    return 0
