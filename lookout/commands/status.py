"""`lookout status`: supervisorctl status, plus what only lookout knows.

One line per process: state and uptime (from supervisord), health (from the probes; "cannot judge"
while a probe cannot read its evidence, e.g. a log file deleted), restarts in
the last hour and day, the last unexpected exit in words, the open alert and a silence if one
holds it. `--json` prints a list of objects of the shape in status_schema.py.

`--check` means what `supervisorctl status | grep -v RUNNING` means, plus lookout's word: exit 0
when every process runs (RUNNING, or STARTING), no alert is open (a [[checks]] one included) and
the listener can write its store (a STORE line says when it cannot: what is shown may be stale); 1
otherwise, naming each process that is not fine on stderr; 2 when supervisord or the store cannot
be read. A process an operator stopped counts (`--ignore-stopped`: the old meaning, STOPPED and EXITED are fine). Fine
anyway: a one-shot program (`oneshot = true` in [[alerts.programs]], or autorestart=false in the
supervisord.conf of a supervisord running here) that exited as expected (exitcodes), and a program
supervisord never started (autostart=false, start 0): nothing says it should run.
"""

from __future__ import annotations

import json
import sqlite3
import sys
import time
import xmlrpc.client
from dataclasses import dataclass, field

from ..config import Config, format_duration
from ..dependency_view import checks_down, needs_in_store, said
from ..listener.loop.supervisord_life import alive
from ..listener.rules.models import ProcessSnapshot, display_name
from ..listener.rules.orphans import Orphan
from ..listener.rules.policy import PolicyBook, ProgramPolicy
from ..listener.store.files import StoreUnavailable, store_errors, store_problem
from ..listener.store.reads import StoreReader
from ..listener.store.sidecar import peek
from ..patterns import ProcessPattern, no_match
from ..rpc import SupervisorClient, SupervisorUnavailable, snapshot_from_info
from ..text import clean
from .running_supervisord import run_once_of
from .status_delivery import delivery_lines

RUNS = ("RUNNING", "STARTING")  # (STARTING lasts at most startsecs: then RUNNING or BACKOFF)
STOPPED_ON_PURPOSE = ("STOPPED", "EXITED")  # --ignore-stopped: fine (an unexpected EXITED has an alert)

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
    oneshot: bool = False  # [[alerts.programs]] oneshot = true: runs once, an expected exit is fine
    must_run: bool = False  # [[alerts.programs]] must_run = true: never started is not fine either
    needs: str = ""  # [[dependencies]]: "waiting for database (FATAL)", "down: database FATAL"
    lookout: dict = field(default_factory=lambda: {"held_since": None, "held_reason": "", "braked": False,
                                                   "starts_again_at": None, "stopped_by": "", "action": ""})

    @property
    def healthy(self) -> bool | None:
        judged = [p["healthy"] for p in self.probes.values() if p["healthy"] is not None]
        return None if not judged else all(judged)

    @property
    def ok(self) -> bool:
        return not self.not_ok()

    def not_ok(self, ignore_stopped: bool = False) -> str:
        """Why --check counts it as not fine, in a few words; '' when it is fine."""
        s = self.snap
        if self.alerts:
            return f"alert {self.alerts[0]['kind']} open"
        if self.orphans:
            return "runs twice (left running by a supervisord that died)"
        expected_exit = s.state == "EXITED" and not s.spawnerr.startswith("Bad exit code")
        never_started = s.state == "STOPPED" and not s.start and not self.must_run
        if s.state in RUNS or never_started or (expected_exit and self.oneshot) \
                or (ignore_stopped and s.state in STOPPED_ON_PURPOSE):
            return ""
        by = self.lookout["stopped_by"]
        if s.state == "STOPPED" and by:
            return f"STOPPED by {'an operator' if by == 'operator' else by}"
        return f"{s.state}{' (an expected exit)' if expected_exit else ''}"

    def as_json(self, now: float) -> dict:
        s = self.snap
        return {
            "name": display_name(s.namespec), "group": s.group, "namespec": s.namespec, "state": s.state,
            "pid": s.pid, "uptime_seconds": max(0, s.now - s.start) if s.state == "RUNNING" and s.start else None,
            "description": self.description, "healthy": self.healthy, "probes": self.probes,
            "restarts_1h": self.restarts_1h, "restarts_24h": self.restarts_24h, "last_exit": self.last_exit,
            "alerts": self.alerts, "silenced_until": self.silenced_until, "lookout": self.lookout,
            "orphans": [o.pid for o in self.orphans], "ok": self.ok, "not_ok": self.not_ok(),
            "needs": self.needs,
        }


