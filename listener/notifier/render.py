"""Turning a group of notices into one human message: title, body, apprise notify type.

Every alert says: host, group:name, what happened in plain words, the exit status or killing
signal, how long it ran, failures in the window and since when, and its last stderr lines.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from ..config import format_duration
from ..logs import ExitInfo
from ..rules.models import CRASH_LOOP, CRASHED, EXITED, FATAL, REMINDER, RESOLVED
from ..store.delivery import PendingNotice
from ..text import clean, last_lines

WHAT = {
    CRASHED: "crashed and was restarted",
    CRASH_LOOP: "is crash-looping",
    FATAL: "gave up starting (FATAL)",
    EXITED: "exited and will not be restarted",
}
PROBLEM = {  # for resolved messages: what it was
    CRASHED: "a crash",
    CRASH_LOOP: "a crash loop",
    FATAL: "a failed start (FATAL)",
    EXITED: "an unexpected exit",
}
SEVERITY_ORDER = {"critical": 0, "warning": 1, "info": 2}


@dataclass
class Enrichment:
    """What the notifier fetched from supervisord just before rendering (best effort)."""

    tails: dict[str, str] = field(default_factory=dict)  # namespec -> recent log text (cleaned)
    exits: dict[str, ExitInfo] = field(default_factory=dict)  # namespec -> from the main log
    spawnerr: dict[str, str] = field(default_factory=dict)
    unavailable: dict[str, str] = field(default_factory=dict)  # namespec -> why its log tail is missing


@dataclass(frozen=True)
class Message:
    title: str
    body: str
    notify_type: str


def _clock(ts: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(ts))


def _exit_phrase(n: PendingNotice, extra: Enrichment) -> str:
    proc = n.process
    info = extra.exits.get(n.alert.namespec)
    text = proc.last_exit_text if proc and proc.last_exit_text else (info.text if info else "")
    ran = proc.last_run_seconds if proc else None
    if not text:
        return ""  # a spawn error (no fork) or a log we could not read: spawnerr/tail say more
    parts = [f"last exit: {text}"]
    if ran is not None:
        parts.append(f"after running {format_duration(ran)}")
    return " ".join(parts)


def firing_block(n: PendingNotice, host: str, now: float, extra: Enrichment, lines: int) -> list[str]:
    a, proc = n.alert, n.process
    label = "REMINDER " if n.kind == REMINDER else ""
    out = [f"{label}{a.severity.upper()}  {a.namespec} {WHAT[a.kind]} on {host}"]
    exit_phrase = _exit_phrase(n, extra)
    if exit_phrase:
        out.append(f"  {exit_phrase}")
    if proc is not None:
        since = proc.failing_since or a.opened_at
        window = f"{len(proc.failures)} failure(s) in the crash-loop window" if proc.failures else ""
        out.append(
            "  " + "; ".join(
                p for p in (
                    window,
                    f"failing since {_clock(since)} ({format_duration(now - since)} ago)",
                    f"restarted {proc.restarts} time(s) in all",
                ) if p
            )
        )
    spawnerr = extra.spawnerr.get(a.namespec) or a.detail
    if spawnerr:
        out.append(f"  supervisord says: {clean(spawnerr)}")
    tail = last_lines(extra.tails.get(a.namespec, ""), lines)
    if tail:
        out.append(f"  last {len(tail)} line(s) of its log:")
        out.extend(f"    | {line}" for line in tail)
    elif extra.unavailable.get(a.namespec):
        out.append(f"  (log tail unavailable: {extra.unavailable[a.namespec]})")
    return out


def _recovery(alert, end: float) -> str:  # noqa: ANN001
    if alert.resolution == "stopped":
        return f"stopped by an operator at {_clock(end)}"
    return f"running again since {_clock(end)} (down {format_duration(end - alert.opened_at)})"


def _resolved_block(n: PendingNotice, host: str) -> list[str]:
    a, proc = n.alert, n.process
    end = a.resolved_at or a.updated_at
    if a.resolution == "stopped":
        what = "was stopped by an operator"
    elif a.resolution == "recovered":
        what = "is running again"
    else:
        what = a.resolution or "recovered"
    restarts = max(0, proc.restarts - a.restarts_at_open) if proc else 0
    return [
        f"RESOLVED  {a.namespec} {what} on {host}",
        f"  after {PROBLEM[a.kind]}; down {format_duration(end - a.opened_at)} "
        f"(since {_clock(a.opened_at)}), {a.failures} failure(s), {restarts} restart(s)",
    ]


def render(
    notices: list[PendingNotice], host: str, now: float, extra: Enrichment, *, lines: int, max_detailed: int
) -> Message:
    firing = [n for n in notices if n.kind != RESOLVED]
    resolved = [n for n in notices if n.kind == RESOLVED]
    # A problem that came and went within group_wait: one block that says both.
    recovered = {n.alert.id: n for n in resolved if any(f.alert.id == n.alert.id for f in firing)}
    resolved = [n for n in resolved if n.alert.id not in recovered]
    firing.sort(key=lambda n: (SEVERITY_ORDER.get(n.alert.severity, 9), n.created_at))
    blocks: list[str] = []
    for i, n in enumerate(firing):
        back = recovered.get(n.alert.id)
        since = _recovery(back.alert, back.alert.resolved_at or back.created_at) if back is not None else ""
        if i < max_detailed:
            block = firing_block(n, host, now, extra, lines)
            if since:
                block.insert(1, f"  recovered since: {since}")
            blocks.extend(block)
            blocks.append("")
        else:
            blocks.append(f"{n.alert.severity.upper()}  {n.alert.namespec} {WHAT[n.alert.kind]}"
                          + (f"; recovered since: {since}" if since else ""))
    if len(firing) > max_detailed:
        blocks.append("")
    for n in resolved:
        blocks.extend(_resolved_block(n, host))
        blocks.append("")

    if len(notices) == 1:
        n = notices[0]
        if n.kind == RESOLVED:
            title = f"[RESOLVED] {n.alert.namespec} recovered on {host}"
        else:
            prefix = "Reminder: " if n.kind == REMINDER else ""
            title = f"[{n.alert.severity.upper()}] {prefix}{n.alert.namespec} {WHAT[n.alert.kind]} on {host}"
    else:
        parts = []
        if firing:
            parts.append(f"{len(firing)} process(es) failing")
        if resolved:
            parts.append(f"{len(resolved)} resolved")
        worst = firing[0].alert.severity.upper() if firing else "RESOLVED"
        title = f"[{worst}] {host}: {', '.join(parts)}"

    if any(n.alert.severity == "critical" for n in firing):
        kind = "failure"
    elif firing:
        kind = "warning" if any(n.alert.severity == "warning" for n in firing) else "info"
    else:
        kind = "success"
    return Message(title, "\n".join(blocks).rstrip() + "\n", kind)


def render_safely(notices: list[PendingNotice], host: str, now: float, extra: Enrichment, *, lines: int,
                  max_detailed: int, errors=None) -> Message:  # noqa: ANN001
    """render(), or when it fails (a bug, a damaged record), each alert on its own, and an alert
    that cannot be rendered at all as one plain line: a bad alert must not take others with it."""
    try:
        return render(notices, host, now, extra, lines=lines, max_detailed=max_detailed)
    except Exception:
        if errors is not None:
            errors.report("render", "rendering a message failed; sending its alerts one by one")
    blocks: list[str] = []
    for n in notices:
        try:
            blocks.extend(render([n], host, now, extra, lines=lines, max_detailed=max_detailed).body.splitlines())
        except Exception:
            a = n.alert
            blocks.append(f"{a.severity.upper()}  {a.namespec}: {n.kind} {a.kind} on {host} "
                          "(details could not be rendered; see the listener's log)")
        blocks.append("")
    critical = any(n.alert.severity == "critical" and n.kind != RESOLVED for n in notices)
    title = f"[{'CRITICAL' if critical else 'ALERT'}] {host}: {len(notices)} alert(s)"
    return Message(title, "\n".join(blocks).rstrip() + "\n", "failure" if critical else "warning")
