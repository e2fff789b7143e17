"""lookout-exporter against a real supervisord and a real listener (issue 3)."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import time

from .conftest import fast_alerts
from .harness import wait_for

PROGRAMS = """\
[program:stopped]
command=sleep 1000
autostart=false

[program:starting]
command=sleep 1000
startsecs=1000

[program:running]
command=sleep 1000

[program:backoff]
command=sh -c 'exit 1'
startretries=1000

[program:exited5]
command=sh -c 'sleep 1.2; exit 5'
startsecs=1
autorestart=false

[program:killed]
command=sleep 1000
autorestart=false

[program:fatal]
command=/nonexistent/lookout-fatal
startretries=0

[program:crasher]
command=sleep 1000
autorestart=true
"""


def value(m: dict, metric: str, /, **labels: str) -> float | None:
    return m.get(metric, {}).get(tuple(sorted(labels.items())))


def proc_state(m: dict, group: str, name: str) -> str | None:
    for labels, v in m.get("supervisor_process_state", {}).items():
        d = dict(labels)
        if d["group"] == group and d["name"] == name and v == 1:
            return d["state"]
    return None


def test_states_uptime_and_exit_statuses_match_supervisord(supervisor_factory, webhook, exporter_factory):
    sup = supervisor_factory(PROGRAMS, fast_alerts(webhook)).start()
    sup.wait_state("exited5:exited5", "EXITED", 15)
    sup.wait_state("fatal:fatal", "FATAL", 15)
    sup.wait_state("killed:killed", "RUNNING", 15)
    os.kill(sup.info("killed:killed")["pid"], signal.SIGKILL)
    sup.wait_state("killed:killed", "EXITED", 15)
    exp = exporter_factory(sup)

    every_state = {"STOPPED", "STARTING", "RUNNING", "BACKOFF", "EXITED", "FATAL"}

    def matches() -> tuple[dict, list[dict]] | None:
        """A moment with every state on show (backoff flips between STARTING and BACKOFF: a busy
        machine caught it STARTING in a second look) and the exporter agreeing with it."""
        m = exp.metrics()
        infos = sup.rpc().call("supervisor.getAllProcessInfo")
        agree = all(proc_state(m, i["group"], i["name"]) == i["statename"] for i in infos)
        return (m, infos) if agree and every_state <= {i["statename"] for i in infos} else None
    m, infos = wait_for(matches, 30, "every state on show, each process's matching getAllProcessInfo")
    states = {i["name"]: i["statename"] for i in infos}
    assert every_state <= set(states.values())
    assert value(m, "lookout_exporter_source", source="store") == 1

    info = sup.info("running:running")
    uptime = value(m, "supervisor_process_uptime_seconds", group="running", name="running")
    assert abs(uptime - (time.time() - info["start"])) < 2
    assert value(m, "supervisor_process_up", group="running", name="running") == 1
    assert abs(value(m, "supervisor_process_start_time_seconds", group="running", name="running") - info["start"]) < 2
    assert value(m, "supervisor_process_start_time_seconds", group="stopped", name="stopped") == 0
    wait_for(lambda: value(exp.metrics(), "supervisor_process_exit_status", group="exited5", name="exited5") == 5,
             10, "exit status 5")
    wait_for(lambda: value(exp.metrics(), "supervisor_process_exit_status", group="killed", name="killed") == -1,
             10, "exit status -1 for SIGKILL")
    assert value(m, "supervisord_up") == 1
    assert value(m, "supervisord_state", state="RUNNING") == 1


def test_restart_counters_survive_restarts(supervisor_factory, webhook, exporter_factory):
    sup = supervisor_factory("[program:crasher]\ncommand=sleep 1000\nautorestart=true\n", fast_alerts(webhook)).start()
    exp = exporter_factory(sup)

    def crash(times: int) -> None:
        for _ in range(times):
            sup.wait_state("crasher:crasher", "RUNNING", 15)
            pid = sup.info("crasher:crasher")["pid"]
            os.kill(pid, signal.SIGKILL)
            wait_for(lambda pid=pid: sup.info("crasher:crasher")["pid"] not in (0, pid), 15, "respawn")

    def restarts() -> float | None:
        return value(exp.metrics(), "supervisor_process_restarts_total", group="crasher", name="crasher")

    crash(7)
    wait_for(lambda: restarts() == 7, 10, "7 restarts")
    assert sup.ctl("restart", "lookout").returncode == 0
    exp.stop()
    exp = exporter_factory(sup)
    wait_for(lambda: restarts() == 7, 10, "still 7 after restarting listener and exporter")
    crash(3)
    wait_for(lambda: restarts() == 10, 10, "10 restarts")
    unexpected = value(exp.metrics(), "supervisor_process_unexpected_exits_total", group="crasher", name="crasher")
    assert unexpected == 10


def test_state_change_shows_within_a_second(supervisor_factory, webhook, exporter_factory):
    sup = supervisor_factory("[program:svc]\ncommand=sleep 1000\n", fast_alerts(webhook)).start()
    exp = exporter_factory(sup)
    wait_for(lambda: proc_state(exp.metrics(), "svc", "svc") == "RUNNING", 10, "RUNNING")
    assert sup.ctl("stop", "svc").returncode == 0
    wait_for(lambda: proc_state(exp.metrics(), "svc", "svc") == "STOPPED", 1.0, "STOPPED within 1 s")


def test_falls_back_to_polling_and_reports_supervisord_down(supervisor_factory, webhook, exporter_factory):
    sup = supervisor_factory("[program:svc]\ncommand=sleep 1000\n", fast_alerts(webhook)).start()
    exp = exporter_factory(sup)
    wait_for(lambda: value(exp.metrics(), "lookout_exporter_source", source="store") == 1, 10, "store source")
    assert sup.ctl("stop", "lookout").returncode == 0
    m = wait_for(lambda: (m := exp.metrics()) and value(m, "lookout_exporter_source", source="supervisord") == 1
                 and m, 10, "polling source")
    assert proc_state(m, "svc", "svc") == "RUNNING"
    assert proc_state(m, "lookout", "lookout") == "STOPPED"
    assert sup.ctl("stop", "svc").returncode == 0
    wait_for(lambda: proc_state(exp.metrics(), "svc", "svc") == "STOPPED", 5, "polled state change")
    assert value(exp.metrics(), "supervisor_process_restarts_total", group="svc", name="svc") == 0
    sup.stop()
    m = wait_for(lambda: (m := exp.metrics()) and value(m, "supervisord_up") == 0 and m, 10, "supervisord_up 0")
    assert value(m, "supervisord_state", state="SHUTDOWN") == 1
    assert exp.get("/")[0] == 200


def test_tls_basic_auth_and_promtool(supervisor_factory, webhook, exporter_factory, tmp_path, promtool):
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out",
                    str(cert), "-days", "2", "-subj", "/CN=127.0.0.1"], check=True, capture_output=True, timeout=60)
    settings = fast_alerts(webhook)
    settings["exporter"] = {
        "tls_cert": str(cert), "tls_key": str(key), "basic_auth_user": "prom",
        "basic_auth_password_sha256": hashlib.sha256(b"s3cret-pass").hexdigest(),
    }
    sup = supervisor_factory(PROGRAMS, settings).start()
    exp = exporter_factory(sup, scheme="https")
    assert exp.get("/metrics")[0] == 401
    assert exp.get("/metrics", ("prom", "wrong"))[0] == 401
    status, body = exp.get("/metrics", ("prom", "s3cret-pass"))
    assert status == 200 and "supervisor_process_state" in body
    check = subprocess.run([promtool, "check", "metrics"], input=body, capture_output=True, text=True, timeout=60)
    assert check.returncode == 0, check.stdout + check.stderr
