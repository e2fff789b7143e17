"""`lookout status`: supervisorctl status, plus what only lookout knows.

One line per process: state and uptime (from supervisord), health (from the probes; "cannot judge"
while a probe cannot read its evidence, e.g. a log file deleted), restarts in
the last hour and day, the last unexpected exit in words, the open alert and a silence if one
holds it. `--json` prints a list of objects of the shape in STATUS_SCHEMA; `--check` exits 0 when
every process is RUNNING (or deliberately stopped) and no alert is open, 1 otherwise, 2 when
supervisord or the store cannot be read.
"""

from __future__ import annotations

import json
import re
import sqlite3
import sys
import time
import xmlrpc.client
from dataclasses import dataclass, field
from typing import Any

from .delivery import delivery_lines
from .listener.config import Config, format_duration
from .listener.lifecycle import alive
from .listener.rpc import SupervisorClient, SupervisorUnavailable, snapshot_from_info
from .listener.rules.models import ProcessSnapshot, display_name
from .listener.rules.orphans import Orphan
from .listener.store.delivery import DeliveryStore
from .listener.store.files import StoreUnavailable, store_errors, store_problem
from .listener.store.schema import connect
from .listener.store.sidecar import peek
from .listener.store.state import orphans_in
from .listener.text import clean
from .patterns import ProcessPattern, no_match

FINE_STATES = ("RUNNING", "STOPPED", "EXITED")  # deliberately stopped; an unexpected EXITED has an alert
# supervisord's automatic restarts, and lookout's own
_RESTART = ("(kind = 'state' AND (detail LIKE 'STARTING (from EXITED%' OR detail LIKE 'STARTING (from BACKOFF%')) "
            "OR (kind = 'action' AND detail LIKE 'restarted by lookout%')")

STATUS_SCHEMA: dict[str, Any] = {
    "$schema": "http://json-schema.org/draft-07/schema#",
    "title": "lookout status --json",
    "type": "array",
    "items": {
        "type": "object",
        "required": ["name", "group", "namespec", "state", "pid", "uptime_seconds", "description", "healthy",
                     "probes", "restarts_1h", "restarts_24h", "last_exit", "alerts", "silenced_until", "lookout",
                     "orphans", "ok"],
        "additionalProperties": False,
        "properties": {
            "name": {"type": "string", "description": "as supervisorctl shows it: 'reconciler' or 'group:name'"},
            "group": {"type": "string"},
            "namespec": {"type": "string", "description": "always group:name"},
            "state": {"enum": ["STOPPED", "STARTING", "RUNNING", "BACKOFF", "STOPPING", "EXITED", "FATAL",
                               "UNKNOWN"]},
            "pid": {"type": "integer"},
            "uptime_seconds": {"type": ["number", "null"], "description": "null unless RUNNING"},
            "description": {"type": "string", "description": "supervisord's own description"},
            "healthy": {"type": ["boolean", "null"], "description": "null without probes or not judged yet"},
            "probes": {"type": "object", "additionalProperties": {
                "type": "object", "required": ["healthy", "last_ok", "last_detail", "judged"],
                "properties": {"healthy": {"type": ["boolean", "null"]}, "last_ok": {"type": ["boolean", "null"]},
                               "last_detail": {"type": "string"},
                               "judged": {"type": "boolean", "description": "false: its last run could not "
                                          "read its evidence (a log file deleted) and judged nothing; "
                                          "last_detail says why"}}}},
            "restarts_1h": {"type": "integer"},
            "restarts_24h": {"type": "integer"},
            "last_exit": {"type": ["object", "null"], "required": ["text", "status", "at"], "properties": {
                "text": {"type": "string"}, "status": {"type": ["integer", "null"]},
                "at": {"type": ["number", "null"]}}},
            "alerts": {"type": "array", "items": {
                "type": "object", "required": ["kind", "severity", "since", "detail"],
                "properties": {"kind": {"type": "string"}, "severity": {"enum": ["info", "warning", "critical"]},
                               "since": {"type": "number"}, "detail": {"type": "string"}}}},
            "silenced_until": {"type": ["number", "null"]},
            "lookout": {"type": "object", "description": "what lookout does or may do about it",
                        "required": ["held_since", "held_reason", "braked", "starts_again_at", "stopped_by",
                                     "action"],
                        "additionalProperties": False, "properties": {
                            "held_since": {"type": ["number", "null"],
                                           "description": "`lookout hold`: lookout leaves it as it is"},
                            "held_reason": {"type": "string"},
                            "braked": {"type": "boolean", "description": "the crash-loop brake holds it"},
                            "starts_again_at": {"type": ["number", "null"],
                                                "description": "when the brake starts it again"},
                            "stopped_by": {"enum": ["", "operator", "lookout"]},
                            "action": {"type": "string", "description": "lookout's action in flight, if any"}}},
            "orphans": {"type": "array", "items": {"type": "integer"},
                        "description": "pids of this program's processes left running by a supervisord that died "
                                       "(it may run twice)"},
            "ok": {"type": "boolean", "description": "what --check counts: RUNNING or deliberately stopped, "
                                                     "and no open alert"},
        },
    },
}


