"""Issue 24: what depends on what, against a real supervisord. The reference stack: `database`;
`risk_manager` needs it; `execution:*` needs `risk_manager`; `analysis:*` needs nothing. Each
program is a small TCP service (svc.py) that reaches its needs' ports: "exit" mode dies when a need
is gone (supervisord retries, then FATAL), "degrade" mode keeps running and stops answering (its
tcp probe fails; remediation would restart it)."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import sys
import threading
import time

import pytest

from .conftest import fast_alerts
from .harness import free_port, stays, wait_for

SVC = r'''
import os, socket, sys, time
name = os.environ.get("SUPERVISOR_PROCESS_NAME", "?")
here = os.path.dirname(os.path.abspath(__file__))
mode, me, needs = sys.argv[1], sys.argv[2], sys.argv[3:]  # a port, or a unix socket's name beside this file
def addr(a):
    return (socket.AF_INET, ("127.0.0.1", int(a))) if a.isdigit() else (socket.AF_UNIX, os.path.join(here, a))
if os.path.exists(os.path.join(here, "crashloop_" + name)):  # slow to listen, then dies 1.5 s later
    import threading
    time.sleep(1.0)
    threading.Timer(1.5, lambda: os._exit(1)).start()
if os.path.exists(os.path.join(here, "broken_" + name)):
    print(f"{name}: could not bind {me}", file=sys.stderr, flush=True)
    sys.exit(1)
def up(p):  # one of ours answers "svc"
    family, where = addr(p)
    try:
        with socket.socket(family) as c:
            c.settimeout(2.0)  # (a starved machine answers late: that is no lost need)
            c.connect(where)
            return c.recv(3) == b"svc"
    except OSError:
        return False
def listen():
    family, where = addr(me)
    s = socket.socket(family)
    if family == socket.AF_UNIX:
        if os.path.exists(where):
            os.unlink(where)
    else:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(where)
    s.listen(50)
    s.settimeout(0.2)
    return s
srv, misses = None, 0
if all(up(p) for p in needs):
    srv = listen()
elif mode == "exit":
    print(f"{name}: a need is not reachable", file=sys.stderr, flush=True)
    sys.exit(1)
while True:
    if srv is not None:
        try:
            c = srv.accept()[0]
            c.sendall(b"svc")
            c.close()
        except OSError:
            pass
    else:
        time.sleep(0.2)
    misses = 0 if all(up(p) for p in needs) else misses + 1  # lost: three checks in a row, not one slow answer
    if misses >= 3 and mode == "exit":
        print(f"{name}: lost a need", file=sys.stderr, flush=True)
        sys.exit(1)
    if misses >= 3 and srv is not None:
        srv.close()
        srv = None
    elif not misses and srv is None:
        srv = listen()
'''
# An exec probe of one of svc.py's unix sockets (the listener runs it in supervisord's directory).
PROBE = "import socket,sys; c=socket.socket(socket.AF_UNIX); c.settimeout(0.5); c.connect(sys.argv[1]); " \
        "sys.exit(0 if c.recv(3) == b'svc' else 1)"


def stack(ports: dict[str, str], *, startup: bool = False, extra: str = "", broken: tuple[str, ...] = ()) -> str:
    """supervisord.conf programs; startup: the dependants are autostart=false (lookout starts them);
    broken: never meant to run, startsecs=10 (supervisord judges startsecs before it reaps a dead
    child: on a starved machine a run dead within 1 s may be called RUNNING first, and its
    dependants' needs ready for a moment)."""
    auto = "autostart=false\n" if startup else ""

    def program(name: str, mode: str, needs: tuple[str, ...], autostart: str = "") -> str:
        args = " ".join(str(ports[n]) for n in needs)
        return (f"[program:{name}]\ncommand={{py}} %(here)s/svc.py {mode} {ports[name]} {args}\n"
                f"startsecs={10 if name in broken else 1}\nstartretries=2\n{autostart}\n")

    return ("[group:execution]\nprograms=order_executor,position_monitor,hedger\n\n"
            "[group:analysis]\nprograms=backtest,report\n\n"
            + program("database", "exit", ())
            + program("risk_manager", "exit", ("database",), auto)
            + program("order_executor", "exit", ("risk_manager",), auto)
            + program("position_monitor", "exit", ("risk_manager",), auto)
            + program("hedger", "degrade", ("risk_manager",), auto)
            + "[program:backtest]\ncommand=sleep 1000\n\n[program:report]\ncommand=sleep 1000\n\n" + extra)


def settings(webhook, ports: dict[str, str], *, start: bool = False) -> dict:  # noqa: ANN001
    config = fast_alerts(webhook)
    # grace 15s: the need's page waits for every dependant to fail, also on a busy machine (a probe's
    # verdict, supervisord's retries); what fails later is listed quietly (status), not paged.
    config["dependencies"] = [
        {"program": "risk_manager", "needs": ["database"], "start": start, "start_timeout": "4s", "grace": "15s"},
        {"program": "execution:*", "needs": ["risk_manager"], "start": start, "start_timeout": "4s", "grace": "15s"},
    ]
    config["probes"] = [{"match": "execution:hedger", "name": "port", "exec": [sys.executable, "-c", PROBE,
                                                                              ports["hedger"]],
                         "period": "1s", "timeout": "500ms", "failure_threshold": 2, "action": "restart"}]
    config["remediation"] = {"backoff": "1s"}
    return config


def make(supervisor_factory, webhook, *, startup: bool = False, extra: str = "", broken: tuple[str, ...] = (),  # noqa: ANN001, ANN201
         **kw):

    # unix sockets beside svc.py, not ports: a port free when asked may be another test's when bound
    ports = {n: f"sock.{n}" for n in ("database", "risk_manager", "order_executor", "position_monitor", "hedger")}
    sup = supervisor_factory(stack(ports, startup=startup, extra=extra, broken=broken).replace("{py}", sys.executable),
                             settings(webhook, ports, start=startup), **kw)
    (sup.root / "svc.py").write_text(SVC)
    return sup, ports


DEPENDANTS = ("risk_manager:risk_manager", "execution:order_executor", "execution:position_monitor")


def lookout_actions(sup) -> list[str]:  # noqa: ANN001
    with sup.db() as c:
        return [r[0] + ": " + r[1] for r in c.execute(
            "SELECT namespec, detail FROM history WHERE kind = 'action' AND detail LIKE 'lookout begins%'")]


def settled(sup) -> None:  # noqa: ANN001
    """Every need ready and stable in lookout's eyes (`lookout deps --json`): on a busy machine a
    dependant started before its need answered crashes once, and its need is "not stable yet" a while."""
    import json

    def fine() -> bool:
        out = sup.lookout("deps", "--json")
        return out.returncode == 0 and all(n["ready"] and not n["failing"]
                                           for p in json.loads(out.stdout) for n in p["needs"])
    wait_for(fine, 60, "every need ready and stable", interval=0.3)


@pytest.mark.long
def test_a_need_fatal_at_start_is_one_incident_then_recovery_in_order(supervisor_factory, webhook):
    sup, _ = make(supervisor_factory, webhook)
    (sup.root / "broken_database").touch()
    sup.start()
    for ns in ("database:database", *DEPENDANTS):
        sup.wait_state(ns, "FATAL", 60)
    incident = webhook.wait("database", "4 dependants failing", timeout=60)
    body = incident[0].body
    assert incident[0].title.startswith("[CRITICAL] database gave up starting (FATAL)"), incident[0].title
    for name in ("risk_manager FATAL", "execution:order_executor FATAL", "execution:position_monitor FATAL",
                 "execution:hedger RUNNING (unhealthy)"):
        assert name in body, body
    assert body.index("database: could not bind") < body.index("impact") or "could not bind" in body, body
    stays(lambda: len(webhook.messages) == 1, 5, "no other message")
    assert not lookout_actions(sup), lookout_actions(sup)  # hedger's probe fails: its need's fault, no restart
    status = sup.lookout("status").stdout
    assert "waiting for database (database FATAL)" in status, status
    assert "waiting for risk_manager (risk_manager FATAL)" in status, status
    assert "its need is not ready: risk_manager FATAL" in status, status  # hedger runs, unhealthy
    deps = sup.lookout("deps").stdout
    assert "risk_manager" in deps and "needs database FATAL (not ready)  waiting: recovery" in deps, deps
    assert deps.index("risk_manager") < deps.index("execution:order_executor"), deps  # needs first
    assert sup.info("analysis:backtest")["statename"] == "RUNNING"
    with sup.db() as c:
        assert not c.execute("SELECT 1 FROM alerts WHERE namespec LIKE 'analysis:%'").fetchone()

    (sup.root / "broken_database").unlink()
    assert sup.ctl("start", "database").returncode == 0  # repaired by an operator
    for ns in DEPENDANTS:
        sup.wait_state(ns, "RUNNING", 60)
    risk = sup.info("risk_manager:risk_manager")["start"]
    for ns in ("execution:order_executor", "execution:position_monitor"):
        assert sup.info(ns)["start"] > risk, (ns, sup.info(ns), risk)  # started once risk_manager ran
    resolved = webhook.wait("[RESOLVED] database", timeout=60)
    assert "4 dependants running again" in resolved[0].title + resolved[0].body, resolved[0].body
    wait_for(lambda: not sup.open_alerts(), 60, "every alert closed")
    stays(lambda: len(webhook.messages) == 2, 3, "one resolved message, no more")
    assert sorted(lookout_actions(sup)) == sorted(
        f"{ns}: lookout begins to start it: its needs are ready ({need} RUNNING (not stable yet))"
        for ns, need in (("risk_manager:risk_manager", "database"), ("execution:order_executor", "risk_manager"),
                         ("execution:position_monitor", "risk_manager"))), lookout_actions(sup)


@pytest.mark.long
def test_an_operator_stop_of_a_need_is_a_warning_and_a_stopped_dependant_stays_stopped(supervisor_factory, webhook):
    sup, _ = make(supervisor_factory, webhook)
    sup.start()
    for ns in ("database:database", *DEPENDANTS, "execution:hedger"):
        sup.wait_state(ns, "RUNNING", 60)
    settled(sup)
    assert sup.ctl("stop", "execution:order_executor").returncode == 0  # the operator's: never undone
    assert sup.ctl("stop", "database").returncode == 0
    sup.wait_state("risk_manager:risk_manager", "FATAL", 60)
    sup.wait_state("execution:position_monitor", "FATAL", 60)
    warning = webhook.wait("database", "stopped by an operator", timeout=60)[0]
    assert warning.title.startswith("[WARNING] database is down, and programs need it"), warning.title
    assert "risk_manager FATAL" in warning.body or "risk_manager BACKOFF" in warning.body, warning.body
    stays(lambda: len(webhook.messages) == 1, 3, "one message")
    assert sup.ctl("start", "database").returncode == 0
    sup.wait_state("risk_manager:risk_manager", "RUNNING", 60)
    sup.wait_state("execution:position_monitor", "RUNNING", 60)
    webhook.wait("[RESOLVED] database", timeout=60)
    wait_for(lambda: not sup.open_alerts(), 60, "every alert closed")
    assert sup.info("execution:order_executor")["statename"] == "STOPPED"
    assert len(webhook.messages) == 2, [m.title for m in webhook.messages]


@pytest.mark.long
def test_start_up_waits_for_each_need_and_a_one_shot_need(supervisor_factory, webhook):
    extra = ("[program:migrate]\ncommand=sh -c 'exit 0'\nstartsecs=0\nautorestart=false\n\n"
             "[program:api]\ncommand=sleep 1000\nautostart=false\n\n"
             "[program:bad_migrate]\ncommand=sh -c 'exit 1'\nstartsecs=0\nautorestart=false\n\n"
             "[program:bad_api]\ncommand=sleep 1000\nautostart=false\n\n")
    sup, _ = make(supervisor_factory, webhook, startup=True, extra=extra)
    text = sup.config_path.read_text()
    sup.config_path.write_text(text + '\n[[dependencies]]\nprogram = "api"\nneeds = ["migrate"]\nready = "exited"\n'
                               'start = true\n\n[[dependencies]]\nprogram = "bad_api"\nneeds = ["bad_migrate"]\n'
                               'ready = "exited"\nstart = true\n')
    sup.start()
    for ns in (*DEPENDANTS, "execution:hedger", "api:api"):
        sup.wait_state(ns, "RUNNING", 60)
    db = sup.info("database:database")
    risk = sup.info("risk_manager:risk_manager")
    assert risk["start"] >= db["start"] + 1, (db, risk)  # after the database was RUNNING (startsecs=1)
    for ns in ("execution:order_executor", "execution:position_monitor", "execution:hedger"):
        assert sup.info(ns)["start"] >= risk["start"] + 1, (ns, sup.info(ns), risk)
    assert sup.info("api:api")["start"] >= sup.info("migrate:migrate")["stop"]
    assert sup.info("bad_api:bad_api")["statename"] == "STOPPED"  # its one-shot need failed
    exited = webhook.wait("bad_migrate", timeout=60)
    assert "bad_api" in exited[0].body, exited[0].body  # one alert: the need's, naming what waits for it
    stays(lambda: not webhook.matching("bad_api is still waiting"), 6, "no second alert for bad_api")
    assert sup.info("bad_api:bad_api")["statename"] == "STOPPED"


@pytest.mark.long
def test_a_need_that_never_comes_up_is_one_alert_after_start_timeout(supervisor_factory, webhook):
    sup, _ = make(supervisor_factory, webhook, startup=True, broken=("database",))
    (sup.root / "broken_database").touch()
    sup.start()
    sup.wait_state("database:database", "FATAL", 60)
    message = webhook.wait("database", timeout=60)[0]
    assert "risk_manager STOPPED" in message.body, message.body
    stays(lambda: len(webhook.messages) == 1, 6, "one message, past start_timeout")
    for ns in DEPENDANTS:
        assert sup.info(ns)["statename"] == "STOPPED", ns
    assert "waiting for database" in sup.lookout("status", "risk_manager").stdout


@pytest.mark.long
def test_an_external_check_is_a_need(supervisor_factory, webhook):
    port = free_port()
    config = fast_alerts(webhook)
    config["checks"] = [{"name": "vpn", "tcp": f"127.0.0.1:{port}", "period": "1s", "timeout": "500ms",
                         "failure_threshold": 2}]
    config["dependencies"] = [{"program": "feed", "needs": ["check:vpn"], "start": True}]
    sup = supervisor_factory("[program:feed]\ncommand=sleep 1000\nautostart=false\nstartsecs=1\n", config).start()
    stays(lambda: sup.info("feed:feed")["statename"] == "STOPPED", 3, "feed waits for the vpn")
    server = socket.socket()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(("127.0.0.1", port))
    server.listen(50)
    done = threading.Event()

    def serve() -> None:
        server.settimeout(0.2)
        while not done.is_set():
            with contextlib.suppress(OSError):
                server.accept()[0].close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    opened = time.time()
    sup.wait_state("feed:feed", "RUNNING", 30)
    assert sup.info("feed:feed")["start"] >= int(opened)
    done.set()
    thread.join()
    server.close()
    down = webhook.wait("check:vpn is down", timeout=30)
    assert len(webhook.messages) == 1, [m.title for m in webhook.messages]
    assert down[0].title.startswith("[CRITICAL] check:vpn is down") or "check:vpn" in down[0].title
    # A new user: --check said 0 with a check's alert open (and status had no line for it).
    status = wait_for(lambda: (r := sup.lookout("status", "--check")).returncode == 1 and r, 30, "--check fails",
                      interval=0.5)
    assert "check:vpn (down)" in status.stderr and "check:vpn  DOWN since" in status.stdout, status


@pytest.mark.long
def test_a_crash_looping_need_is_one_incident_and_its_dependants_wait_for_it_to_settle(supervisor_factory, webhook):
    sup, _ = make(supervisor_factory, webhook)
    text = sup.config_path.read_text()
    sup.config_path.write_text(text.replace("[alerts]\n", '[alerts]\ncrash_loop = { restarts = 3, within = "1m" }\n'))
    sup.start()
    for ns in ("database:database", *DEPENDANTS):
        sup.wait_state(ns, "RUNNING", 60)
    settled(sup)
    (sup.root / "crashloop_database").touch()
    sup.ctl("restart", "database")  # (an operator's restart: now it dies 1.5 s into every run)
    page = webhook.wait("database is crash-looping", timeout=60)[0]
    assert "dependant" in page.title and "risk_manager" in page.body, page.body
    stays(lambda: len(webhook.messages) == 1, 4, f"one message: {[m.title + m.body for m in webhook.messages]}")
    # No restart (hedger's probe fails: its need's fault); a start is only ever "its needs are ready"
    # (the database RUNNING between two crashes, before they made a crash loop).
    assert all("lookout begins to start it: its needs are ready" in a for a in lookout_actions(sup)), \
        lookout_actions(sup)
    (sup.root / "crashloop_database").unlink()
    for ns in DEPENDANTS:
        sup.wait_state(ns, "RUNNING", 90)
    webhook.wait("[RESOLVED] database", timeout=90)
    wait_for(lambda: not sup.open_alerts(), 60, "every alert closed")
    assert len(webhook.messages) == 2, [m.title for m in webhook.messages]


@pytest.mark.long
def test_a_need_failing_its_probe_while_running_is_one_incident(supervisor_factory, webhook):

    gate = free_port()  # (the database's own need: a TCP port this test serves)
    ports = {n: f"sock.{n}" for n in ("database", "risk_manager")}
    programs = (f"[program:database]\ncommand={sys.executable} %(here)s/svc.py degrade {ports['database']} {gate}\n"
                f"startsecs=1\n\n[program:risk_manager]\ncommand={sys.executable} %(here)s/svc.py exit "
                f"{ports['risk_manager']} {ports['database']}\nstartsecs=1\nstartretries=2\n")
    config = fast_alerts(webhook)
    config["dependencies"] = [{"program": "risk_manager", "needs": ["database"], "ready": "healthy"}]
    config["probes"] = [{"match": "database", "name": "port", "exec": [sys.executable, "-c", PROBE, ports["database"]],
                         "period": "1s", "timeout": "500ms", "failure_threshold": 2}]
    server = socket.socket()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(("127.0.0.1", gate))
    server.listen(50)
    done = threading.Event()

    def serve() -> None:  # the database's own need, answering as svc.py does
        server.settimeout(0.2)
        while not done.is_set():
            with contextlib.suppress(OSError):
                c = server.accept()[0]
                c.sendall(b"svc")
                c.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    sup = supervisor_factory(programs, config)
    (sup.root / "svc.py").write_text(SVC)
    sup.start()
    sup.wait_state("risk_manager:risk_manager", "RUNNING", 60)
    wait_for(lambda: "healthy" in sup.lookout("status", "database").stdout, 30, "database judged healthy")
    done.set()
    thread.join()
    server.close()  # the database's own need is gone: it stops answering, RUNNING
    page = webhook.wait("database is unhealthy", timeout=60)[0]
    sup.wait_state("risk_manager:risk_manager", "FATAL", 60)
    assert "risk_manager" in page.body, page.body
    stays(lambda: len(webhook.messages) == 1, 4, "one message")
    server = socket.socket()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(("127.0.0.1", gate))
    server.listen(50)
    done.clear()
    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        sup.wait_state("risk_manager:risk_manager", "RUNNING", 60)  # started by lookout once healthy again
        webhook.wait("[RESOLVED] database", timeout=60)
        wait_for(lambda: not sup.open_alerts(), 60, "every alert closed")
        assert len(webhook.messages) == 2, [m.title for m in webhook.messages]
    finally:
        done.set()
        thread.join()
        server.close()


@pytest.mark.long
def test_supervisord_dependent_startup_keys_give_the_same_start_order(supervisor_factory, webhook):
    """Its users keep their supervisord.conf: no [[dependencies]], supervisor.config names the file."""

    ports = {n: f"sock.{n}" for n in ("database", "risk_manager", "order_executor")}

    def program(name: str, needs: str, wait_for: str) -> str:
        keys = f"autostart=false\ndependent_startup=true\ndependent_startup_wait_for={wait_for}\n" if wait_for else ""
        return (f"[program:{name}]\ncommand={sys.executable} %(here)s/svc.py exit {ports[name]} {needs}\n"
                f"startsecs=1\nstartretries=2\n{keys}\n")

    programs = (program("database", "", "") + program("risk_manager", ports["database"], "database:running")
                + program("order_executor", ports["risk_manager"], "risk_manager:running"))
    sup = supervisor_factory(programs, fast_alerts(webhook))
    (sup.root / "svc.py").write_text(SVC)
    sup.config_path.write_text(sup.config_path.read_text().replace(
        "[supervisor]\n", f'[supervisor]\nconfig = "{sup.conf}"\n', 1))
    sup.start()
    for ns in ("risk_manager:risk_manager", "order_executor:order_executor"):
        sup.wait_state(ns, "RUNNING", 60)
    db, risk = sup.info("database:database"), sup.info("risk_manager:risk_manager")
    assert risk["start"] >= db["start"] + 1, (db, risk)
    assert sup.info("order_executor:order_executor")["start"] >= risk["start"] + 1
    assert "supervisord.conf [program:risk_manager]: 'risk_manager' needs database (running) start = true" \
        in sup.lookout("check-config").stdout


@pytest.mark.long
def test_a_dependant_failing_alone_alerts_on_its_own(supervisor_factory, webhook):
    """Its needs are fine: its own page (after grace), as without dependencies; nothing of the need's."""
    sup, _ = make(supervisor_factory, webhook)
    sup.start()
    for ns in ("database:database", *DEPENDANTS):
        sup.wait_state(ns, "RUNNING", 60)
    settled(sup)
    (sup.root / "broken_position_monitor").touch()
    os.kill(sup.info("execution:position_monitor")["pid"], signal.SIGKILL)
    sup.wait_state("execution:position_monitor", "FATAL", 60)
    webhook.wait("position_monitor gave up starting (FATAL)", timeout=60)
    stays(lambda: not webhook.matching("[RESOLVED]"), 3, "still down")
    for m in webhook.messages:  # (its crash, then its FATAL: one page, or two on a busy machine)
        assert "position_monitor" in m.title and "database" not in m.title and "likely cause" not in m.body, m
    assert not lookout_actions(sup), lookout_actions(sup)  # its needs are fine: nothing owed
