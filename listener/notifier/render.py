"""Turning a group of notices into one human message: title, body, apprise notify type.

Every alert says: host, the process as supervisorctl names it (`reconciler`, `group:name`),
what happened in plain words, the exit status or killing signal, how long it ran, failures
in the window and since when, what lookout did about it, the evidence, and its last log lines.
Chat targets that render markdown get the log tail and evidence as code blocks.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import quote

from ...bounded import USER_AGENT
from ...config import format_duration
from ...redact import scrub
from ...text import clean, tail
from ..rules.kinds import KINDS
from ..rules.models import (
    BRAKED,
    CRASH_LOOP,
    CRASHED,
    EXITED,
    FATAL,
    PROCESS,
    QUORUM,
    REMINDER,
    REMOVED_FROM_CONFIG,
    RESOLVED,
    UPDATE,
    WAITING,
    Alert,
    ProcessRecord,
    display_name,
)
from ..store.delivery import PendingNotice
from ..workers.log_reader import ExitInfo
from .payload import Payload

RESOLVED_AS = {"stopped": "was stopped by an operator", "recovered": "is running again",
               "healthy again": "is healthy again"}
SEVERITY_ORDER = {"critical": 0, "warning": 1, "info": 2}
EVIDENCE_LINES = 30
TITLE_NAMES = 3  # a grouped title names this many processes, or the first two "and N more"

# An access-log line ("GET /healthz HTTP/1.1") and an http probe's detail ("GET http://h:8080/healthz: ...",
# as probes/checks.py writes it): the path it names.
_REQUEST_LINE = re.compile(r"\b(?:GET|HEAD|POST|PUT|PATCH|DELETE|OPTIONS) (/[^\s?\"]*)\S* HTTP/\d")
_PROBED_PATH = re.compile(r"^(?:GET|HEAD|POST|PUT|PATCH|DELETE|OPTIONS) [a-z]+://[^/\s]+(/\S*): ")


def dashboard_link(template: str, namespec: str, host: str) -> str:
    """notify.dashboard_url with {host} {group} {name} filled in, URL-encoded."""
    if not template:
        return ""
    group, _, name = namespec.partition(":")
    return template.format(host=quote(host, safe=""), group=quote(group, safe=""), name=quote(name, safe=""))


@dataclass
class Enrichment:
    """What the notifier fetched from supervisord just before rendering (best effort)."""

    tails: dict[str, str] = field(default_factory=dict)  # namespec -> recent log text (cleaned)
    exits: dict[str, ExitInfo] = field(default_factory=dict)  # namespec -> from the main log
    spawnerr: dict[str, str] = field(default_factory=dict)
    unavailable: dict[str, str] = field(default_factory=dict)  # namespec -> why its log tail is missing
    exit_unknown: dict[str, str] = field(default_factory=dict)  # namespec -> why its exit status is missing
    dashboard_url: str = ""  # notify.dashboard_url, the template
    probe_paths: dict[str, tuple[str, ...]] = field(default_factory=dict)  # namespec -> paths its http probes GET


def _clock(ts: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(ts))


def what(alert: Alert) -> str:
    """'is unhealthy (http probe)', 'crashed and was restarted'."""
    text = KINDS[alert.kind].what
    return f"{text} ({alert.probe} probe)" if alert.probe else text


LABELS = {REMINDER: "REMINDER ", UPDATE: "UPDATE "}  # before an alert's line in a message body


def headline(alert: Alert, host: str) -> str:
    return f"{display_name(alert.namespec)} {what(alert)} on {host}"


def _exit_phrase(n: PendingNotice, extra: Enrichment) -> str:
    proc = n.process
    info = extra.exits.get(n.alert.namespec)
    ran = proc.last_run_seconds if proc else None
    if proc and proc.last_exit_text:
        text = proc.last_exit_text
    else:
        text = info.text if info else ""
        ran = info.ran if info and info.ran is not None else ran
    why = extra.exit_unknown.get(n.alert.namespec)
    if not text and why and n.alert.kind in (CRASHED, CRASH_LOOP, EXITED):
        text = f"unknown ({why})"  # events do not carry it, and the respawn erased supervisord's
    if not text:
        return ""  # a spawn error (no fork): spawnerr says more
    parts = [f"last exit: {text}"]
    if ran is not None:
        parts.append(f"after running {format_duration(ran)}")
    return " ".join(parts)


def _block(title: str, text: str, limit: int, markdown: bool) -> list[str]:
    return _show(title, tail(text, limit).lines, markdown)


def _show(title: str, lines: list[str], markdown: bool) -> list[str]:
    if not lines:
        return []
    if markdown:
        return [f"  {title}", "```", *(line.replace("```", "'''") for line in lines), "```"]
    return [f"  {title}", *(f"    | {line}" for line in lines)]


def firing_block(n: PendingNotice, host: str, now: float, extra: Enrichment, lines: int,
                 markdown: bool = False, whole: bool = False) -> list[str]:
    """One alert in words. An update of an alert already heard says what changed, unless `whole`
    (Alertmanager keeps only the latest annotations of an alert: each post is the whole of it)."""
    a, proc = n.alert, n.process
    out = [f"{LABELS.get(n.kind, '')}{a.severity.upper()}  {display_name(a.namespec)} {what_of(n)} on {host}"]
    if a.impact:  # a need: its dependants failing with it, folded into this one message
        out.append(f"  impact: {clean(a.impact)}")
    if a.cause:  # a dependant told before its need was found failing
        out.append(f"  likely cause: {display_name(a.cause)}, a need of it, is failing")
    if a.family != PROCESS and a.detail:
        out.append(f"  {clean(a.detail)}")
    exit_phrase = _exit_phrase(n, extra) if a.family == PROCESS else ""
    if exit_phrase:
        out.append(f"  {exit_phrase}")
    if proc is not None and a.family == PROCESS:
        since = proc.failing_since or a.opened_at
        attempts = failed_starts(a, proc)
        window = (f"{len(proc.failures)} failure(s) in the crash-loop window"
                  if proc.failures and len(proc.failures) != attempts else "")
        if attempts:
            restarts = (f"{attempts} start attempts failed in a row" if attempts > 1 else "1 start attempt failed") \
                + f" (startretries = {attempts - 1})"
        elif a.kind == FATAL and a.previous_kind != CRASH_LOOP:
            restarts = ""  # how many attempts failed is not known, and "restarted N times" would be wrong
        else:
            restarts = f"restarted {proc.restarts} time(s) in all"
        out.append("  " + "; ".join(p for p in (
            window,
            _failing_since(a, since, now),
            restarts,
        ) if p))
    elif a.family != QUORUM:
        out.append(f"  {_failing_since(a, a.opened_at, now)}")
    spawnerr = extra.spawnerr.get(a.namespec) or (a.detail if a.family == PROCESS and a.kind != BRAKED else "")
    if spawnerr:
        out.append(f"  supervisord says: {clean(spawnerr)}")
    elif a.kind == BRAKED and a.detail:
        out.append(f"  {clean(a.detail)}")
    if a.action_taken:
        out.append(f"  lookout: {clean(a.action_taken)}")
    link = dashboard_link(extra.dashboard_url, a.namespec, host)
    if link:
        out.append(f"  dashboard: [{display_name(a.namespec)}]({link})" if markdown else f"  dashboard: {link}")
    # (evidence is gathered during lookout's action: an update after it may be the first to carry it)
    out.extend(_block("evidence:", clean(a.evidence), EVIDENCE_LINES, markdown))
    if a.family == QUORUM or (n.kind == UPDATE and n.heard and not whole):  # an update: its page had the tail
        return out
    log = tail(extra.tails.get(a.namespec, ""), lines, probe_requests(a, extra.probe_paths.get(a.namespec, ())))
    own = f" ({log.left_out} of them lookout's own probe requests, left out)" if log.left_out else ""
    if log.lines:
        out.extend(_show(f"last {log.covered} line(s) of its log{own}:", log.lines, markdown))
    elif log.left_out and lines > 0:
        out.append(f"  last {log.covered} line(s) of its log: only lookout's own probe requests")
    elif extra.unavailable.get(a.namespec) and lines > 0:
        out.append(f"  (log tail unavailable: {extra.unavailable[a.namespec]})")
    return out


def _failing_since(alert: Alert, since: float, now: float) -> str:
    """When it began; found by a reconcile (lookout was not there to see it): at least that long."""
    doing = "waiting" if alert.kind == WAITING else "failing"  # (a start waiting for its needs fails at nothing)
    if alert.at_least:
        return f"{doing} since {_clock(since)} or earlier (at least {format_duration(now - since)})"
    return f"{doing} since {_clock(since)} ({format_duration(now - since)} ago)"


def failed_starts(alert: Alert, proc: ProcessRecord) -> int | None:
    """How many start attempts failed before supervisord gave up (FATAL comes after startretries + 1
    in a row): a program that never ran was never "restarted". The restarts (STARTING from BACKOFF
    or EXITED) since the failures began, plus the first attempt, unless a crash after RUNNING began
    them (its respawn is the first attempt, and counted). None when not known: FATAL found by a
    reconcile (no failure seen), or after a crash loop (which of its failures were starts is lost)."""
    if alert.kind != FATAL or not proc.failures or alert.previous_kind == CRASH_LOOP:
        return None
    attempts = proc.restarts - alert.restarts_at_open + (0 if alert.previous_kind == CRASHED else 1)
    return attempts if attempts >= 1 else None


def probe_requests(alert: Alert, paths: tuple[str, ...] = ()) -> Callable[[str], bool]:
    """Access-log lines of lookout's own probe requests, noise in the tail (and maybe a probe
    URL's token): those with its user agent, and those for a path the program's http probes
    request (`paths`, and for an http probe's alert the one it probes), whatever the alert. A
    program lookout does not probe over HTTP keeps every line."""
    probed = _PROBED_PATH.match(alert.detail) if alert.probe else None
    wanted = set(paths) | ({probed.group(1).split("?", 1)[0]} if probed else set())

    def own(line: str) -> bool:
        if not wanted:
            return False
        request = _REQUEST_LINE.search(line)
        return request is not None and (USER_AGENT in line or request.group(1) in wanted)

    return own


RESPAWN_SLACK = 60.0  # how far before lookout heard of an exit its respawn may be (events queued)


def _recovery(alert: Alert, end: float) -> str:
    if alert.resolution == "stopped":
        return f"stopped by an operator at {_clock(end)}"
    if alert.resolution == REMOVED_FROM_CONFIG:
        return f"{REMOVED_FROM_CONFIG} at {_clock(end)}"
    if alert.family != PROCESS:
        return f"{RESOLVED_AS.get(alert.resolution, alert.resolution)} since {_clock(end)}"
    back = _back_at(alert, end)
    return f"running again since {_clock(back)} ({_downtime(alert, back)})"


def _back_at(alert: Alert, end: float) -> float:
    """When the run that resolved it began (its spawn): the end of the downtime. It may come before
    opened_at, lookout's time of the exit: the respawn came before lookout heard of the exit."""
    back = alert.back_at
    return back if back is not None and alert.opened_at - RESPAWN_SLACK <= back <= end else end


def _downtime(alert: Alert, back: float) -> str:
    """One failure: how long it was down. More: how long it kept failing (it ran in between)."""
    if back < alert.opened_at + 0.001:
        return "respawned at once" if alert.failures <= 1 else "failing for a moment"
    took = format_duration(back - alert.opened_at)
    return f"down {took}" if alert.failures <= 1 else f"failing for {took}"


def resolved_as(alert: Alert, proc: ProcessRecord | None = None) -> str:
    if alert.resolution == "stopped" and proc is not None and proc.state in ("STARTING", "RUNNING"):
        return "was stopped and started again by an operator"  # a restart: it runs now
    return RESOLVED_AS.get(alert.resolution, alert.resolution or "recovered")


def _resolved_block(n: PendingNotice, host: str) -> list[str]:
    a, proc = n.alert, n.process
    end = a.resolved_at or a.updated_at
    lines = [f"RESOLVED  {display_name(a.namespec)} {resolved_as(a, proc)} on {host}"]
    if a.family == PROCESS:
        restarts = max(0, proc.restarts - a.restarts_at_open) if proc else 0
        lines.append(f"  after {KINDS[a.kind].problem}; {_downtime(a, _back_at(a, end))} "
                     f"(since {_clock(a.opened_at)}), {a.failures} failure(s), {restarts} restart(s)")
    else:
        lines.append(f"  after {KINDS[a.kind].problem}{f' ({a.probe} probe)' if a.probe else ''} that lasted "
                     f"{format_duration(end - a.opened_at)} (since {_clock(a.opened_at)})")
        if a.action_taken and a.resolution != "stopped":  # what lookout did, unless the operator took over
            lines.append(f"  lookout: {clean(a.action_taken)}")
    if a.impact:
        lines.append(f"  dependants: {clean(a.impact)}")
    return lines


def render(notices: list[PendingNotice], host: str, now: float, extra: Enrichment, *, lines: int,
           max_detailed: int, markdown: bool = False) -> Payload:
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
            block = firing_block(n, host, now, extra, lines, markdown)
            if since:
                block.insert(1, f"  recovered since: {since}")
            blocks.extend(block)
            blocks.append("")
        else:
            blocks.append(f"{LABELS.get(n.kind, '')}{n.alert.severity.upper()}  {display_name(n.alert.namespec)} "
                          f"{what_of(n)}" + (f"; recovered since: {since}" if since else ""))
    if len(firing) > max_detailed:
        blocks.append("")
    if firing and resolved:  # the subject has one verb: what else recovered is a line of its own
        blocks.extend([f"Also resolved: {names(resolved)}", ""])
    for n in resolved:
        blocks.extend(_resolved_block(n, host))
        blocks.append("")
    return Payload(_title(notices, firing, resolved, host), "\n".join(blocks).rstrip() + "\n", _kind(firing))


def _title(notices: list[PendingNotice], firing: list, resolved: list, host: str) -> str:
    if len(notices) == 1:
        n = notices[0]
        impact = f"; {n.alert.impact.split(':')[0]}" if n.alert.impact else ""  # "; 4 dependants failing"
        if n.kind == RESOLVED:
            return f"[RESOLVED] {display_name(n.alert.namespec)} {resolved_as(n.alert, n.process)} on {host}{impact}"
        prefix = {REMINDER: "Reminder: ", UPDATE: "Update: "}.get(n.kind, "")
        action = f": {n.alert.action_taken}" if n.kind == UPDATE and n.alert.action_taken else impact
        return f"[{n.alert.severity.upper()}] {prefix}{display_name(n.alert.namespec)} {what_of(n)} on {host}{action}"
    # One verb, the names a person recognises in the body's order (worst first), not "6 process(es)";
    # what recovered meanwhile is a line of the body.
    if not firing:
        return f"[RESOLVED] {names(resolved)} resolved on {host}"
    verb = "Update:" if all(n.kind == UPDATE for n in firing) else ""
    said = f"{verb} {names(firing)}" if verb else f"{names(firing)} failing"
    return f"[{firing[0].alert.severity.upper()}] {said} on {host}"


def what_of(n: PendingNotice) -> str:
    """What a notice says happened: an update of a "crashed" alert that is not about lookout's action
    is another crash ("crashed again, 3 times in 16s"); else the alert's own phrase."""
    if n.kind == UPDATE and n.alert.kind == CRASHED and not n.alert.action_taken and n.process is not None:
        return crashed_again(n.process)
    return what(n.alert)


def crashed_again(proc: ProcessRecord) -> str:
    """A crash below the crash-loop threshold, again: "crashed again, 3 times in 16s"."""
    times = proc.failures
    if len(times) < 2:
        return "crashed again"
    return f"crashed again, {len(times)} times in {format_duration(times[-1] - times[0])}"


def names(notices: list[PendingNotice]) -> str:
    """'feed', 'feed and quotes', 'a, b and c', 'trading:feed, trading:quotes and 3 more'."""
    shown = list(dict.fromkeys(display_name(n.alert.namespec) for n in notices))
    if len(shown) > TITLE_NAMES:
        return f"{shown[0]}, {shown[1]} and {len(shown) - 2} more"
    return shown[0] if len(shown) == 1 else f"{', '.join(shown[:-1])} and {shown[-1]}"


def _kind(firing: list[PendingNotice]) -> str:
    if any(n.alert.severity == "critical" for n in firing):
        return "failure"
    if firing:
        return "warning" if any(n.alert.severity == "warning" for n in firing) else "info"
    return "success"


def render_safely(notices: list[PendingNotice], host: str, now: float, extra: Enrichment, *, lines: int,
                  max_detailed: int, markdown: bool = False, errors=None) -> Payload:  # noqa: ANN001
    """render(), or when it fails (a bug, a damaged record), each alert on its own, and an alert
    that cannot be rendered at all as one plain line: a bad alert must not take others with it."""
    try:
        message = render(notices, host, now, extra, lines=lines, max_detailed=max_detailed, markdown=markdown)
        return Payload(scrub(message.title), scrub(message.body), message.notify_type)  # a secret in a log tail
    except Exception:
        if errors is not None:
            errors.report("render", "rendering a message failed; sending its alerts one by one")
    blocks: list[str] = []
    for n in notices:
        try:
            blocks.extend(render([n], host, now, extra, lines=lines, max_detailed=max_detailed).body.splitlines())
        except Exception:
            a = n.alert
            blocks.append(f"{a.severity.upper()}  {display_name(a.namespec)}: {n.kind} {a.kind} on {host} "
                          "(details could not be rendered; see the listener's log)")
        blocks.append("")
    critical = any(n.alert.severity == "critical" and n.kind != RESOLVED for n in notices)
    title = f"[{'CRITICAL' if critical else 'ALERT'}] {host}: {len(notices)} alert(s)"
    return Payload(title, scrub("\n".join(blocks).rstrip() + "\n"), "failure" if critical else "warning")