class Unreadable(Exception):
    """supervisord or the store cannot be read: exit status 2."""


@dataclass
class ProcessStatus:
    snap: ProcessSnapshot
    description: str
    restarts_1h: int = 0
    restarts_24h: int = 0
    counted_since: float | None = None  # the history starts later than 24 h ago: the counts are lower bounds
    last_exit: dict | None = None
    probes: dict[str, dict] = field(default_factory=dict)
    alerts: list[dict] = field(default_factory=list)
    silenced_until: float | None = None
    orphans: list[Orphan] = field(default_factory=list)  # left running by a supervisord that died
    lookout: dict = field(default_factory=lambda: {"held_since": None, "held_reason": "", "braked": False,
                                                   "starts_again_at": None, "stopped_by": "", "action": ""})

    @property
    def healthy(self) -> bool | None:
        judged = [p["healthy"] for p in self.probes.values() if p["healthy"] is not None]
        return None if not judged else all(judged)

    @property
    def ok(self) -> bool:
        return not self.alerts and not self.orphans and self.snap.state in FINE_STATES

    def as_json(self, now: float) -> dict:
        s = self.snap
        return {
            "name": display_name(s.namespec), "group": s.group, "namespec": s.namespec, "state": s.state,
            "pid": s.pid, "uptime_seconds": max(0, s.now - s.start) if s.state == "RUNNING" and s.start else None,
            "description": self.description, "healthy": self.healthy, "probes": self.probes,
            "restarts_1h": self.restarts_1h, "restarts_24h": self.restarts_24h, "last_exit": self.last_exit,
            "alerts": self.alerts, "silenced_until": self.silenced_until, "lookout": self.lookout,
            "orphans": [o.pid for o in self.orphans], "ok": self.ok,
        }


def collect(config: Config, pattern: str = "*") -> list[ProcessStatus]:
    """The processes `pattern` names (patterns.py), as supervisord lists them, with the store's word."""
    wanted = ProcessPattern.parse(pattern)
    client = SupervisorClient(config.supervisor)
    try:
        infos = client.call("supervisor.getAllProcessInfo")
    except (SupervisorUnavailable, xmlrpc.client.Fault) as exc:
        raise Unreadable(f"cannot read supervisord at {config.supervisor.serverurl}: {exc}") from None

    rows = []
    for info in infos if isinstance(infos, list) else []:
        snap = snapshot_from_info(info)
        if snap is None or not wanted.matches(snap.namespec):
            continue
        rows.append(ProcessStatus(snap, str(info.get("description", ""))))
    _add_store(config, rows, time.time())
    return rows


