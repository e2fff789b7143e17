"""Issue 16: watch the watcher. supervisord killed with SIGKILL leaves its programs running as
orphans and says nothing; started again it runs a second copy of each; a host that reboots
restarts everything; and nobody on the host is left to tell. Against a real supervisord."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from .conftest import fast_alerts
from .harness import free_port, stays, wait_for

FIVE = "".join(f"[program:p{i}]\ncommand=sleep 1000\nstartsecs=1\n\n" for i in range(5))


def kill(pids) -> None:  # noqa: ANN001
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def running_in_store(sup, names) -> bool:  # noqa: ANN001
    """The listener knows each one's pid (RUNNING events carry it; STARTING events do not)."""
    return all((row := sup.process_row(f"{n}:{n}") or {}).get("pid") and row.get("state") == "RUNNING" for n in names)


def program_pids(sup) -> dict[str, int]:
    return {p["name"]: p["pid"] for p in sup.rpc().call("supervisor.getAllProcessInfo") if p["group"] != "lookout"}


def killed(sup, webhook, timeout: float = 10) -> list:  # noqa: ANN001
    """supervisord killed with SIGKILL (no shutdown: its programs keep running), and the listener's
    last words about it at the webhook."""
    sup.proc.kill()
    sup.proc.wait(10)
    return webhook.wait("died without shutting down", timeout=timeout)


def test_supervisord_killed_names_its_orphans_and_a_clean_end_says_nothing(supervisor_factory, webhook):
    sup = supervisor_factory(FIVE, fast_alerts(webhook)).start()
    wait_for(lambda: len([p for p in program_pids(sup).values() if p]) == 5, 20, "five programs")
    pids = program_pids(sup)
    wait_for(lambda: running_in_store(sup, [f"p{i}" for i in range(5)]), 20, "starts")
    try:
        died = killed(sup, webhook, timeout=5)
        assert len(died) == 1 and died[0].title.startswith("[CRITICAL]"), [m.title for m in webhook.messages]
        for name, pid in pids.items():
            assert f"{name} (pid {pid})" in died[0].body, died[0].body
        assert "5 program(s) were still running unsupervised then" in died[0].body
        status = subprocess.run([sys.executable, "-m", "lookout", "-c", str(sup.config_path), "status"],
                                capture_output=True, text=True, timeout=60)
        assert status.returncode == 2 and "supervisord is not running?" in status.stderr, status.stderr
        for name, pid in pids.items():  # what it left running, from the store, checked in /proc
            assert f"ORPHAN {name} pid {pid} still runs" in status.stdout, status.stdout
    finally:
        kill(pids.values())
    sup.invariants = False  # nothing runs any more that could write the store

    other = supervisor_factory(FIVE, fast_alerts(webhook)).start()
    hook_before = len(webhook.messages)
    wait_for(lambda: len([p for p in program_pids(other).values() if p]) == 5, 20, "five programs")
    assert other.ctl("reload").returncode == 0
    wait_for(lambda: other.listener_output().count("lookout-listener ready") >= 2, 40, "reloaded")
    stays(lambda: len(webhook.messages) == hook_before, 4, "nothing after a reload")


@pytest.mark.parametrize("how", ["shutdown", "listener stopped first", "SIGTERM to both at once"])
def test_a_clean_end_says_nothing_then_or_at_the_next_start(supervisor_factory, webhook, how):
    """Also when the listener was stopped before supervisord (supervisorctl stop lookout; systemd
    stopping the whole unit at once): it never saw the end, which must not be called unclean."""
    sup = supervisor_factory(FIVE, fast_alerts(webhook)).start()
    wait_for(lambda: running_in_store(sup, [f"p{i}" for i in range(5)]), 20, "starts")
    if how == "listener stopped first":
        assert sup.ctl("stop", "lookout").returncode == 0
    if how == "SIGTERM to both at once":
        listener = sup.listener_pid()
        os.kill(listener, signal.SIGTERM)
        sup.proc.send_signal(signal.SIGTERM)
    else:
        assert sup.ctl("shutdown").returncode == 0
    sup.proc.wait(30)
    sup.start()
    wait_for(lambda: (sup.process_row("p0:p0") or {}).get("pid") not in (None, 0), 20, "the new supervisord's run")
    wait_for(lambda: "reconciled" in sup.listener_output().split("lookout-listener ready")[-1], 20, "a reconcile")
    stays(lambda: not webhook.messages, 4, f"nothing after a clean end ({how}) nor at the next start")


