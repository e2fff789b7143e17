"""Issue 9, acceptance 5: a fleet, tested on one machine. N supervisord hosts, each with its own
listener (alerts.host set) and exporter; one Prometheus scraping them through file-based service
discovery with prometheus/rules.yml; one Alertmanager with prometheus/alertmanager.yml (only the
receivers' URLs pointed at this test), every listener posting to it. The market data gateway
all feeds depend on dies: at most 2 notifications reach the receiver, and the fleet dashboard's
queries show every host."""

from __future__ import annotations

import json
import os
import subprocess
import time
import urllib.parse
from concurrent.futures import ThreadPoolExecutor

import pytest
import yaml

from .harness import REPO, ExporterProcess, ensure_debian_tool, free_port, http_get, stays, wait_for

N = int(os.environ.get("LOOKOUT_FLEET_HOSTS", "20"))
FEED = """\
[program:feed]
command=sh -c 'if [ ! -f {shared}/gateway.up ]; then echo "feed: market data gateway unreachable" >&2; exit 1; fi;
    while [ -f {shared}/gateway.up ]; do sleep 0.2; done; echo "feed: lost the market data gateway" >&2; exit 2'
startsecs=1
startretries=2
autorestart=true

[program:risk]
command=sleep 100000
"""


def query(prom: str, expr: str) -> list:
    body = http_get(f"{prom}/api/v1/query?" + urllib.parse.urlencode({"query": expr}))
    return json.loads(body)["data"]["result"] if body else []


def _start(cmd: list[str], log, url: str) -> subprocess.Popen:  # noqa: ANN001
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=open(log, "ab"))  # noqa: SIM115
    wait_for(lambda: http_get(url) is not None, 60, f"{cmd[0]} ready", interval=0.3)
    return proc


@pytest.mark.long
def test_a_shared_outage_is_one_page_and_every_host_is_on_the_dashboard(supervisor_factory, webhook, tmp_path,
                                                                          record_property):
    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / "gateway.up").touch()
    alertmanager, prometheus = (ensure_debian_tool("prometheus-alertmanager", "prometheus-alertmanager"),
                                ensure_debian_tool("prometheus", "prometheus"))
    am_port, prom_port = free_port(), free_port()
    am_url, prom_url = f"http://127.0.0.1:{am_port}", f"http://127.0.0.1:{prom_port}"

    # Alertmanager with the shipped configuration; only the receivers point at this test.
    am_config = yaml.safe_load((REPO / "prometheus" / "alertmanager.yml").read_text())
    for receiver in am_config["receivers"]:
        for hook in receiver["webhook_configs"]:
            hook["url"] = hook["url"].replace("http://127.0.0.1:5001", f"http://127.0.0.1:{webhook.port}")
    (tmp_path / "alertmanager.yml").write_text(yaml.safe_dump(am_config))
    procs = [_start([alertmanager, f"--config.file={tmp_path / 'alertmanager.yml'}",
                     f"--storage.path={tmp_path / 'am-data'}", f"--web.listen-address=127.0.0.1:{am_port}",
                     "--cluster.listen-address="], tmp_path / "alertmanager.log", f"{am_url}/-/ready")]

    def host(i: int):  # noqa: ANN202
        settings = {"alerts": {"host": f"host-{i:02d}", "group_wait": "1s", "exit_grace": "2s"},
                    "notify": {"urls": []},  # fleet mode: Alertmanager is the one way out
                    "alertmanager": {"urls": [am_url], "resend_interval": "10s"}}
        sup = supervisor_factory(FEED.format(shared=shared), settings).start()
        return sup, ExporterProcess(sup).start()

    exporters = []
    try:
        with ThreadPoolExecutor(4) as pool:
            hosts = list(pool.map(host, range(N)))
        exporters = [e for _, e in hosts]
        targets = [{"targets": [f"127.0.0.1:{e.port}"], "labels": {"instance": f"host-{i:02d}"}}
                   for i, e in enumerate(exporters)]
        (tmp_path / "targets.json").write_text(json.dumps(targets))
        (tmp_path / "prometheus.yml").write_text(f"""\
global: {{scrape_interval: 1s, evaluation_interval: 1s}}
rule_files: ["{REPO / 'prometheus' / 'rules.yml'}"]
alerting:
  alertmanagers: [{{static_configs: [{{targets: ["127.0.0.1:{am_port}"]}}]}}]
scrape_configs:
  - job_name: supervisor-lookout
    file_sd_configs: [{{files: ["{tmp_path / 'targets.json'}"], refresh_interval: 5s}}]
""")
        procs.append(_start([prometheus, f"--config.file={tmp_path / 'prometheus.yml'}",
                             f"--storage.tsdb.path={tmp_path / 'tsdb'}", f"--web.listen-address=127.0.0.1:{prom_port}"],
                            tmp_path / "prometheus.log", f"{prom_url}/-/ready"))
        wait_for(lambda: len(query(prom_url, 'supervisor_process_up{name="feed"} == 1')) == N, 60, "every feed up")

        failed_at = time.time()
        (shared / "gateway.up").unlink()  # the shared dependency dies
        # Every listener sees its feed crash, then give up (FATAL); Prometheus' rules agree.
        wait_for(lambda: len(query(prom_url, 'ALERTS{alertname="SupervisorProcessFatal",alertstate="firing"}')) == N,
                 90, "the FATAL rule firing for every host")
        wait_for(lambda: _am_alerts(am_url, "SupervisorProcessFatal") >= 2 * N, 60,
                 f"Fatal from every listener and every host's rule in Alertmanager: {_am_summary(am_url)}")
        notified = wait_for(lambda: _notifications(webhook), 90, "a notification")
        first_at = notified[0].at
        # Alertmanager's group_wait is 30 s: a page from another group would come within it.
        stays(lambda: len(_notifications(webhook)) <= 2, 35, "at most two notifications")
        notified = _notifications(webhook)
        hosts_in_page = {a["labels"]["instance"] for m in notified for a in m.raw["alerts"]}
        record_property("report", f"fleet: N={N} hosts, {len(notified)} notification(s) at the receiver, the first "
                        f"{first_at - failed_at:.1f}s after the failure, listing {len(hosts_in_page)} host(s)")
        assert 1 <= len(notified) <= 2, [m.raw.get("groupLabels") for m in notified]
        assert hosts_in_page == {f"host-{i:02d}" for i in range(N)}

        _every_host_on_the_fleet_dashboard(prom_url)
    finally:
        for e in exporters:
            e.stop()
        for p in procs:
            p.terminate()
            p.wait(10)