def left_running(config: Config) -> list[str]:
    """With supervisord down: the programs dying supervisords left running (every generation, and those
    of a death the store could not record, from the sidecar), still alive now (pid and start time
    checked in /proc). Best effort: nothing when neither says anything."""
    found = list(peek(config.state_path).orphans)
    try:
        conn = connect(config.state_path, readonly=True)
        try:
            found += [o for o in orphans_in(conn) if o.pid not in {f.pid for f in found}]
        finally:
            conn.close()
    except (StoreUnavailable, sqlite3.Error, OSError):
        pass
    return [f"ORPHAN {display_name(o.namespec)} pid {o.pid} still runs, {o.origin()}" for o in found if alive(o)]


def _add_store(config: Config, rows: list[ProcessStatus], now: float) -> None:
    try:
        with store_errors():
            conn = connect(config.state_path, readonly=True)
            try:
                _read(conn, rows, now, config.history.per_process)
            finally:
                conn.close()
    except (StoreUnavailable, sqlite3.Error) as exc:
        raise Unreadable(f"cannot read lookout's store {config.state_path}: "
                         f"{store_problem(config.state_path, exc)}") from None


def _read(conn: sqlite3.Connection, rows: list[ProcessStatus], now: float, per_process: int = 500) -> None:
    by_ns = {r.snap.namespec: r for r in rows}
    for ns, since, n in conn.execute(
            f"SELECT namespec, at >= ?, COUNT(*) FROM history WHERE {_RESTART} AND at >= ? GROUP BY namespec, at >= ?",
            (now - 3600, now - 86400, now - 3600)):
        row = by_ns.get(ns)
        if row is not None:
            row.restarts_24h += n
            if since:
                row.restarts_1h += n
    # The history is bounded per process (state.history_per_process): for a program that crash-loops
    # all day its oldest rows are gone, and the counts are what is left: at least that many.
    for ns, oldest, kept in conn.execute("SELECT namespec, MIN(at), COUNT(*) FROM history GROUP BY namespec"):
        row = by_ns.get(ns)
        if row is not None and kept >= per_process and oldest is not None and oldest > now - 86400:
            row.counted_since = oldest
    for r in conn.execute("SELECT namespec, last_exit_text, last_exit_status, last_exit_at FROM processes "
                          "WHERE last_exit_text != ''"):
        row = by_ns.get(r["namespec"])
        if row is not None:
            row.last_exit = {"text": r["last_exit_text"], "status": r["last_exit_status"], "at": r["last_exit_at"]}
    # The history keeps the last exit whose status is known even while the newest one is looked up.
    for ns, at, detail in conn.execute("SELECT namespec, MAX(at), detail FROM history WHERE kind = 'exit' "
                                       "GROUP BY namespec"):
        row = by_ns.get(ns)
        if row is not None and (row.last_exit is None or (row.last_exit["at"] or 0) < at):
            row.last_exit = _exit_from_history(detail, at)
    for r in conn.execute("SELECT * FROM probes"):  # last_judged: schema 5
        row = by_ns.get(r["namespec"])
        if row is not None:
            row.probes[r["probe"]] = {"healthy": None if r["healthy"] is None else bool(r["healthy"]),
                                      "last_ok": None if r["last_ok"] is None else bool(r["last_ok"]),
                                      "last_detail": r["last_detail"],
                                      "judged": bool(r["last_judged"]) if "last_judged" in r.keys() else True}  # noqa: SIM118 (a Row)
    for r in conn.execute("SELECT namespec, kind, severity, opened_at, detail FROM alerts WHERE resolved_at IS NULL "
                          "ORDER BY opened_at"):
        for row in rows:
            if r["namespec"] == row.snap.namespec or r["namespec"] == row.snap.group and ":" not in r["namespec"]:
                row.alerts.append({"kind": r["kind"], "severity": r["severity"], "since": r["opened_at"],
                                   "detail": r["detail"][:200]})
    for r in conn.execute("SELECT namespec, braked, brake_resume_at, stopped_by, action FROM processes"):
        row = by_ns.get(r["namespec"])
        if row is not None:
            action = json.loads(r["action"]) if r["action"] else {}
            row.lookout.update(braked=bool(r["braked"]), starts_again_at=r["brake_resume_at"],
                               stopped_by=r["stopped_by"] or "",
                               action=f"{action.get('kind', '')} ({action.get('step', '')} step)" if action else "")
    for ns, since, reason in conn.execute("SELECT namespec, MIN(created_at), MAX(reason) FROM holds "
                                          "WHERE released_at IS NULL GROUP BY namespec"):
        row = by_ns.get(ns)
        if row is not None:
            row.lookout["held_since"] = since
            row.lookout["held_reason"] = reason or ""
    for orphan in orphans_in(conn):  # checked in /proc now: killed ones are gone
        row = by_ns.get(orphan.namespec)
        if row is not None and orphan.pid != row.snap.pid and alive(orphan):  # (two supervisords, one store)
            row.orphans.append(orphan)
    silences = DeliveryStore(conn).silences(now)  # the notifier's own matching: they agree by construction
    for row in rows:
        until = [s.ends_at for s in silences if s.covers(row.snap.namespec, now)]
        row.silenced_until = max(until) if until else None