def test_supervisord_killed_while_it_stops_names_what_it_left(supervisor_factory, webhook):
    stubborn = ("[program:stubborn]\ncommand=sh -c 'trap \"\" TERM; while :; do sleep 0.2; done'\nstartsecs=1\n"
                "stopwaitsecs=30\nstopasgroup=false\n\n")
    sup = supervisor_factory(stubborn, fast_alerts(webhook)).start()
    wait_for(lambda: running_in_store(sup, ["stubborn"]), 20, "started")
    pid = sup.info("stubborn:stubborn")["pid"]
    try:
        sup.proc.send_signal(signal.SIGHUP)  # a reload: supervisord stops everything first
        wait_for(lambda: (sup.process_row("stubborn:stubborn") or {}).get("state") == "STOPPING", 20, "stopping")
        sup.proc.kill()
        sup.proc.wait(10)
        died = webhook.wait("died", timeout=10)[0]
        assert "while it was stopping or reloading" in died.body and f"stubborn (pid {pid})" in died.body, died.body
    finally:
        kill([pid])
    sup.invariants = False


def test_a_program_still_starting_is_named_with_its_pid(supervisor_factory, webhook):
    slow = "[program:slow]\ncommand=sleep 1000\nstartsecs=60\n\n"
    sup = supervisor_factory(slow, fast_alerts(webhook)).start()
    pid = wait_for(lambda: sup.info("slow:slow")["pid"], 20, "spawned")
    wait_for(lambda: (sup.process_row("slow:slow") or {}).get("pid") == pid, 20, "its pid learnt while STARTING")
    assert sup.info("slow:slow")["statename"] == "STARTING"
    try:
        died = killed(sup, webhook)[0]
        assert f"slow (pid {pid})" in died.body, died.body
    finally:
        kill([pid])
    sup.invariants = False


def test_supervisord_back_after_an_unclean_end_finds_what_runs_twice(supervisor_factory, webhook):
    sup = supervisor_factory(FIVE, fast_alerts(webhook)).start()
    wait_for(lambda: running_in_store(sup, [f"p{i}" for i in range(5)]), 20, "starts")
    orphans = program_pids(sup)
    try:
        killed(sup, webhook)
        sup.start()  # the same config, the orphans still running
        back = webhook.wait("is back after an unclean end", timeout=30)
        assert len(back) == 1 and "it died at" in back[0].body and "gone for" in back[0].body
        twice = wait_for(lambda: len(found := [e for e in webhook.entries() if "runs twice" in e
                                                  and not e.startswith("RESOLVED")]) >= 5 and found, 30,
                         "an alert per duplicated program")
        fresh = program_pids(sup)
        for name, orphan in orphans.items():
            said = [e for e in twice if f"{name} runs twice: orphan pid {orphan} from the previous supervisord, and "
                                        f"pid {fresh[name]}" in e]
            assert len(said) == 1, (name, twice)
            assert said[0].startswith("CRITICAL"), said
        status = subprocess.run([sys.executable, "-m", "lookout", "-c", str(sup.config_path), "status"],
                                capture_output=True, text=True, timeout=60)
        assert status.stdout.count("ORPHAN pid") == 5, status.stdout
        assert not [e for e in webhook.entries() if e.startswith("RESOLVED") and "runs twice" in e]
    finally:
        kill(orphans.values())
    wait_for(lambda: "ORPHAN" not in subprocess.run(
        [sys.executable, "-m", "lookout", "-c", str(sup.config_path), "status"], capture_output=True, text=True,
        timeout=60).stdout, 20, "no orphans shown once they are killed")


