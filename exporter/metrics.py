"""The collector: fresh metric families for every scrape, and their text exposition.

Like prometheus_client's custom collectors, nothing is kept between scrapes but a cache of
escaped label strings, so concurrent scrapes cannot race. The encoder is our own because at
1000 programs (about 18k samples) prometheus_client's generic one takes ~190 ms a scrape.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field

from ..listener.protocol.events import PROCESS_STATES
from ..listener.rules.policy import PolicyBook
from ..procfs import Usage
from .source import SUPERVISORD_STATES, ProcessView, ScrapeData

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
STATE_CODES = {"STOPPED": 0, "STARTING": 10, "RUNNING": 20, "BACKOFF": 30, "STOPPING": 40, "EXITED": 100,
               "FATAL": 200, "UNKNOWN": 1000}


@dataclass
class Family:
    name: str
    kind: str  # gauge or counter
    help: str
    samples: list[tuple[str, float]] = field(default_factory=list)  # (label text, value)

    def add(self, labels: str, value: float) -> None:
        self.samples.append((labels, value))


def escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


class LabelCache:
    """'group="g",name="n"' per process, escaped once; shared by scrapes, bounded."""

    def __init__(self, limit: int = 20000) -> None:
        self.limit = limit
        self._cache: dict[tuple[str, str], str] = {}

    def __call__(self, p: ProcessView) -> str:
        key = (p.group, p.name)
        text = self._cache.get(key)
        if text is None:
            if len(self._cache) >= self.limit:
                self._cache.clear()
            text = self._cache[key] = f'group="{escape(p.group)}",name="{escape(p.name)}"'
        return text


def build_families(
    data: ScrapeData, usage: dict[int, Usage] | None, labels: LabelCache, scrape_seconds: float = 0.0
) -> list[Family]:
    f = {
        "up": Family("supervisord_up", "gauge", "1 when supervisord answers (or its listener is healthy)"),
        "info": Family("supervisord_info", "gauge", "supervisord version and identification, always 1"),
        "dstate": Family("supervisord_state", "gauge", "1 for supervisord's current state"),
        "state": Family("supervisor_process_state", "gauge",
                        "1 for the process's current state (UNKNOWN: supervisord does not answer and its process is "
                        "gone)"),
        "code": Family("supervisor_process_state_code", "gauge",
                       "supervisord's numeric process state: STOPPED 0, STARTING 10, RUNNING 20, BACKOFF 30, "
                       "STOPPING 40, EXITED 100, FATAL 200, UNKNOWN 1000"),
        "since": Family("supervisor_process_state_since_timestamp_seconds", "gauge",
                        "unix time the process entered its current state, 0 if unknown"),
        "pup": Family("supervisor_process_up", "gauge",
                      "1 when the process is RUNNING (without supervisord: while its pid and start time still run)"),
        "orphans": Family("supervisor_process_orphans", "gauge",
                          "processes of it left running by a supervisord that died (pid and start time checked in "
                          "/proc); absent when none"),
        "start": Family("supervisor_process_start_time_seconds", "gauge",
                        "unix time of the last start, 0 if never started"),
        "uptime": Family("supervisor_process_uptime_seconds", "gauge", "seconds since start while RUNNING, else 0"),
        "exit": Family("supervisor_process_exit_status", "gauge", "last exit status, -1 when killed by a signal"),
        "restarts": Family("supervisor_process_restarts_total", "counter",
                           "automatic restarts (STARTING after EXITED or BACKOFF) since the store was created"),
        "unexpected": Family("supervisor_process_unexpected_exits_total", "counter",
                             "exits not in exitcodes, plus exits before startsecs (BACKOFF)"),
        "looping": Family("supervisor_process_crash_looping", "gauge", "1 while lookout deems it crash-looping"),
        "rss": Family("supervisor_process_resident_memory_bytes", "gauge",
                      "resident memory of the process and its children"),
        "cpu": Family("supervisor_process_cpu_seconds_total", "counter",
                      "CPU time of the process and its children (reaped ones included)"),
        "fds": Family("supervisor_process_open_fds", "gauge", "open file descriptors of the process and its children"),
        "heartbeat": Family("lookout_listener_last_event_timestamp_seconds", "gauge",
                            "when the listener last took an event (TICK_60 keeps it fresh)"),
        "notified": Family("lookout_notifications_total", "counter",
                           "delivery attempts by target URL scheme and result"),
        "outbox": Family("lookout_outbox_pending", "gauge", "messages waiting for delivery"),
        "target": Family("lookout_notify_target_failing", "gauge",
                         "1 while the target's messages fail or its sends get no answer within the deadline "
                         "(it hangs), else 0; target is scheme://host"),
        "source": Family("lookout_exporter_source", "gauge",
                         "1 for where this scrape's process states came from: store or supervisord"),
        "duration": Family("lookout_exporter_collect_duration_seconds", "gauge", "time spent collecting this scrape"),
    }
    f["up"].add("", 1 if data.up else 0)
    if data.up:
        f["info"].add(f'version="{escape(data.version)}",identification="{escape(data.identification)}"', 1)
    for state in SUPERVISORD_STATES:
        f["dstate"].add(f'state="{state}"', 1 if data.state == state else 0)
    for p in data.processes:
        lab = labels(p)
        for state in PROCESS_STATES:
            f["state"].add(f'{lab},state="{state}"', 1 if p.state == state else 0)
        f["code"].add(lab, STATE_CODES.get(p.state, 1000))
        if data.orphans.get((p.group, p.name)):
            f["orphans"].add(lab, data.orphans[(p.group, p.name)])
        f["since"].add(lab, p.state_since)
        f["pup"].add(lab, 1 if p.state == "RUNNING" else 0)
        f["start"].add(lab, p.start_time)
        f["uptime"].add(lab, p.uptime)
        f["exit"].add(lab, p.exit_status if p.exit_status is not None else 0)
        if p.restarts is not None:
            f["restarts"].add(lab, p.restarts)
            f["unexpected"].add(lab, p.unexpected_exits or 0)
            f["looping"].add(lab, 1 if p.crash_looping else 0)
        u = usage.get(p.pid) if usage and p.pid else None
        if u is not None:
            f["rss"].add(lab, u.rss_bytes)
            f["cpu"].add(lab, u.cpu_seconds)
            f["fds"].add(lab, u.open_fds)
    if data.last_event_at is not None:
        f["heartbeat"].add("", data.last_event_at)
    for (scheme, result), count in sorted(data.notifications.items()):
        f["notified"].add(f'target="{escape(scheme)}",result="{escape(result)}"', count)
    if data.outbox_pending is not None:
        f["outbox"].add("", data.outbox_pending)
    for label, failing in sorted(data.targets_failing.items()):
        f["target"].add(f'target="{escape(label)}"', 1 if failing else 0)
    for source in ("store", "supervisord"):
        f["source"].add(f'source="{source}"', 1 if data.source == source else 0)
    f["duration"].add("", scrape_seconds)
    return [fam for fam in f.values() if fam.samples]


ZERO_REMEDIATIONS = [("restart", r) for r in ("success", "failure", "dry_run", "exhausted")] + \
    [("stop", r) for r in ("success", "failure", "dry_run")]


def health_families(data: ScrapeData, labels: LabelCache, policies: PolicyBook) -> list[Family]:
    """Probes, remediation, the brake and group quorum (issue 8's metrics)."""
    f = {
        "healthy": Family("supervisor_process_healthy", "gauge",
                          "0 while a health probe judges the process unhealthy, else 1; absent without probes"),
        "success": Family("lookout_probe_success", "gauge", "1 when the probe's last run passed"),
        "duration": Family("lookout_probe_duration_seconds", "gauge", "how long the probe's last run took"),
        "failures": Family("lookout_probe_failures_total", "counter", "failed runs of the probe"),
        "blind": Family("lookout_probe_cannot_judge", "gauge",
                        "1 while the probe's last run could not read its evidence (a log file deleted, moved or "
                        "replaced under supervisord) and judged nothing"),
        "remediations": Family("lookout_remediations_total", "counter",
                               "what lookout did (restart, stop, start) or decided (result dry_run, exhausted)"),
        "braked": Family("supervisor_process_braked", "gauge", "1 while lookout's crash-loop brake holds it stopped"),
        "exhausted": Family("supervisor_process_remediation_exhausted", "gauge",
                            "1 once lookout used up its restart budget and stopped acting, until an operator acts"),
        "must_run": Family("supervisor_process_must_run", "gauge",
                           "1 when [[alerts.programs]] says it must always run (must_run = true), else 0"),
        "operator": Family("supervisor_process_stopped_by_operator", "gauge",
                           "1 while it is STOPPED and lookout saw an operator stop it, else 0"),
        "runs": Family("lookout_probe_runs_total", "counter", "probe runs by the listener since it started"),
        "skipped": Family("lookout_probe_skipped_runs_total", "counter",
                          "runs not started because the previous one was still in flight or the listener fell behind"),
        "late50": Family("lookout_probe_schedule_lateness_p50_seconds", "gauge",
                         "how late recent probe runs started against their schedule: the median"),
        "late95": Family("lookout_probe_schedule_lateness_p95_seconds", "gauge",
                         "how late recent probe runs started against their schedule: the 95th percentile"),
        "deadman": Family("lookout_deadman_pings_total", "counter",
                          "calls of the dead man's switch ([deadman]), across listener restarts: ok (healthy form "
                          "reached), fail_sent (fail form reached: lookout degraded), error (not reached)"),
        "grun": Family("supervisor_group_running", "gauge", "processes of the group that are RUNNING"),
        "gmin": Family("supervisor_group_min_running", "gauge", "min_running of the group ([[alerts.groups]])"),
    }
    unhealthy = {(v.group, v.name) for v in data.probes if v.healthy is False}
    running: dict[str, int] = {}
    for p in data.processes:
        running[p.group] = running.get(p.group, 0) + (p.state == "RUNNING")
        if policies.probes(f"{p.group}:{p.name}"):
            f["healthy"].add(labels(p), 0 if (p.group, p.name) in unhealthy else 1)
        f["must_run"].add(labels(p), 1 if policies.lookup(f"{p.group}:{p.name}").must_run else 0)
        f["operator"].add(labels(p), 1 if p.state == "STOPPED" and p.stopped_by == "operator" else 0)
        if p.restarts is not None:  # known to the listener's store
            f["braked"].add(labels(p), 1 if p.braked else 0)
            f["exhausted"].add(labels(p), 1 if p.remediation_exhausted else 0)
            ns = f"{p.group}:{p.name}"
            if any(spec.action != "alert" for spec in policies.probes(ns)):  # counters exist from 0 on
                for action, result in ZERO_REMEDIATIONS:
                    data.remediations.setdefault((p.group, p.name, action, result), 0)
    for v in data.probes:
        lab = f'group="{escape(v.group)}",name="{escape(v.name)}",probe="{escape(v.probe)}"'
        if v.last_ok is not None:
            f["success"].add(lab, 1 if v.last_ok else 0)
            f["duration"].add(lab, v.last_duration)
        f["failures"].add(lab, v.failures_total)
        f["blind"].add(lab, 0 if v.judged else 1)
    for (group, name, action, result), count in sorted(data.remediations.items()):
        f["remediations"].add(f'group="{escape(group)}",name="{escape(name)}",action="{escape(action)}",'
                              f'result="{escape(result)}"', count)
    stats = data.probe_stats
    for result in ("ok", "fail_sent", "error"):
        if f"deadman_{result}" in stats:
            f["deadman"].add(f'result="{result}"', stats[f"deadman_{result}"])
    if "probe_runs" in stats:
        f["runs"].add("", stats["probe_runs"])
        f["skipped"].add("", stats.get("probe_skipped", 0))
        for family, key in (("late50", "probe_lateness_p50"), ("late95", "probe_lateness_p95")):
            if key in stats:
                f[family].add("", stats[key])
    for group, count in sorted(running.items()):
        f["grun"].add(f'group="{escape(group)}"', count)
        rule = policies.group_rule(group)
        if rule is not None:
            f["gmin"].add(f'group="{escape(group)}"', rule.min_running)
    return [fam for fam in f.values() if fam.samples]


def _value(v: float) -> str:
    if isinstance(v, int) or (isinstance(v, float) and v.is_integer() and abs(v) < 1e15):
        return str(int(v))
    if math.isnan(v):
        return "NaN"
    return repr(float(v))


def encode(families: Iterable[Family]) -> str:
    """Prometheus text format 0.0.4."""
    out: list[str] = []
    for fam in families:
        out.append(f"# HELP {fam.name} {fam.help}\n# TYPE {fam.name} {fam.kind}\n")
        name = fam.name
        out.extend(
            f"{name}{{{labels}}} {_value(v)}\n" if labels else f"{name} {_value(v)}\n" for labels, v in fam.samples
        )
    return "".join(out)
