"""Issue 4, acceptance 1-3: rules check and unit-test with promtool; a real Prometheus scrapes a
real lookout-exporter beside a real supervisord, its rules fire, and every dashboard query
returns data."""

from __future__ import annotations

import json
import re
import subprocess
import urllib.parse

import pytest

from .conftest import fast_alerts
from .harness import REPO, ExporterProcess, ensure_debian_tool, free_port, http_get, wait_for

RULES = REPO / "prometheus" / "rules.yml"
PROGRAMS = """\
[program:flaky]
command=sh -c 'sleep 1.2; echo "flaky: lost connection" >&2; exit 3'
startsecs=1
autorestart=true

[program:ghost]
command=/nonexistent/lookout-ghost
startretries=0

[program:healthy]
command=sleep 100000

[program:sick]
command=sleep 100000
"""
# Panels that are empty by design while everything is healthy (their description says so). The
# live scenario below has a crash-looping and a FATAL process, so even these must show data.
EMPTY_WHEN_HEALTHY = {("lookout-fleet", 10)}


def test_promtool_checks_and_unit_tests(promtool):
    for args in (["check", "rules", str(RULES)], ["test", "rules", str(REPO / "tests/prometheus/rules_test.yml")],
                 ["check", "config", str(REPO / "prometheus/prometheus.yml")]):
        result = subprocess.run([promtool, *args], capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stdout + result.stderr
    amtool = ensure_debian_tool("amtool", "prometheus-alertmanager")
    result = subprocess.run([amtool, "check-config", str(REPO / "prometheus/alertmanager.yml")],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_empty_by_design_panels_say_so():
    for uid, pid in EMPTY_WHEN_HEALTHY:
        board = next(json.loads(p.read_text()) for p in (REPO / "grafana" / "dashboards").glob("*.json")
                     if json.loads(p.read_text())["uid"] == uid)
        panel = next(p for p in board["panels"] if p["id"] == pid)
        assert "Empty when every process runs" in panel["description"]


def test_every_rule_has_a_unit_test():
    rules = re.findall(r"^\s+- alert: (\w+)", RULES.read_text(), re.M)
    tested = set(re.findall(r"alertname: (\w+)", (REPO / "tests/prometheus/rules_test.yml").read_text()))
    assert rules and set(rules) <= tested


@pytest.fixture
def prometheus(tmp_path):
    binary = ensure_debian_tool("prometheus", "prometheus")
    procs = []

    def start(exporter_port: int) -> str:
        port = free_port()
        config = tmp_path / "prometheus.yml"
        config.write_text(f"""\
global: {{scrape_interval: 1s, evaluation_interval: 1s}}
rule_files: ["{RULES}"]
scrape_configs:
  - job_name: supervisor-lookout
    static_configs: [{{targets: ["127.0.0.1:{exporter_port}"]}}]
""")
        procs.append(subprocess.Popen(
            [binary, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
             f"--web.listen-address=127.0.0.1:{port}"],
            stdout=subprocess.DEVNULL, stderr=open(tmp_path / "prometheus.log", "ab"),  # noqa: SIM115
        ))
        url = f"http://127.0.0.1:{port}"
        wait_for(lambda: http_get(f"{url}/-/ready") is not None, 30, "prometheus ready")
        return url

    yield start
    for p in procs:
        p.terminate()
        p.wait(10)


def query(prom: str, expr: str) -> list:
    body = http_get(f"{prom}/api/v1/query?" + urllib.parse.urlencode({"query": expr}))
    assert body is not None, expr
    data = json.loads(body)
    assert data["status"] == "success", (expr, data)
    return data["data"]["result"]


def substitute(expr: str) -> str:
    for var, value in (("$__rate_interval", "1m"), ("$__range", "10m"), ("$instance", ".*"), ("$group", ".*"),
                       ("$name", ".*")):
        expr = expr.replace(var, value)
    return expr


def test_live_rules_and_dashboard_queries(supervisor_factory, webhook, prometheus, promtool):
    """flaky crash-loops into the brake, ghost is FATAL (its group below quorum), sick fails its
    probe until lookout's restart budget is exhausted, healthy passes its probe."""
    settings = fast_alerts(webhook, crash_loop={"restarts": 3, "within": "1m", "action": "stop"},
                           groups=[{"match": "ghost", "min_running": 1, "for": "1s"}])
    settings["probes"] = [
        {"match": "healthy", "exec": ["true"], "period": "1s"},
        {"match": "sick", "tcp": f"127.0.0.1:{free_port()}", "period": "1s", "failure_threshold": 1,
         "action": "restart"},
    ]
    settings["remediation"] = {"max_restarts": 1, "backoff": "1s"}
    settings["dependencies"] = [{"program": "healthy", "needs": ["ghost"]}]  # (the dashboard's needs panels)
    sup = supervisor_factory(PROGRAMS, settings).start()
    exporter = ExporterProcess(sup).start()
    try:
        prom = prometheus(exporter.port)
        wait_for(lambda: query(prom, 'ALERTS{alertname="SupervisorProcessCrashLooping",name="flaky",'
                                     'alertstate="firing"}'), 60, "crash-loop rule firing")
        wait_for(lambda: query(prom, 'ALERTS{alertname="SupervisorProcessFatal",name="ghost",alertstate="firing"}'),
                 30, "FATAL rule firing")
        for rule, labels, states in (
            ("SupervisorProcessBraked", 'name="flaky"', "firing"),
            ("SupervisorRemediationExhausted", 'name="sick"', "firing"),
            ("SupervisorProcessUnhealthy", 'name="sick"', "pending|firing"),  # for: 1m
            ("SupervisorGroupBelowQuorum", 'group="ghost"', "pending|firing"),
        ):
            wait_for(lambda r=rule, lab=labels, st=states: query(
                prom, f'ALERTS{{alertname="{r}",{lab},alertstate=~"{st}"}}'), 60, f"{rule} {states}")
        assert not query(prom, 'ALERTS{name="healthy"}')

        scrape = exporter.get("/metrics")[1]
        assert "lookout_probe_success" in scrape and "lookout_remediations_total" in scrape
        check = subprocess.run([promtool, "check", "metrics"], input=scrape, capture_output=True, text=True,
                               timeout=60)
        assert check.returncode == 0, check.stdout + check.stderr
        exposed = set(re.findall(r"^(\w+)", scrape, re.M))
        empty = []
        for path in sorted((REPO / "grafana" / "dashboards").glob("*.json")):
            board = json.loads(path.read_text())
            exprs = [(p["id"], t["expr"]) for p in board["panels"] for t in p["targets"]]
            exprs += [(0, v["definition"]) for v in board["templating"]["list"] if v["type"] == "query"]
            for pid, expr in exprs:
                for metric in re.findall(r"\b((?:supervisord?|lookout)_\w+)", expr):
                    assert metric in exposed, f"{path.name} panel {pid}: {metric} is not exported"
                if pid and not _has_data(prom, substitute(expr)):
                    empty.append(f"{board['uid']} panel {pid}: {expr}")
        assert not empty, "\n".join(empty)
    finally:
        exporter.stop()


def _has_data(prom: str, expr: str) -> bool:
    try:
        wait_for(lambda: query(prom, expr), 20, expr, interval=0.5)
        return True
    except AssertionError:
        return False