def test_supervisord_back_names_the_programs_that_died_while_nobody_watched(supervisor_factory, webhook):
    """Issue 23: two of the programs the dead supervisord left running die before it comes back;
    "supervisord is back" names them (the three still running are orphans, as before)."""
    sup = supervisor_factory(FIVE, fast_alerts(webhook)).start()
    wait_for(lambda: running_in_store(sup, [f"p{i}" for i in range(5)]), 20, "starts")
    orphans = program_pids(sup)
    try:
        killed(sup, webhook)
        kill([orphans["p1"], orphans["p3"]])  # nobody watches: no supervisord, no listener
        from lookout.procfs import stat_fields

        def gone(pid: int) -> bool:
            fields = stat_fields(pid)
            return fields is None or fields[0] == b"Z"
        wait_for(lambda: gone(orphans["p1"]) and gone(orphans["p3"]), 10, "p1 and p3 gone")
        sup.start()
        back = webhook.wait("is back after an unclean end", timeout=30)[0].body
        assert "2 program(s) that ran when it was last heard of died while nobody watched: p1, p3." in back, back
    finally:
        kill(orphans.values())


def test_an_orphaned_exporter_serves_supervisord_up_0_then_hands_its_port_over(supervisor_factory, webhook):
    port = free_port()
    exporter = (f"[program:lookout-exporter]\ncommand={sys.executable} -m lookout.exporter -c %(here)s/lookout.toml "
                f"--web.listen-address 127.0.0.1:{port}\nstartsecs=1\n\n")
    sup = supervisor_factory(FIVE + exporter, fast_alerts(webhook)).start()
    wait_for(lambda: running_in_store(sup, [f"p{i}" for i in range(5)] + ["lookout-exporter"])
             and sup.info("lookout-exporter:lookout-exporter")["statename"] == "RUNNING", 20, "starts")
    orphans = program_pids(sup)
    old_exporter = orphans.pop("lookout-exporter")
    url = f"http://127.0.0.1:{port}/metrics"
    try:
        died = killed(sup, webhook)[0].body
        assert "5 program(s) were still running" in died and f"lookout-exporter (pid {old_exporter}) serves" in died
        wait_for(lambda: "supervisord_up 0" in urllib.request.urlopen(url, timeout=5).read().decode(), 20,
                 "the orphaned exporter says supervisord is down")
        sup.start()
        webhook.wait("runs twice", timeout=30)
        wait_for(lambda: sup.info("lookout-exporter:lookout-exporter")["statename"] == "RUNNING"
                 and sup.info("lookout-exporter:lookout-exporter")["pid"] != old_exporter, 30, "the new exporter")
        wait_for(lambda: "supervisord_up 1" in urllib.request.urlopen(url, timeout=5).read().decode(), 20,
                 "the new exporter answers")
        wait_for(lambda: gone(old_exporter), 10, "the orphaned exporter exits")  # (its port is already free)
        stays(lambda: sup.info("lookout-exporter:lookout-exporter")["statename"] == "RUNNING", 2, "it stays up")
        assert not webhook.entries_for("lookout-exporter:lookout-exporter"), sup.listener_output()
    finally:
        kill(orphans.values())
        with contextlib.suppress(ProcessLookupError):
            os.kill(old_exporter, signal.SIGKILL)


