"""Issue 21, case 7: a probe that cannot read its evidence judges nothing. A log file deleted or
moved away while supervisord writes on to the file it has open is "cannot judge" (shown by
`lookout status`), never "no log output" that restarts a program logging every 0.2 s; once
supervisord writes to a new file (its own rotation, an operator's restart) the probe judges again.
Against a real supervisord."""

from __future__ import annotations

import os
import subprocess
import sys

from .conftest import fast_alerts
from .harness import REPO, stays, wait_for

PROGRAMS = REPO / "tests" / "programs"


def chatter(name: str) -> str:
    return f"""\
[program:{name}]
command={sys.executable} {PROGRAMS / "chatter.py"} %(here)s
stdout_logfile=%(here)s/logs/{name}.log
stdout_logfile_maxbytes=1MB
stdout_logfile_backups=2
startsecs=1
stopwaitsecs=2
"""


def settings(webhook, match: str) -> dict:
    s = fast_alerts(webhook)
    s["probes"] = [{"match": match, "log_silence": "2s", "period": "1s", "initial_delay": "1s", "action": "restart"}]
    s["remediation"] = {"backoff": "1s"}
    return s


def probe_row(sup, namespec: str) -> dict:
    with sup.db() as c:
        row = c.execute("SELECT * FROM probes WHERE namespec = ? AND probe = 'log_silence'", (namespec,)).fetchone()
        return dict(row) if row else {}


def status(sup) -> str:
    return subprocess.run([sys.executable, "-m", "lookout", "-c", str(sup.config_path), "status", "--color=never"],
                          capture_output=True, text=True, timeout=60).stdout


def judging_healthy(sup, namespec: str) -> bool:
    row = probe_row(sup, namespec)
    return row.get("last_judged") == 1 and row.get("healthy") == 1 and row.get("last_ok") == 1


def lookout_acted(sup, namespec: str) -> bool:
    with sup.db() as c:
        return bool(c.execute("SELECT 1 FROM remediation_stats WHERE namespec = ? AND count > 0", (namespec,))
                    .fetchone())


def test_a_deleted_or_moved_log_is_cannot_judge_not_silence(supervisor_factory, webhook):
    names = ("chatty_del", "chatty_mv")
    sup = supervisor_factory("\n".join(chatter(n) for n in names), settings(webhook, "chatty_*")).start()
    logs = sup.root / "logs"
    for name in names:
        wait_for(lambda name=name: judging_healthy(sup, f"{name}:{name}"), 20, f"{name} judged healthy")
    pids = {name: sup.info(f"{name}:{name}")["pid"] for name in names}
    failures = {name: probe_row(sup, f"{name}:{name}")["failures_total"] for name in names}

    os.unlink(logs / "chatty_del.log")  # supervisord writes on to the deleted file
    os.rename(logs / "chatty_mv.log", logs / "chatty_mv.log.old")  # and to the moved one
    for name in names:
        wait_for(lambda name=name: probe_row(sup, f"{name}:{name}").get("last_judged") == 0, 15,
                 f"{name}: cannot judge")

    def judged_nothing() -> bool:
        return all(sup.info(f"{n}:{n}")["pid"] == pids[n] and probe_row(sup, f"{n}:{n}")["last_judged"] == 0
                   and probe_row(sup, f"{n}:{n}")["failures_total"] == failures[n] for n in names)

    # Silence is 2 s, a run every second: five silences long, nothing fails, nothing restarts.
    stays(judged_nothing, 10, "no failure and no restart while the logs are not supervisord's")
    assert not webhook.messages, [m.title for m in webhook.messages]
    assert not any(lookout_acted(sup, f"{n}:{n}") for n in names)
    grown = (logs / "chatty_mv.log.old").stat().st_size
    wait_for(lambda: (logs / "chatty_mv.log.old").stat().st_size > grown, 5, "the program logs on, there")
    shown = status(sup)
    deleted = next(line for line in shown.splitlines() if line.startswith("chatty_del "))
    moved = next(line for line in shown.splitlines() if line.startswith("chatty_mv "))
    assert "health: cannot judge (log_silence: stdout log " in deleted and "chatty_del.log deleted" in deleted, shown
    assert "healthy" not in deleted.replace("cannot judge", ""), deleted
    assert "health: cannot judge (log_silence: stdout log " in moved, shown
    assert f"moved to {logs / 'chatty_mv.log.old'}" in moved, moved

    # supervisord's own rotation: the 1.2 MB burst goes into the deleted file, which crosses
    # maxbytes; supervisord opens chatty_del.log anew and the probe judges again.
    (sup.root / "burst.chatty_del").touch()
    wait_for(lambda: (logs / "chatty_del.log").exists(), 15, "supervisord's rotation made chatty_del.log anew")
    wait_for(lambda: judging_healthy(sup, "chatty_del:chatty_del"), 15, "chatty_del judged again")
    # An operator's restart opens chatty_mv.log anew.
    assert sup.ctl("restart", "chatty_mv").returncode == 0
    wait_for(lambda: judging_healthy(sup, "chatty_mv:chatty_mv"), 20, "chatty_mv judged again")
    assert sup.info("chatty_del:chatty_del")["pid"] == pids["chatty_del"]
    assert not webhook.messages and not any(lookout_acted(sup, f"{n}:{n}") for n in names)
    assert "cannot judge" not in status(sup)


def test_silence_is_still_judged_and_acted_on_after_a_rotation(supervisor_factory, webhook):
    """The other side: after supervisord's rotation the new file is the evidence, and a program that
    goes quiet there is restarted as before."""
    program = chatter("quiet").replace("chatter.py", "worker.py").replace("stdout_logfile_maxbytes=1MB",
                                                                            "stdout_logfile_maxbytes=200")
    sup = supervisor_factory(program, settings(webhook, "quiet")).start()
    wait_for(lambda: judging_healthy(sup, "quiet:quiet"), 20, "judged healthy")
    wait_for(lambda: (sup.root / "logs" / "quiet.log.1").exists(), 20, "rotated by supervisord")
    wait_for(lambda: judging_healthy(sup, "quiet:quiet"), 20, "judged healthy after the rotation")
    pid = sup.info("quiet:quiet")["pid"]
    (sup.root / "quiet.quiet").touch()  # worker.py stops logging
    webhook.wait("quiet is unhealthy (log_silence probe)", "no log output for", timeout=20)
    wait_for(lambda: sup.info("quiet:quiet")["pid"] not in (0, pid), 20, "restarted by lookout")
