"""The capability of issue 24: a need fails, its dependant fails with it; one incident, recovery in
dependency order. Against a real supervisord, with svc.py of tests/test_dependencies.py."""

from __future__ import annotations

import os
import signal
import sys

from ..harness import stays, wait_for
from ..test_dependencies import SVC
from .run import Run

DB, RISK = "database:database", "risk_manager:risk_manager"


def dependency_incident(run: Run) -> None:
    """risk_manager needs database. The database dies and cannot start again (FATAL); risk_manager
    loses it and goes FATAL too. Mid-way: just after the database died. Outcome: one page, the
    database's, naming risk_manager; none of risk_manager's own. The database repaired and started
    by an operator: lookout starts risk_manager once the database runs, one RESOLVED (the
    database's), none of risk_manager's. Under a reload both go FATAL again after it, so the
    database's crash and its FATAL come a reload apart: two pages of the database's (an escalation
    is news), still none of risk_manager's."""
    db, risk = "sock.database", "sock.risk_manager"  # unix sockets beside svc.py
    programs = "".join(
        f"[program:{name}]\ncommand={sys.executable} %(here)s/svc.py exit {port} {need}\nstartsecs=1\n"
        "startretries=2\nstopwaitsecs=1\n\n" for name, port, need in (("database", db, ""), ("risk_manager", risk, db)))
    settings = run.settings()
    settings["dependencies"] = [{"program": "risk_manager", "needs": ["database"]}]
    sup = run.supervisor(programs, settings)
    (sup.root / "svc.py").write_text(SVC)
    sup.start()
    run.wait_running(DB)
    run.wait_running(RISK)
    (sup.root / "broken_database").touch()
    os.kill(sup.info(DB)["pid"], signal.SIGKILL)
    wait_for(lambda: "exited: database " in sup.log(), 10, "the database died")
    run.midway()
    wait_for(lambda: sup.state_of(DB) == "FATAL" and sup.state_of(RISK) == "FATAL", run.within(40), "both FATAL")
    page = wait_for(lambda: run.firing(DB), run.within(30), "the database's page")[0]
    assert "risk_manager" in page, page
    run.settled()
    (sup.root / "broken_database").unlink()
    assert sup.ctl("start", "database").returncode == 0
    wait_for(lambda: sup.state_of(RISK) == "RUNNING", run.within(30), "lookout starts risk_manager again")
    assert sup.info(RISK)["start"] > sup.info(DB)["start"], (sup.info(RISK), sup.info(DB))
    wait_for(lambda: run.resolved(DB), run.within(30), "the incident resolved")
    pages = (1, 2) if run.reloaded else (1,)
    stays(lambda: len(run.firing(DB)) in pages and len(run.resolved(DB)) == 1 and not run.firing(RISK)
          and not run.resolved(RISK), 4, "the database's page, one resolution, none of risk_manager's own")
