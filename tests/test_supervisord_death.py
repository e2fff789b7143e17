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


def test_supervisord_killed_names_its_orphans_and_a_clean_end_says_nothing(supervisor_factory, webhook):
    sup = supervisor_factory(FIVE, fast_alerts(webhook)).start()
    wait_for(lambda: len([p for p in program_pids(sup).values() if p]) == 5, 20, "five programs")
    pids = program_pids(sup)
    wait_for(lambda: running_in_store(sup, [f"p{i}" for i in range(5)]), 20, "starts")
    try:
        sup.proc.kill()  # SIGKILL: no shutdown, the programs keep running
        sup.proc.wait(10)
        died = webhook.wait("died without shutting down", timeout=5)
        assert len(died) == 1 and died[0].title.startswith("[CRITICAL]"), [m.title for m in webhook.messages]
        for name, pid in pids.items():
            assert f"{name} (pid {pid})" in died[0].body, died[0].body
        assert "5 program(s) were still running unsupervised then" in died[0].body
    finally:
        kill(pids.values())
    sup.invariants = False  # nothing runs any more that could write the store

    for how in ("shutdown", "reload"):
        hook_before = len(webhook.messages)
        other = supervisor_factory(FIVE, fast_alerts(webhook)).start()
        wait_for(lambda other=other: len([p for p in program_pids(other).values() if p]) == 5, 20, "five programs")
        assert other.ctl(how).returncode == 0
        if how == "reload":
            wait_for(lambda other=other: other.listener_output().count("lookout-listener ready") >= 2, 40, "reloaded")
        else:
            other.proc.wait(30)
        stays(lambda n=hook_before: len(webhook.messages) == n, 4, f"nothing after a clean {how}")


def test_supervisord_back_after_an_unclean_end_finds_what_runs_twice(supervisor_factory, webhook):
    sup = supervisor_factory(FIVE, fast_alerts(webhook)).start()
    wait_for(lambda: running_in_store(sup, [f"p{i}" for i in range(5)]), 20, "starts")
    orphans = program_pids(sup)
    try:
        sup.proc.kill()
        sup.proc.wait(10)
        webhook.wait("died without shutting down", timeout=10)
        sup.start()  # the same config, the orphans still running
        back = webhook.wait("is back after an unclean end", timeout=30)
        assert len(back) == 1 and "last heard from at" in back[0].body and "gone for" in back[0].body
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
        sup.proc.kill()
        sup.proc.wait(10)
        died = webhook.wait("died without shutting down", timeout=10)[0].body
        assert "5 program(s) were still running" in died and f"lookout-exporter (pid {old_exporter}) serves" in died
        wait_for(lambda: "supervisord_up 0" in urllib.request.urlopen(url, timeout=5).read().decode(), 20,
                 "the orphaned exporter says supervisord is down")
        sup.start()
        webhook.wait("runs twice", timeout=30)
        wait_for(lambda: sup.info("lookout-exporter:lookout-exporter")["statename"] == "RUNNING"
                 and sup.info("lookout-exporter:lookout-exporter")["pid"] != old_exporter, 30, "the new exporter")
        wait_for(lambda: "supervisord_up 1" in urllib.request.urlopen(url, timeout=5).read().decode(), 20,
                 "the new exporter answers")
        with pytest.raises(ProcessLookupError):
            os.kill(old_exporter, 0)
        stays(lambda: sup.info("lookout-exporter:lookout-exporter")["statename"] == "RUNNING", 2, "it stays up")
        assert not webhook.entries_for("lookout-exporter:lookout-exporter"), sup.listener_output()
    finally:
        kill(orphans.values())
        with contextlib.suppress(ProcessLookupError):
            os.kill(old_exporter, signal.SIGKILL)


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
    url = f"http://127.0.0.1:{server.server_address[1]}/ping/5f0b9c2e-lookout-test"
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
        wait_for(lambda: calls.count("/ping/5f0b9c2e-lookout-test") >= 3, 15, "a call every interval while healthy")
        assert not any(c.endswith("/fail") for c in calls)
        subprocess.run(["nsenter", "-t", str(sup.proc.pid), "-m", "dd", "if=/dev/zero",
                        f"of={state_dir}/filler", "bs=64k"], capture_output=True, timeout=30)
        (sup.root / "crash").touch()
        os.kill(sup.info("c:c")["pid"], signal.SIGKILL)  # an event the listener cannot commit
        wait_for(lambda: calls.count("/ping/5f0b9c2e-lookout-test/fail") >= 2, 30, "the fail form while degraded")
        subprocess.run(["nsenter", "-t", str(sup.proc.pid), "-m", "rm", "-f", f"{state_dir}/filler"],
                       capture_output=True, timeout=30)
        wait_for(lambda: calls[-1] == "/ping/5f0b9c2e-lookout-test", 30, "healthy calls again")
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
    from lookout.listener.config.load import parse_config
    from lookout.listener.lifecycle import Lifecycle
    from lookout.listener.rules.models import ProcessRecord

    records = [ProcessRecord("feed", "feed", state="STARTING"), ProcessRecord("risk", "risk", state="STOPPED")]
    meta, message = Lifecycle(parse_config({}), "lookout:lookout").gone(records, False, 4_000_000, 1e9)
    assert meta["supervisord_end"] == "unclean" and message is not None
    assert "None of the programs whose pids lookout knew was still running." in message[2]
    assert "Starting then, their pids not yet known to lookout (they may be running too): feed." in message[2]
    assert "risk" not in message[2]
