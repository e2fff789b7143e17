"""Issue 23, point 1: programs that must run, against a real supervisord. A critical service that
exits 0 under autorestart=unexpected (supervisord's default) is down: one alert; an operator's stop
is no alert, and `lookout status --check` names both, as `grep -v RUNNING` would."""

from __future__ import annotations

from .conftest import fast_alerts
from .harness import wait_for

PROGRAMS = """\
[program:critical_service]
command=sh -c 'while [ ! -f %(here)s/quit ]; do sleep 0.1; done; exit 0'
startsecs=1
autorestart=unexpected

[program:nightly_job]
command=sh -c 'sleep 1.2; exit 0'
startsecs=1
autorestart=unexpected

[program:report_job]
command=sh -c 'sleep 1.2; exit 0'
startsecs=1
autorestart=false

[group:execution]
programs=order_executor,router

[program:order_executor]
command=sleep 1000

[program:router]
command=sleep 1000
"""


def settings(webhook) -> dict:
    config = fast_alerts(webhook)
    config["alerts"]["programs"] = [{"match": "critical_service", "must_run": True, "grace": "2s"},
                                    {"match": "execution:*", "must_run": True, "grace": "2s"},
                                    {"match": "nightly_job", "oneshot": True}]
    return config


def test_a_must_run_program_that_exits_0_is_one_alert_and_an_operator_stop_is_none(supervisor_factory, webhook):
    sup = supervisor_factory(PROGRAMS, settings(webhook)).start()
    for name in ("critical_service", "execution:order_executor", "execution:router"):
        sup.wait_state(name if ":" in name else f"{name}:{name}", "RUNNING", 30)
    sup.wait_state("nightly_job:nightly_job", "EXITED", 30)
    sup.wait_state("report_job:report_job", "EXITED", 30)
    wait_for(lambda: sup.lookout("status", "--check").returncode == 0, 30,
             "all fine: the one-shot jobs exited as expected (oneshot = true; autorestart=false in supervisord.conf)")
    listed = sup.lookout("check-config").stdout  # every rule it will apply
    assert "alerts.programs[0] match='critical_service'" in listed and "must_run (grace 2s)" in listed, listed
    assert "alerts.programs[2] match='nightly_job'" in listed and "oneshot" in listed

    (sup.root / "quit").touch()  # exit 0: expected, and supervisord does not restart it
    sup.wait_state("critical_service:critical_service", "EXITED", 30)
    webhook.wait("critical_service is not running, and it must run", timeout=60)
    checked = sup.lookout("status", "--check")
    assert checked.returncode == 1 and "critical_service (alert not_running open)" in checked.stderr, checked.stderr

    assert sup.ctl("stop", "execution:*").returncode == 0
    wait_for(lambda: sup.lookout("status", "execution:*").stdout.count("stopped by an operator") == 2, 30,
             "lookout knows an operator stopped them")
    checked = sup.lookout("status", "--check")
    assert checked.returncode == 1
    for name in ("execution:order_executor", "execution:router"):
        assert f"{name} (STOPPED by an operator)" in checked.stderr, checked.stderr
    # Past their grace, and past a reconcile that saw them STOPPED: no alert for a deliberate stop.
    (sup.root / "quit").unlink()
    assert sup.ctl("start", "critical_service").returncode == 0  # (news to wait on: its resolution)
    webhook.wait("[RESOLVED]", "critical_service", timeout=60)
    with sup.db() as db:
        assert db.execute("SELECT count(*) FROM alerts WHERE namespec LIKE 'execution:%'").fetchone()[0] == 0
    assert not webhook.matching("order_executor") and not webhook.matching("router")
    assert len(webhook.matching("critical_service is not running")) == 1, [m.title for m in webhook.messages]
    assert sup.lookout("status", "--check", "--ignore-stopped").returncode == 0  # the old meaning