def collect(config: Config, pattern: str = "*", judged: bool = False) -> list[ProcessStatus]:
    """The processes `pattern` names (patterns.py), as supervisord lists them, with the store's word;
    judged (--check, --json): also which ones run once, by supervisord.conf's autorestart=false."""
    wanted = ProcessPattern.parse(pattern)
    policies = PolicyBook(config.alerts)
    client = SupervisorClient(config.supervisor)
    try:
        infos = client.call("supervisor.getAllProcessInfo")
    except (SupervisorUnavailable, xmlrpc.client.Fault) as exc:
        raise Unreadable(f"cannot read supervisord at {config.supervisor.serverurl}: {exc}") from None

    run_once = run_once_of(client) if judged else set()  # (reads supervisord.conf: only when `ok` is asked)
    rows, every = [], []
    for info in infos if isinstance(infos, list) else []:
        snap = snapshot_from_info(info)
        if snap is not None:
            every.append(snap)
        if snap is None or not wanted.matches(snap.namespec):
            continue
        policy = policies.lookup(snap.namespec)
        rows.append(ProcessStatus(snap, str(info.get("description", "")),
                                  oneshot=_oneshot(policy, snap.namespec in run_once), must_run=policy.must_run))
    _add_store(config, rows, time.time())
    if config.dependencies:
        _add_needs(config, rows, every)
    return rows


def _add_needs(config: Config, rows: list[ProcessStatus], every: list[ProcessSnapshot]) -> None:
    """What each dependant waits for, or is down for, judged on every process supervisord has."""
    try:
        with store_errors(), StoreReader.open(config.state_path) as store:
            needs = needs_in_store(config, every, store)
    except (StoreUnavailable, sqlite3.Error) as exc:
        raise Unreadable(f"cannot read lookout's store {config.state_path}: "
                         f"{store_problem(config.state_path, exc)}") from None
    for row in rows:
        found = needs.get(row.snap.namespec)
        if found is not None:
            row.needs = said(found, row.snap.state)


def _oneshot(policy: ProgramPolicy, autorestart_false: bool) -> bool:
    return policy.oneshot or (autorestart_false and not policy.must_run)  # (must_run wins over supervisord.conf)


def left_running(config: Config) -> list[str]:
    """With supervisord down: the programs dying supervisords left running (every generation, and those
    of a death the store could not record, from the sidecar), still alive now (pid and start time
    checked in /proc). Best effort: nothing when neither says anything."""
    found = list(peek(config.state_path).orphans)
    try:
        with StoreReader.open(config.state_path) as store:
            found += [o for o in store.orphans() if o.pid not in {f.pid for f in found}]
    except (StoreUnavailable, sqlite3.Error, OSError):
        pass
    return [f"ORPHAN {display_name(o.namespec)} pid {o.pid} still runs, {o.origin()}" for o in found if alive(o)]


def _add_store(config: Config, rows: list[ProcessStatus], now: float) -> None:
    try:
        with store_errors(), StoreReader.open(config.state_path) as store:
            _read(store, rows, now, config.history.per_process)
    except (StoreUnavailable, sqlite3.Error) as exc:
        raise Unreadable(f"cannot read lookout's store {config.state_path}: "
                         f"{store_problem(config.state_path, exc)}") from None