_EXIT = re.compile(r"^(exit status (\d+)|killed by \S+)")


def _exit_from_history(detail: str, at: float) -> dict:
    """'exit status 3 after running 1.2s' -> {"text": "exit status 3", "status": 3, "at": at}."""
    m = _EXIT.match(detail)
    if m is None:
        return {"text": detail, "status": None, "at": at}
    return {"text": m.group(1), "status": int(m.group(2)) if m.group(2) else -1, "at": at}


# ---- text -------------------------------------------------------------------------------

RED, YELLOW, GREEN, DIM, RESET = "\033[31m", "\033[33m", "\033[32m", "\033[2m", "\033[0m"
_STATE_COLOUR = {"RUNNING": GREEN, "STOPPED": DIM, "STARTING": YELLOW, "STOPPING": YELLOW, "BACKOFF": RED,
                 "EXITED": RED, "FATAL": RED, "UNKNOWN": RED}


def _ago(at: float | None, now: float) -> str:
    return f"{format_duration(max(0.0, now - at))} ago" if at else ""


def render(rows: list[ProcessStatus], now: float, colour: bool) -> str:
    def paint(text: str, tint: str) -> str:
        return f"{tint}{text}{RESET}" if colour and tint else text

    width = max([len(display_name(r.snap.namespec)) for r in rows] + [4])
    lines = []
    for r in rows:
        s = r.snap
        name = display_name(s.namespec).ljust(width)
        state = paint(s.state.ljust(9), _STATE_COLOUR.get(s.state, ""))
        parts = [r.description or "-"]
        bad = [p for p, v in r.probes.items() if v["healthy"] is False]
        blind = [f"{p}: {v['last_detail']}" for p, v in r.probes.items() if not v.get("judged", True)]
        if bad:
            parts.append(paint(f"UNHEALTHY ({', '.join(bad)})", RED))
        elif r.healthy is not None and not blind:
            parts.append(paint("healthy", GREEN))
        if blind:  # neither healthy nor not: the probe cannot read what it judges by
            parts.append(paint(f"health: cannot judge ({'; '.join(blind)})", YELLOW))
        at_least = "≥" if r.counted_since is not None else ""
        parts.append(f"restarts {at_least if r.counted_since and r.counted_since > now - 3600 else ''}"
                     f"{r.restarts_1h}/1h {at_least}{r.restarts_24h}/24h")
        if r.last_exit and s.state != "RUNNING" or r.last_exit and r.restarts_24h:
            parts.append(f"last exit: {r.last_exit['text']}, {_ago(r.last_exit['at'], now)}")
        for a in r.alerts:
            tint = RED if a["severity"] == "critical" else YELLOW
            parts.append(paint(f"ALERT {a['severity']} {a['kind']} since {_ago(a['since'], now)}", tint))
        if r.silenced_until:
            parts.append(paint(f"silenced for {format_duration(r.silenced_until - now)}", DIM))
        parts.extend(paint(text, YELLOW) for text in _lookout_says(r, now))
        lines.append(f"{name}  {state} {'  '.join(parts)}")
    return "\n".join(lines)


