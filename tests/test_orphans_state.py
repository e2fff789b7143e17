"""Issue 21, case 4: orphans are state. supervisord killed -9 twice, a program kept running each
time: every orphan stays named (with the supervisord that left it) across a listener restart and
a reload, until it is gone; then one resolved message. Against a real supervisord."""

from __future__ import annotations

import subprocess
import sys

from .conftest import fast_alerts
from .harness import stays, wait_for
from .test_supervisord_death import gone, kill

# It ignores SIGHUP, and supervisord gives it a process group of its own: a SIGKILL of supervisord
# leaves it running, reparented to init.
FEED = "[program:feed]\ncommand=sh -c 'trap \"\" HUP; exec sleep 1000'\nstartsecs=1\n\n"


def status(sup) -> str:  # noqa: ANN001
    done = subprocess.run([sys.executable, "-m", "lookout", "-c", str(sup.config_path), "status"],
                          capture_output=True, text=True, timeout=60)
    return done.stdout + done.stderr


def feed_pid(sup, not_in: list[int]) -> int:  # noqa: ANN001
    """feed's pid once the listener knows it as RUNNING, and it is another than those given."""
    def known() -> int:
        row = sup.process_row("feed:feed") or {}
        info = sup.info("feed:feed")
        if info["statename"] == "RUNNING" and info["pid"] not in not_in and row.get("pid") == info["pid"] \
                and row.get("state") == "RUNNING":
            return info["pid"]
        return 0
    return wait_for(known, 30, "feed running, its pid known to the listener")


def resolved_twice(webhook) -> list[str]:  # noqa: ANN001
    return [e for e in webhook.entries() if e.startswith("RESOLVED") and "a program running twice" in e]


def test_two_generations_of_orphans_stay_named_across_a_restart_and_a_reload(supervisor_factory, webhook):
    sup = supervisor_factory(FEED, fast_alerts(webhook)).start()
    left: list[int] = []
    try:
        first = sup.proc.pid
        a = feed_pid(sup, [])
        left.append(a)
        sup.proc.kill()  # SIGKILL: no shutdown, feed keeps running
        sup.proc.wait(10)
        webhook.wait("died without shutting down", timeout=10)
        sup.start()
        second = sup.proc.pid
        b = feed_pid(sup, [a])
        left.append(b)
        wait_for(lambda: [e for e in webhook.entries() if f"feed runs twice: orphan pid {a} from the previous "
                          f"supervisord, and pid {b}" in e and f"left by supervisord pid {first}, which died at" in e],
                 30, "feed runs twice, its orphan named with the supervisord that left it")

        sup.proc.kill()  # the second death: the first orphan must not be forgotten
        sup.proc.wait(10)
        died = webhook.wait("died without shutting down", timeout=10, count=2)[-1].body
        assert f"feed (pid {b})" in died, died
        assert f"feed (pid {a}, left by supervisord pid {first}, which died at" in died, died
        sup.start()
        third = sup.proc.pid
        c = feed_pid(sup, [a, b])
        three = (f"feed runs three times: orphan pids {a} (left by supervisord pid {first}, which died at",
                 f"and {b} (left by supervisord pid {second}, which died at", f"and pid {c}")
        said = wait_for(lambda: [e for e in webhook.entries() if all(t in e for t in three)], 30,
                        "feed runs three times, each orphan named")
        assert said[0].startswith("UPDATE CRITICAL"), said  # the open alert, told of its new orphan
        assert not resolved_twice(webhook)

        def both_listed() -> bool:
            out = status(sup)
            return f"ORPHAN pid {a} still runs, left by supervisord pid {first}" in out \
                and f"ORPHAN pid {b} still runs, left by supervisord pid {second}" in out

        assert both_listed(), status(sup)
        ready = sup.listener_output().count("lookout-listener ready")
        assert sup.ctl("restart", "lookout").returncode == 0  # the README's step after a config change
        wait_for(lambda: sup.listener_output().count("lookout-listener ready") > ready, 30, "a new listener")
        wait_for(lambda: "reconciled" in sup.listener_output().split("lookout-listener ready")[-1], 20, "reconciled")
        stays(lambda: not resolved_twice(webhook), 5, "no resolution after a listener restart")
        assert both_listed(), status(sup)

        ready = sup.listener_output().count("lookout-listener ready")
        assert sup.ctl("reload").returncode == 0
        wait_for(lambda: sup.listener_output().count("lookout-listener ready") > ready, 40, "reloaded")
        d = feed_pid(sup, [a, b, c])
        wait_for(lambda: "reconciled" in sup.listener_output().split("lookout-listener ready")[-1], 20, "reconciled")
        stays(lambda: not resolved_twice(webhook), 5, "no resolution after a reload")
        assert both_listed(), status(sup)
        assert sup.proc.pid == third

        kill([a])  # one orphan gone, the other still runs: still open
        wait_for(lambda: gone(a), 10, "the first orphan gone")
        wait_for(lambda: f"ORPHAN pid {a}" not in status(sup), 20, "the first orphan no longer listed")
        assert f"ORPHAN pid {b} still runs" in status(sup)
        stays(lambda: not resolved_twice(webhook), 4, "still open while an orphan runs")

        kill([b])
        resolved = wait_for(lambda: resolved_twice(webhook), 20, "one resolved message once every orphan is gone")
        stays(lambda: len(resolved_twice(webhook)) == 1, 4, "exactly one resolved message")
        assert "feed" in resolved[0], resolved
        assert "ORPHAN" not in status(sup)
        assert sup.info("feed:feed")["pid"] == d
    finally:
        kill(left)