def _read(store: StoreReader, rows: list[ProcessStatus], now: float, per_process: int = 500) -> None:
    by_ns = {r.snap.namespec: r for r in rows}
    for ns, count in store.restart_counts(now).items():
        row = by_ns.get(ns)
        if row is not None:
            row.restarts_1h += count.last_hour
            row.restarts_24h += count.last_day
    # The history is bounded per process (state.history_per_process): for a program that crash-loops
    # all day its oldest rows are gone, and the counts are what is left: at least that many.
    for ns, span in store.history_spans().items():
        row = by_ns.get(ns)
        if row is not None and span.kept >= per_process and span.oldest is not None and span.oldest > now - 86400:
            row.counted_since = span.oldest
    for ns, ex in store.last_exits().items():
        row = by_ns.get(ns)
        if row is not None:
            row.last_exit = {"text": ex.text, "status": ex.status, "at": ex.at}
    # The history keeps the last exit whose status is known even while the newest one is looked up.
    for ns, ex in store.history_exits().items():
        row = by_ns.get(ns)
        if row is not None and (row.last_exit is None or (row.last_exit["at"] or 0) < ex.at):
            row.last_exit = {"text": ex.text, "status": ex.status, "at": ex.at}
    for p in store.probes():
        row = by_ns.get(p.namespec)
        if row is not None:
            row.probes[p.probe] = {"healthy": p.healthy, "last_ok": p.last_ok, "last_detail": p.last_detail,
                                   "judged": p.judged}
    for a in store.open_alerts():
        for row in rows:
            if a.namespec == row.snap.namespec or a.namespec == row.snap.group and ":" not in a.namespec:
                row.alerts.append({"kind": a.kind, "severity": a.severity, "since": a.opened_at,
                                   "detail": a.detail[:200]})
    for look in store.lookout_states():
        row = by_ns.get(look.namespec)
        if row is not None:
            row.lookout.update(braked=look.braked, starts_again_at=look.brake_resume_at, stopped_by=look.stopped_by,
                               action=f"{look.action_kind} ({look.action_step} step)" if look.acting else "")
    for ns, hold in store.open_holds().items():
        row = by_ns.get(ns)
        if row is not None:
            row.lookout["held_since"] = hold.since
            row.lookout["held_reason"] = hold.reason
    for orphan in store.orphans():  # checked in /proc now: killed ones are gone
        row = by_ns.get(orphan.namespec)
        if row is not None and orphan.pid != row.snap.pid and alive(orphan):  # (two supervisords, one store)
            row.orphans.append(orphan)
    silences = store.silences(now)  # the notifier's own matching: they agree by construction
    for row in rows:
        until = [s.ends_at for s in silences if s.covers(row.snap.namespec, now)]
        row.silenced_until = max(until) if until else None


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
    if r.snap.state == "STOPPED" and look["stopped_by"] == "operator":
        out.append("stopped by an operator")
    if r.needs:
        out.append(r.needs)
    return out


def group_lines(config: Config, rows: list[ProcessStatus], shown: set[str]) -> list[str]:
    """Each [[alerts.groups]] group's shortfall, and how much of it is deliberate (an operator's stops),
    for the groups of the processes shown; counted over all their members."""
    from ..listener.rules.models import ProcessRecord
    from ..listener.rules.quorum import are, count

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


def status_command(config: Config, pattern: str, as_json: bool, check: bool, colour: bool,
                   ignore_stopped: bool = False) -> int:
    now = time.time()
    try:
        ProcessPattern.parse(pattern)
    except ValueError as exc:
        print(f"lookout: {exc}", file=sys.stderr)
        return 2
    try:
        rows = collect(config, pattern, judged=check or as_json)
    except Unreadable as exc:
        print(f"lookout: {exc}", file=sys.stderr)
        for line in left_running(config):
            print(line)
        return 2
    stale = store_line(config, now)
    if as_json:
        print(json.dumps([r.as_json(now) for r in rows], indent=2))
        if stale:
            print(f"lookout: {stale}", file=sys.stderr)  # (stdout stays STATUS_SCHEMA's list)
    elif rows:
        print(render(rows, now, colour))
        every = rows if pattern == "*" else collect(config, "*")
        for line in group_lines(config, every, {r.snap.group for r in rows}):
            print(line)
        for line in delivery_lines(config, now):
            print(line)
        if stale:
            print(stale)
    checks = checks_down(config) if pattern == "*" else []  # (needs outside supervisord: no line of their own)
    if checks and not as_json:
        for line in checks:
            print(line)
    if pattern != "*" and not rows:  # a typo in a HEALTHCHECK's pattern must not pass as "all fine"
        print(no_match(pattern), file=sys.stderr)
        return 2
    if check:
        not_fine = [f"{display_name(r.snap.namespec)} ({why})" for r in rows if (why := r.not_ok(ignore_stopped))]
        not_fine += [f"{line.split()[0]} (down)" for line in checks]
        if not_fine:
            print(f"lookout: --check: not fine: {', '.join(not_fine)}", file=sys.stderr)
        return 0 if not not_fine and not stale else 1
    return 0


def store_line(config: Config, now: float) -> str:
    """The listener could not write its store at its last try (the sidecar says so: the store itself
    only has what came before, e.g. while another process holds its lock). What status read is then
    stale, and the listener holds its alerts: --check fails."""
    side = peek(config.state_path)
    since, reason = side.degraded_since, side.reason
    if not since:
        return ""
    at = time.strftime("%H:%M:%S", time.localtime(since))
    return (f"STORE lookout cannot write its store since {at} ({format_duration(max(0.0, now - since))}: "
            f"{clean(reason or '?')[:200]}): alerts are held; restarts, exits and alerts above may be stale")