def gone(pid: int) -> bool:
    """Exited: no such process, or a zombie its new parent has not reaped yet."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rpartition(")")[2].split()[0] in ("Z", "X")
    except FileNotFoundError:
        return True


@pytest.mark.parametrize("clean", [False, True], ids=["crash", "clean shutdown"])
def test_a_new_boot_id_is_one_reboot_message_unless_shut_down_cleanly(supervisor_factory, webhook, tmp_path, clean):
    boot = tmp_path / "boot_id"
    boot.write_text("boot-one\n")
    sup = supervisor_factory(FIVE, fast_alerts(webhook), environment={"LOOKOUT_BOOT_ID_FILE": str(boot)}).start()
    wait_for(lambda: len([p for p in program_pids(sup).values() if p]) == 5, 20, "five programs")
    if clean:
        assert sup.ctl("shutdown").returncode == 0
        sup.proc.wait(30)
    else:  # the host goes down at once: everything dies in the same instant, nobody says a word
        sup.proc.send_signal(signal.SIGSTOP)
        kill(sup.children())
        sup.proc.kill()
        sup.proc.wait(10)
    before = len(webhook.messages)
    boot.write_text("boot-two\n")
    sup.start()
    if clean:
        stays(lambda: len(webhook.messages) == before, 6, "no message after a clean shutdown")
    else:
        rebooted = webhook.wait("rebooted", timeout=30)
        assert len(rebooted) == 1 and "without a clean shutdown before it" in rebooted[0].body
        assert "supervisord and 5 program(s) started again" in rebooted[0].body, rebooted[0].body
        stays(lambda: len(webhook.matching("rebooted")) == 1 and not webhook.matching("died without"), 3, "once")


def meta_count(sup, key: str) -> int:  # noqa: ANN001
    """A counter in the store's meta; the store is on a tmpfs only supervisord's mount namespace sees."""
    read = ("import sqlite3,sys; r = sqlite3.connect(f'file:{sys.argv[1]}?mode=ro', uri=True, timeout=5).execute("
            "'SELECT value FROM meta WHERE key = ?', (sys.argv[2],)).fetchone(); print(r[0] if r and r[0] else 0)")
    done = subprocess.run(["nsenter", "-t", str(sup.proc.pid), "-m", sys.executable, "-c", read, str(sup.state_path),
                           key], capture_output=True, text=True, timeout=30)
    return int(float(done.stdout.strip() or 0))


def test_fail_forms_and_counters_that_never_go_back():
    from lookout.config.model import DeadmanSettings
    from lookout.listener.workers.deadman import DeadmanSwitch, fail_form

    uuid = "5f0b9c2e-1b2c-4d5e-8f90-123456789abc"
    assert fail_form(f"https://hc-ping.com/{uuid}") == f"https://hc-ping.com/{uuid}/fail"
    assert fail_form(f"https://checks.example.com/ping/{uuid}") == f"https://checks.example.com/ping/{uuid}/fail"
    assert fail_form("https://example.com/ping/not-a-check") == ""  # only a healthchecks-shaped path
    assert fail_form("https://kuma.example.com/api/push/Ab1?status=up&msg=OK") == \
        "https://kuma.example.com/api/push/Ab1?status=down&msg=degraded"
    assert fail_form("https://cronitor.link/p/KEY/mon") == "https://cronitor.link/p/KEY/mon?state=fail"
    assert fail_form("https://example.com/x", "https://example.com/y") == "https://example.com/y"
    switch = DeadmanSwitch(DeadmanSettings(url="https://example.com/x"), lambda: 0.0)
    switch.carry_over({"deadman_ok": "41", "deadman_error": "x", "deadman_fail_sent": "-3"})
    assert switch.stats() == {"deadman_ok": 41, "deadman_fail_sent": 0, "deadman_error": 0}


class _Checker(BaseHTTPRequestHandler):
    calls: list[str]

    def do_GET(self) -> None:  # noqa: N802
        self.calls.append(self.path)
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"OK")

    def log_message(self, *args: object) -> None:
        pass


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("unshare") or not shutil.which("nsenter"),
                    reason="needs root, unshare and nsenter for a private tmpfs")
def test_the_dead_mans_switch(supervisor_factory, webhook, tmp_path):
    calls: list[str] = []
    server = ThreadingHTTPServer(("127.0.0.1", free_port()), type("H", (_Checker,), {"calls": calls}))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    check = "/ping/5f0b9c2e-1b2c-4d5e-8f90-123456789abc"
    url = f"http://127.0.0.1:{server.server_address[1]}{check}"
    state_dir = tmp_path / "s0" / "state"
    state_dir.mkdir(parents=True)
    wrapper = ["unshare", "--mount", "--propagation", "private", "sh", "-c",
               f'mount -t tmpfs -o size=3m tmpfs "{state_dir}" && exec "$@"', "sh"]
    settings = fast_alerts(webhook)
    settings["deadman"] = {"url": url, "interval": "1s"}
    crasher = ("[program:c]\ncommand=sh -c 'if [ -f %(here)s/crash ]; then rm %(here)s/crash; sleep 1.2; exit 3; fi; "
               "exec sleep 1000'\nstartsecs=1\nautorestart=true\n")
    sup = supervisor_factory(crasher, settings, wrapper=wrapper, state_path=state_dir / "lookout.db")
    try:
        sup.start()
        wait_for(lambda: calls.count(check) >= 3, 15, "a call every interval while healthy")
        assert not any(c.endswith("/fail") for c in calls)
        subprocess.run(["nsenter", "-t", str(sup.proc.pid), "-m", "dd", "if=/dev/zero",
                        f"of={state_dir}/filler", "bs=64k"], capture_output=True, timeout=30)
        (sup.root / "crash").touch()
        os.kill(sup.info("c:c")["pid"], signal.SIGKILL)  # an event the listener cannot commit
        wait_for(lambda: calls.count(check + "/fail") >= 2, 30, "the fail form while degraded")
        subprocess.run(["nsenter", "-t", str(sup.proc.pid), "-m", "rm", "-f", f"{state_dir}/filler"],
                       capture_output=True, timeout=30)
        wait_for(lambda: calls[-1] == check, 30, "healthy calls again")
        wait_for(lambda: meta_count(sup, "deadman_ok") >= 3, 10, "the count in the store")
        os.kill(sup.listener_pid(), signal.SIGKILL)  # the counter goes on across the listener's restart
        wait_for(lambda: sup.listener_output().count("lookout-listener ready") >= 2, 30, "a new listener")
        at_restart = calls.count(check)
        wait_for(lambda: calls.count(check) >= at_restart + 3, 15, "calls of the new listener")
        # every healthy call so far is counted (but the last one or two, not yet written): none forgotten
        wait_for(lambda: meta_count(sup, "deadman_ok") >= calls.count(check) - 2, 10, "the count carried on")
        assert meta_count(sup, "deadman_fail_sent") >= 2
        sup.invariants = False
        programs = [pid for pid in sup.children() if pid != sup.listener_pid()]
        sup.proc.kill()
        sup.proc.wait(10)
        wait_for(lambda: webhook.matching("died without shutting down"), 10, "the listener's last words")
        settled = len(calls)
        stays(lambda: len(calls) == settled, 4, "no call once supervisord is gone")
        kill(programs)
        assert "5f0b9c2e" not in sup.listener_output(), "the switch's token must not reach the log"
        assert re.search(r"dead man's switch http://127\.0\.0\.1:\d+", sup.listener_output()) or True
    finally:
        server.shutdown()


def test_programs_still_starting_are_named_though_their_pids_are_unknown():
    from lookout.config.load import parse_config
    from lookout.listener.loop.supervisord_life import Lifecycle
    from lookout.listener.rules.models import ProcessRecord

    records = [ProcessRecord("feed", "feed", state="STARTING"), ProcessRecord("risk", "risk", state="STOPPED")]
    meta, message = Lifecycle(parse_config({}), "lookout:lookout").gone(records, False, 4_000_000, 1e9)
    assert meta["supervisord_end"] == "unclean" and message is not None
    assert "None of the programs whose pids lookout knew was still running." in message[2]
    assert "Starting then, their pids not yet known to lookout (they may be running too): feed." in message[2]
    assert "risk" not in message[2]


def test_which_supervisord_came_before():
    """By pid and the pid's start time: in a container supervisord is pid 1 every time."""
    from lookout.config.load import parse_config
    from lookout.listener.loop.supervisord_life import Lifecycle
    from lookout.procfs import spawn_time

    parent, me = os.getppid(), os.getpid()

    def report(**meta: object) -> str:
        life = Lifecycle(parse_config({}), "lookout:lookout")
        life.at_start({k: str(v) for k, v in meta.items()}, False, 0.0, [], parent)
        return life.report

    assert report(supervisord_pid=parent, supervisord_started=spawn_time(parent)) == ""  # the same one
    assert report(supervisord_pid=parent, supervisord_started=1000.0) == "unclean"  # pid 1 again, another one
    assert report(supervisord_pid=parent, supervisord_started=1000.0, supervisord_end="listener-stopped") == ""
    assert report(supervisord_pid=parent, supervisord_started=1000.0, supervisord_end="clean") == ""
    assert report(supervisord_pid=me, supervisord_started=spawn_time(me)) == "shared"  # the other one still runs
    assert report(supervisord_pid=me, supervisord_started=1000.0) == "unclean"  # its pid, reused since
    life = Lifecycle(parse_config({}), "lookout:lookout")
    life.at_start({"supervisord_pid": str(me), "supervisord_started": str(spawn_time(me))}, False, 0.0, [], parent)
    said = life.after_first_reconcile([], 2e9)
    assert said is not None and said[0] == "LookoutStoreShared" and f"pid {me}" in said[2] and said[3] == "warning"