def _am_alerts(am_url: str, alertname: str) -> int:
    body = http_get(f"{am_url}/api/v2/alerts?active=true&inhibited=true&silenced=true")
    return sum(1 for a in json.loads(body or b"[]") if a["labels"].get("alertname") == alertname)


def _am_summary(am_url: str) -> list:
    body = http_get(f"{am_url}/api/v2/alerts?active=true&inhibited=true&silenced=true")
    return sorted((a["labels"].get("alertname"), a["labels"].get("instance"), a["labels"].get("source", "prom"),
                   a["status"]["state"]) for a in json.loads(body or b"[]"))


def _notifications(webhook) -> list:  # noqa: ANN001
    with webhook.lock:
        return [m for m in webhook.messages if m.path in ("/alerts", "/pager") and isinstance(m.raw, dict)]


def _every_host_on_the_fleet_dashboard(prom: str) -> None:
    """Every host in the `instance` variable and in every panel. Prometheus scrapes each exporter
    every second with a 1 s timeout: on a busy machine one scrape that took longer leaves its host
    out of an instant query until the next one, so this waits (a minute at most) for a moment when
    all of them are there: what is judged is the dashboard, not the speed of one scrape."""
    board = json.loads((REPO / "grafana" / "dashboards" / "fleet-overview.json").read_text())
    gaps: list[str] = []

    def complete() -> bool:
        gaps[:] = _dashboard_gaps(prom, board)
        return not gaps

    try:
        wait_for(complete, 60, "every host on the fleet dashboard", interval=1.0)
    except AssertionError:
        raise AssertionError(gaps) from None


def _dashboard_gaps(prom: str, board: dict) -> list[str]:
    from .test_prometheus import substitute

    instances = {v for r in query(prom, "group by (instance) (supervisord_up)") for v in [r["metric"]["instance"]]}
    if len(instances) != N:
        return [f"the instance variable has {len(instances)} of {N} hosts: {sorted(instances)}"]
    gaps = []
    hosts = float(query(prom, substitute(board["panels"][0]["targets"][0]["expr"]))[0]["value"][1])
    if hosts != N:
        gaps.append(f"panel {board['panels'][0]['id']} counts {hosts:g} hosts")
    for panel in board["panels"]:
        for t in panel["targets"]:
            seen = {r["metric"].get("instance") for r in query(prom, substitute(t["expr"]))} - {None}
            if seen and "topk" not in t["expr"] and len(seen) != N:
                gaps.append(f"panel {panel['id']} ({panel['title']}) shows {len(seen)} of {N} hosts")
    return gaps