def _lookout_says(r: ProcessStatus, now: float) -> list[str]:
    """The brake, a hold, lookout's action in flight: what an operator at 3 a.m. needs to know."""
    shown, look = display_name(r.snap.namespec), r.lookout
    orphans = [f"ORPHAN pid {o.pid} still runs, {o.origin()} (kill {o.pid} if one copy is enough)"
               for o in r.orphans]
    if look["held_since"] is not None:
        why = f": {clean(look['held_reason'])}" if look.get("held_reason") else ""
        return [*orphans,
                f"held {_ago(look['held_since'], now)}{why} (lookout leaves it as it is; `lookout release {shown}`)"]
    out = orphans
    if look["braked"] and look["starts_again_at"] is not None and r.snap.state in ("STOPPED", "FATAL"):
        wait = format_duration(max(0.0, look["starts_again_at"] - now))
        out.append(f"braked: starts again in {wait}; to keep it stopped: lookout hold {shown}")
    elif look["braked"] and r.snap.state == "STOPPED":
        out.append(f"braked: stopped by lookout's crash-loop brake; resume: supervisorctl start {shown}")
    if look["action"]:
        out.append(f"lookout: its {look['action']} in progress")
    return out


def group_lines(config: Config, rows: list[ProcessStatus], shown: set[str]) -> list[str]:
    """Each [[alerts.groups]] group's shortfall, and how much of it is deliberate (an operator's stops),
    for the groups of the processes shown; counted over all their members."""
    from .listener.rules.models import ProcessRecord
    from .listener.rules.quorum import are, count

    out = []
    for group in sorted(shown):
        rule = next((g for g in config.alerts.groups if ProcessPattern.parse(g.match).names_group(group)), None)
        if rule is None:
            continue
        members = [ProcessRecord(r.snap.group, r.snap.name, r.snap.state, stopped_by=r.lookout["stopped_by"])
                   for r in rows if r.snap.group == group]
        c = count(members, group)
        needed = c.needed(rule.min_running)
        text = f"group {group}: {c.running} of {c.total} running (minimum {rule.min_running}"
        text += f", {needed} while {are(c.deliberate)} stopped on purpose)" if needed < rule.min_running else ")"
        short = max(0, needed - c.running)
        if short:
            text += (f", short by {short}: {len(c.missing)} down"
                     + (f" ({', '.join(m.name for m in c.missing[:5])})" if c.missing else ""))
        out.append(text)
    return out


def status_command(config: Config, pattern: str, as_json: bool, check: bool, colour: bool) -> int:
    now = time.time()
    try:
        ProcessPattern.parse(pattern)
    except ValueError as exc:
        print(f"lookout: {exc}", file=sys.stderr)
        return 2
    try:
        rows = collect(config, pattern)
    except Unreadable as exc:
        print(f"lookout: {exc}", file=sys.stderr)
        for line in left_running(config):
            print(line)
        return 2
    if as_json:
        print(json.dumps([r.as_json(now) for r in rows], indent=2))
    elif rows:
        print(render(rows, now, colour))
        every = rows if pattern == "*" else collect(config, "*")
        for line in group_lines(config, every, {r.snap.group for r in rows}):
            print(line)
        for line in delivery_lines(config, now):
            print(line)
    if pattern != "*" and not rows:  # a typo in a HEALTHCHECK's pattern must not pass as "all fine"
        print(no_match(pattern), file=sys.stderr)
        return 2
    if check:
        return 0 if all(r.ok for r in rows) else 1
    return 0