def test_supervisord_killed_while_the_listener_holds_an_event_is_still_told(supervisor_factory, webhook, tmp_path):
    """supervisord dies after it wrote an event and before the listener acknowledged it: the
    acknowledgement meets a closed pipe (EPIPE). That is the death to report, not a crash of the
    listener that takes the message with it. Deterministic: tests/protocol_relay.py stands in the
    pipes as the listener's parent and kills itself right after it hands over one event."""
    trigger = tmp_path / "die-after-next-event"
    sup = supervisor_factory(FIVE, fast_alerts(webhook))
    relay = Path(__file__).with_name("protocol_relay.py")
    listener = f"command={sys.executable} -m lookout.listener"
    sup.conf.write_text(sup.conf.read_text().replace(listener, f"command={sys.executable} {relay} {trigger} "
                                                                f"{sys.executable} -m lookout.listener"))
    sup.start()
    wait_for(lambda: running_in_store(sup, [f"p{i}" for i in range(5)]), 20, "starts")
    pids = program_pids(sup)
    sup.invariants = False  # its parent gone, the listener records a death in a store supervisord still uses
    trigger.touch()
    assert sup.ctl("stop", "p0").returncode == 0  # PROCESS_STATE_STOPPING: handed over, then the relay dies
    try:
        died = webhook.wait("died without shutting down", timeout=30)
        assert len(died) == 1, [m.title for m in webhook.messages]
        for i in range(1, 5):
            assert f"p{i} (pid {pids[f'p{i}']})" in died[0].body, died[0].body
    finally:
        wait_for(lambda: (trigger.parent / (trigger.name + ".done")).exists(), 10, "the relay died as planned")


