"""Generates grafana/dashboards/*.json (the files users import or provision).

    python grafana/build_dashboards.py        # rewrite the JSON
    python grafana/build_dashboards.py --check  # fail if the JSON is not what this script makes

Every panel uses the `datasource` variable (no __inputs / ${DS_...}: they break under file
provisioning), has a unit and a title; uids are fixed so links and provisioning stay stable.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

OUT = Path(__file__).resolve().parent / "dashboards"
SCHEMA_VERSION = 41
DS = {"type": "prometheus", "uid": "${datasource}"}
SEL = 'instance=~"$instance", group=~"$group", name=~"$name"'

STATE_MAPPINGS = [
    {"type": "value", "options": {
        "0": {"text": "STOPPED", "color": "text", "index": 0},
        "10": {"text": "STARTING", "color": "blue", "index": 1},
        "20": {"text": "RUNNING", "color": "green", "index": 2},
        "30": {"text": "BACKOFF", "color": "orange", "index": 3},
        "40": {"text": "STOPPING", "color": "purple", "index": 4},
        "100": {"text": "EXITED", "color": "yellow", "index": 5},
        "200": {"text": "FATAL", "color": "red", "index": 6},
        "1000": {"text": "UNKNOWN", "color": "dark-red", "index": 7},
    }},
]


def target(expr: str, legend: str = "", ref: str = "A", instant: bool = False, fmt: str = "time_series") -> dict:
    t = {"datasource": DS, "refId": ref, "expr": expr, "legendFormat": legend, "format": fmt}
    if instant:
        t["instant"], t["range"] = True, False
    return t


def panel(pid: int, title: str, kind: str, unit: str, targets: list[dict], x: int, y: int, w: int, h: int,
          description: str = "", **extra: object) -> dict:
    p = {
        "id": pid, "title": title, "type": kind, "description": description, "datasource": DS,
        "gridPos": {"x": x, "y": y, "w": w, "h": h}, "targets": targets,
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []}, "options": {},
    }
    for key, value in extra.items():
        if key == "mappings":
            p["fieldConfig"]["defaults"]["mappings"] = value
        elif key == "thresholds":
            p["fieldConfig"]["defaults"]["thresholds"] = {"mode": "absolute", "steps": value}
        else:
            p[key] = value
    return p


def variables(single_process: bool) -> dict:
    def query(name: str, expr: str, multi: bool) -> dict:
        return {
            "name": name, "label": name, "type": "query", "datasource": DS, "definition": expr,
            "query": {"query": expr, "refId": f"{name}-var"}, "refresh": 2, "sort": 1,
            "multi": multi, "includeAll": multi, "current": {},
            **({"allValue": ".*"} if multi else {}),
        }

    return {"list": [
        {"name": "datasource", "label": "Data source", "type": "datasource", "query": "prometheus",
         "current": {}, "hide": 0, "refresh": 1},
        query("instance", "label_values(supervisord_up, instance)", True),
        query("group", 'label_values(supervisor_process_up{instance=~"$instance"}, group)', not single_process),
        query("name", 'label_values(supervisor_process_up{instance=~"$instance", group=~"$group"}, name)',
              not single_process),
    ]}


def dashboard(uid: str, title: str, description: str, panels: list[dict], single_process: bool) -> dict:
    return {
        "uid": uid, "title": title, "description": description, "tags": ["supervisord", "lookout"],
        "schemaVersion": SCHEMA_VERSION, "version": 1, "editable": True, "timezone": "browser",
        "time": {"from": "now-6h", "to": "now"}, "refresh": "30s", "graphTooltip": 1,
        "templating": variables(single_process), "annotations": {"list": []}, "panels": panels,
        "links": [{"title": "supervisor-lookout", "type": "dashboards", "tags": ["lookout"], "asDropdown": True}],
    }


def fleet() -> dict:
    panels = [
        panel(1, "supervisord up", "stat", "short",
              [target('sum(supervisord_up{instance=~"$instance"})', "up")], 0, 0, 4, 4,
              "Hosts whose supervisord answers (or whose listener is healthy)."),
        panel(2, "Processes RUNNING", "stat", "short",
              [target(f"sum(supervisor_process_up{{{SEL}}})", "running")], 4, 0, 4, 4),
        panel(3, "Processes not RUNNING", "stat", "short",
              [target(f"count(supervisor_process_up{{{SEL}}} == 0) or vector(0)", "not running")], 8, 0, 4, 4,
              thresholds=[{"color": "green", "value": None}, {"color": "red", "value": 1}]),
        panel(4, "Crash-looping now", "stat", "short",
              [target(f"sum(supervisor_process_crash_looping{{{SEL}}})", "crash-looping")], 12, 0, 4, 4,
              thresholds=[{"color": "green", "value": None}, {"color": "red", "value": 1}]),
        panel(5, "Listener heartbeat age", "stat", "s",
              [target('max(time() - lookout_listener_last_event_timestamp_seconds{instance=~"$instance"})',
                      "age")], 16, 0, 4, 4,
              "Seconds since the listener took an event; TICK_60 keeps it under a minute.",
              thresholds=[{"color": "green", "value": None}, {"color": "red", "value": 180}]),
        panel(6, "Outbox backlog", "stat", "short",
              [target('sum(lookout_outbox_pending{instance=~"$instance"})', "pending")], 20, 0, 4, 4,
              "Messages waiting for delivery (retried for notify.retry_for)."),
        panel(7, "Processes by state, per host and group", "timeseries", "short",
              [target(f"sum by (instance, group, state) (supervisor_process_state{{{SEL}}} == 1)",
                      "{{instance}} {{group}} {{state}}")], 0, 4, 12, 8),
        panel(8, "Top crash-looping processes (restarts over the range)", "bargauge", "short",
              [target(f"topk(10, increase(supervisor_process_restarts_total{{{SEL}}}[$__range]))",
                      "{{instance}} {{group}}:{{name}}", instant=True)], 12, 4, 12, 8,
              options={"orientation": "horizontal", "displayMode": "gradient"}),
        panel(9, "State timeline", "state-timeline", "none",
              [target(f"supervisor_process_state_code{{{SEL}}}", "{{group}}:{{name}}")], 0, 12, 24, 10,
              "Every process's supervisord state over time.", mappings=STATE_MAPPINGS),
        panel(10, "Processes not RUNNING (since when, exit status)", "table", "none", [
            target(f"supervisor_process_state_code{{{SEL}}} != 20", ref="A", instant=True, fmt="table"),
            target(f"(supervisor_process_state_since_timestamp_seconds{{{SEL}}} * 1000) "
                   f"and on (instance, group, name) (supervisor_process_up{{{SEL}}} == 0)",
                   ref="B", instant=True, fmt="table"),
            target(f"supervisor_process_exit_status{{{SEL}}} "
                   f"and on (instance, group, name) (supervisor_process_up{{{SEL}}} == 0)",
                   ref="C", instant=True, fmt="table"),
        ], 0, 22, 24, 8, "Empty when every process runs.",
              transformations=[
                  {"id": "merge", "options": {}},
                  {"id": "organize", "options": {
                      "excludeByName": {"Time": True, "job": True},
                      "renameByName": {"Value #A": "state", "Value #B": "since", "Value #C": "exit status"}}},
              ],
              mappings=STATE_MAPPINGS),
        panel(11, "Notifications by result", "timeseries", "short",
              [target('sum by (instance, target, result) (increase(lookout_notifications_total{instance=~"$instance"}'
                      '[$__rate_interval]))', "{{instance}} {{target}} {{result}}")], 0, 30, 12, 7,
              "Delivery attempts of the listener; failures are retried from the outbox."),
        panel(12, "Where the exporter reads state", "timeseries", "short",
              [target('lookout_exporter_source{instance=~"$instance"} == 1', "{{instance}} {{source}}")],
              12, 30, 12, 7, "store: the listener is healthy; supervisord: the exporter polls (listener down?)."),
        panel(13, "Unhealthy processes (health probes)", "stat", "short",
              [target(f"count(supervisor_process_healthy{{{SEL}}} == 0) or vector(0)", "unhealthy")], 0, 37, 6, 5,
              "Processes a lookout health probe judges unhealthy, RUNNING or not.",
              thresholds=[{"color": "green", "value": None}, {"color": "red", "value": 1}]),
        panel(14, "Held by the crash-loop brake", "stat", "short",
              [target(f"sum(supervisor_process_braked{{{SEL}}}) or vector(0)", "braked")], 6, 37, 6, 5,
              "Processes lookout's crash-loop brake stopped (or holds between restarts).",
              thresholds=[{"color": "green", "value": None}, {"color": "red", "value": 1}]),
        panel(15, "Group quorum: RUNNING vs minimum", "timeseries", "short", [
            target('supervisor_group_running{instance=~"$instance", group=~"$group"} and on (instance, group) '
                   "supervisor_group_min_running", "{{instance}} {{group}} running", "A"),
            target('supervisor_group_min_running{instance=~"$instance", group=~"$group"}',
                   "{{instance}} {{group}} minimum", "B"),
        ], 12, 37, 12, 10, "Groups with min_running in [[alerts.groups]]: alert when running drops below it."),
        panel(16, "lookout's actions by result", "timeseries", "short",
              [target(f"sum by (instance, action, result) (increase(lookout_remediations_total{{{SEL}}}"
                      "[$__rate_interval]))", "{{instance}} {{action}} {{result}}")], 0, 42, 12, 5,
              "Restarts and stops lookout made (success, failure), decided in dry_run, or refused (exhausted)."),
    ]
    panels[9]["fieldConfig"]["overrides"] = [
        {"matcher": {"id": "byName", "options": "since"}, "properties": [{"id": "unit", "value": "dateTimeAsIso"}]},
        {"matcher": {"id": "byName", "options": "exit status"}, "properties": [{"id": "unit", "value": "none"},
                                                                                {"id": "mappings", "value": []}]},
    ]
    return dashboard("lookout-fleet", "supervisord fleet overview",
                     "Every supervisord host and process watched by supervisor-lookout.", panels, False)


def process() -> dict:
    panels = [
        panel(1, "State", "stat", "none", [target(f"supervisor_process_state_code{{{SEL}}}", "{{name}}")],
              0, 0, 4, 4, mappings=STATE_MAPPINGS),
        panel(2, "Uptime", "stat", "s", [target(f"supervisor_process_uptime_seconds{{{SEL}}}", "{{name}}")],
              4, 0, 4, 4),
        panel(3, "Last exit status", "stat", "none",
              [target(f"supervisor_process_exit_status{{{SEL}}}", "{{name}}")], 8, 0, 4, 4,
              "-1 means it was killed by a signal."),
        panel(4, "Restarts (total)", "stat", "short",
              [target(f"supervisor_process_restarts_total{{{SEL}}}", "{{name}}")], 12, 0, 4, 4),
        panel(5, "Crash-looping", "stat", "none",
              [target(f"supervisor_process_crash_looping{{{SEL}}}", "{{name}}")], 16, 0, 4, 4,
              mappings=[{"type": "value", "options": {"0": {"text": "no", "color": "green"},
                                                        "1": {"text": "YES", "color": "red"}}}]),
        panel(6, "Last start", "stat", "dateTimeAsIso",
              [target(f"supervisor_process_start_time_seconds{{{SEL}}} * 1000", "{{name}}")], 20, 0, 4, 4),
        panel(7, "State timeline", "state-timeline", "none",
              [target(f"supervisor_process_state_code{{{SEL}}}", "{{group}}:{{name}}")], 0, 4, 24, 5,
              mappings=STATE_MAPPINGS),
        panel(8, "Restarts and unexpected exits", "timeseries", "short", [
            target(f"increase(supervisor_process_restarts_total{{{SEL}}}[$__rate_interval])", "restarts", "A"),
            target(f"increase(supervisor_process_unexpected_exits_total{{{SEL}}}[$__rate_interval])",
                   "unexpected exits", "B"),
        ], 0, 9, 12, 8),
        panel(9, "Uptime", "timeseries", "s",
              [target(f"supervisor_process_uptime_seconds{{{SEL}}}", "{{group}}:{{name}}")], 12, 9, 12, 8),
        panel(10, "CPU (process and children)", "timeseries", "percentunit",
              [target(f"rate(supervisor_process_cpu_seconds_total{{{SEL}}}[$__rate_interval])",
                      "{{group}}:{{name}}")], 0, 17, 8, 8, "1 = one full core."),
        panel(11, "Memory (RSS, process and children)", "timeseries", "bytes",
              [target(f"supervisor_process_resident_memory_bytes{{{SEL}}}", "{{group}}:{{name}}")], 8, 17, 8, 8),
        panel(12, "Open file descriptors", "timeseries", "short",
              [target(f"supervisor_process_open_fds{{{SEL}}}", "{{group}}:{{name}}")], 16, 17, 8, 8),
        panel(13, "Healthy", "stat", "none", [target(f"supervisor_process_healthy{{{SEL}}}", "{{name}}")],
              0, 25, 4, 4, "From lookout's health probes; absent for a process without probes.",
              mappings=[{"type": "value", "options": {"1": {"text": "yes", "color": "green"},
                                                        "0": {"text": "UNHEALTHY", "color": "red"}}}]),
        panel(14, "Braked", "stat", "none", [target(f"supervisor_process_braked{{{SEL}}}", "{{name}}")],
              0, 29, 4, 4, "1 while lookout's crash-loop brake holds it stopped.",
              mappings=[{"type": "value", "options": {"0": {"text": "no", "color": "green"},
                                                        "1": {"text": "BRAKED", "color": "red"}}}]),
        panel(15, "Probe results (1 = passed)", "state-timeline", "none",
              [target(f"lookout_probe_success{{{SEL}}}", "{{probe}}")], 4, 25, 10, 8,
              mappings=[{"type": "value", "options": {"1": {"text": "ok", "color": "green"},
                                                        "0": {"text": "FAIL", "color": "red"}}}]),
        panel(16, "Probe duration", "timeseries", "s",
              [target(f"lookout_probe_duration_seconds{{{SEL}}}", "{{probe}}")], 14, 25, 10, 8),
        panel(17, "Probe failures", "timeseries", "short",
              [target(f"increase(lookout_probe_failures_total{{{SEL}}}[$__rate_interval])", "{{probe}}")],
              4, 33, 10, 8),
        panel(18, "lookout's actions", "timeseries", "short",
              [target(f"increase(lookout_remediations_total{{{SEL}}}[$__rate_interval])", "{{action}} {{result}}")],
              14, 33, 10, 8, "Restarts and stops by lookout, dry-run decisions and refusals (exhausted)."),
        panel(19, "Needs ready ([[dependencies]])", "state-timeline", "none",
              [target(f"lookout_dependency_ready{{{SEL}}}", "{{need}}")], 0, 41, 18, 6,
              "Why it is down or waiting: each need in lookout.toml's [[dependencies]], ready or not "
              "(running, healthy or exited, as its `ready` asks). Absent for a program with no needs.",
              mappings=[{"type": "value", "options": {"1": {"text": "ready", "color": "green"},
                                                        "0": {"text": "NOT READY", "color": "red"}}}]),
        panel(20, "Waiting for its needs", "stat", "s",
              [target(f"lookout_dependency_waiting_seconds{{{SEL}}}", "{{name}}")], 18, 41, 6, 6,
              "How long lookout has waited for its needs to start it (start = true, or after a need came back)."),
    ]
    return dashboard("lookout-process", "supervisord process detail",
                     "One process: state, uptime, restarts, exits and resources.", panels, True)


def render() -> dict[str, str]:
    return {f"{name}.json": json.dumps(build(), indent=2) + "\n"
            for name, build in (("fleet-overview", fleet), ("process-detail", process))}


def main() -> int:
    OUT.mkdir(exist_ok=True)
    stale = []
    for name, text in render().items():
        path = OUT / name
        if "--check" in sys.argv:
            if not path.exists() or path.read_text() != text:
                stale.append(name)
        else:
            path.write_text(text)
    if stale:
        print(f"out of date: {', '.join(stale)}; run python grafana/build_dashboards.py", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