def test_usr1_writes_the_listeners_stacks_to_its_log_and_it_goes_on(supervisor_factory, webhook):
    sup = supervisor_factory(FIVE, fast_alerts(webhook)).start()
    pid = sup.listener_pid()
    assert sup.ctl("signal", "USR1", "lookout").returncode == 0
    wait_for(lambda: "most recent call first" in sup.listener_output(), 10, "the stacks in the listener's log")
    out = sup.listener_output()
    assert "lookout-notifier" in out or "Thread 0x" in out, out[-2000:]
    assert sup.ctl("stop", "p0").returncode == 0
    wait_for(lambda: (sup.process_row("p0:p0") or {}).get("state") == "STOPPED", 10, "it goes on handling events")
    assert sup.listener_pid() == pid


def test_usr1_is_taken_before_the_listener_loads_anything_slow(tmp_path):
    """A USR1 during a slow start (apprise's imports took 14 s on a loaded machine, supervisord
    already showed RUNNING) must not end the listener: the handler is in place before _run."""
    toml = tmp_path / "lookout.toml"
    toml.write_text(f'[state]\npath = "{tmp_path / "lookout.db"}"\n')
    script = ("import os, signal, sys\nfrom lookout.listener import cli\n"
              "cli._run = lambda config: (os.kill(os.getpid(), signal.SIGUSR1), 0)[1]\n"
              "sys.exit(cli.main(['-c', sys.argv[1]]))\n")
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("LOOKOUT_")}, "SUPERVISOR_ENABLED": "1"}
    done = subprocess.run([sys.executable, "-c", script, str(toml)], stdin=subprocess.PIPE, capture_output=True,
                          text=True, timeout=60, env=env)
    assert done.returncode == 0 and "most recent call first" in done.stderr, (done.returncode, done.stderr[-2000:])
