"""Issue 7, acceptance 3, 4 and 5: a store that cannot be written, is locked, corrupt, deleted
or badly placed never silences lookout, and it is private."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import stat
import subprocess
import sys

import pytest

from .conftest import fast_alerts
from .harness import lookout_toml, stays, wait_for

# Three programs that crash once each when told to (a flag file), then stay up.
ON_CUE = """\
[program:c{i}]
command=sh -c 'if [ -f %(here)s/crashed.c{i} ]; then exec sleep 1000; fi;
    while [ ! -f %(here)s/go.c{i} ]; do sleep 0.1; done; touch %(here)s/crashed.c{i};
    echo "c{i} lost its upstream" >&2; exit 3'
startsecs=0
autorestart=true
"""
PROGRAMS = "\n".join(ON_CUE.format(i=i) for i in range(3))


def crash(sup, i: int) -> None:
    (sup.root / f"go.c{i}").touch()


def listener_runs_as(sup, pid: int) -> bool:
    info = sup.info("lookout:lookout")  # one answer: state and pid of the same moment
    return info["statename"] == "RUNNING" and info["pid"] == pid


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("unshare") or not shutil.which("nsenter"),
                    reason="needs root, unshare and nsenter for a private tmpfs")
@pytest.mark.long
def test_disk_full_holds_alerts_and_delivers_them_when_space_returns(supervisor_factory, webhook, tmp_path):
    state_dir = tmp_path / "s0" / "state"
    state_dir.mkdir(parents=True)
    wrapper = ["unshare", "--mount", "--propagation", "private", "sh", "-c",
               f'mount -t tmpfs -o size=3m tmpfs "{state_dir}" && exec "$@"', "sh"]
    sup = supervisor_factory(PROGRAMS, fast_alerts(webhook), wrapper=wrapper, state_path=state_dir / "lookout.db")
    sup.start()
    pid = sup.listener_pid()
    crash(sup, 0)
    webhook.wait("c0 crashed", timeout=20)

    def in_ns(*cmd: str) -> subprocess.CompletedProcess:
        return subprocess.run(["nsenter", "-t", str(sup.proc.pid), "-m", *cmd], capture_output=True, timeout=30)

    in_ns("dd", "if=/dev/zero", f"of={state_dir}/filler", "bs=64k")  # until the disk is full
    crash(sup, 1)
    crash(sup, 2)
    webhook.wait("cannot write its store", timeout=30)
    wait_for(lambda: "cannot write the store (disk full)" in sup.listener_output(), 10, "one log line")
    stays(lambda: listener_runs_as(sup, pid) and not webhook.matching("c1 crashed"), 5,
          "listener holding, never restarted, alerts held")
    assert sup.listener_output().count("cannot write the store (disk full)") == 1
    # A listener (re)started while the disk is full holds too, instead of BACKOFF and FATAL.
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: sup.listener_running_anew(pid), 20, "restarted")
    pid = sup.listener_pid()
    wait_for(lambda: sup.listener_output().count("cannot write the store (disk full)") == 2, 20, "holding again")
    stays(lambda: listener_runs_as(sup, pid), 12, "no BACKOFF, no FATAL while the disk is full")
    assert in_ns("rm", "-f", f"{state_dir}/filler").returncode == 0
    webhook.wait("c1 crashed", timeout=40)
    webhook.wait("c2 crashed", timeout=20)
    webhook.wait("can write its store again", timeout=20)
    assert listener_runs_as(sup, pid)
    assert "FATAL" not in sup.ctl("status", "lookout").stdout


@pytest.mark.long
def test_write_lock_held_for_40s(supervisor_factory, webhook):
    sup = supervisor_factory(PROGRAMS, fast_alerts(webhook)).start()
    pid = sup.listener_pid()
    holder = subprocess.Popen([sys.executable, "-c", f"""
import sqlite3, time
c = sqlite3.connect({str(sup.state_path)!r}, isolation_level=None)
c.execute("BEGIN EXCLUSIVE")
print("locked", flush=True)
time.sleep(40)
c.execute("ROLLBACK")
"""], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        crash(sup, 0)
        wait_for(lambda: "database is locked" in sup.listener_output(), 20, "the listener notices the lock")
        assert not webhook.matching("c0 crashed")
        holder.wait(60)
        webhook.wait("c0 crashed", timeout=40)
    finally:
        holder.kill()
    assert listener_runs_as(sup, pid)
    assert sup.listener_output().count("lookout-listener ready") == 1


def test_status_says_when_the_listener_cannot_write_its_store(supervisor_factory, webhook):
    """Another process holds the write lock: what status reads is the store as it was before, so
    it says so, and --check fails until the listener can write again (issue 21)."""
    sup = supervisor_factory(PROGRAMS, fast_alerts(webhook)).start()
    holder = subprocess.Popen([sys.executable, "-c", f"""
import sqlite3, sys
c = sqlite3.connect({str(sup.state_path)!r}, isolation_level=None)
c.execute("BEGIN EXCLUSIVE")
print("locked", flush=True)
sys.stdin.readline()
c.execute("ROLLBACK")
"""], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    def status(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "lookout", "-c", str(sup.config_path), "status", *args],
                              capture_output=True, text=True, timeout=60)

    try:
        assert holder.stdout.readline().strip() == "locked"
        crash(sup, 0)
        webhook.wait("cannot write its store", timeout=30)
        shown = status()
        stale = [line for line in shown.stdout.splitlines() if line.startswith("STORE ")]
        assert shown.returncode == 0 and len(stale) == 1, shown.stdout
        assert "cannot write its store" in stale[0] and "may be stale" in stale[0], stale
        assert status("--check").returncode == 1
        as_json = status("--json")
        assert as_json.returncode == 0 and "cannot write its store" in as_json.stderr
        assert {"c0", "c1", "c2"} <= {p["name"] for p in json.loads(as_json.stdout)}
        holder.stdin.write("\n")
        holder.stdin.flush()
        holder.wait(10)
        webhook.wait("can write its store again", timeout=40)
        assert not [line for line in status().stdout.splitlines() if line.startswith("STORE ")]
        wait_for(lambda: status("--check").returncode == 0, 30, "--check passes once the held alert resolved")
    finally:
        holder.kill()


def test_corrupt_store_is_moved_aside_with_one_alert(supervisor_factory, webhook):
    sup = supervisor_factory(PROGRAMS, fast_alerts(webhook))
    sup.state_path.write_bytes(b"this is not a database, it is a shopping list\n" * 200)
    sup.start()
    webhook.wait("replaced a corrupt store", timeout=20)
    aside = [p for p in sup.state_path.parent.iterdir() if p.name.startswith("lookout.db.corrupt-")]
    assert len(aside) == 1 and aside[0].read_bytes().startswith(b"this is not a database")
    crash(sup, 0)
    webhook.wait("c0 crashed", timeout=20)
    assert len(webhook.matching("replaced a corrupt store")) == 1


def unexpected_exits(sup, namespec: str) -> int | None:
    """None while the listener is still recreating the file (no tables yet)."""
    try:
        return (sup.process_row(namespec) or {}).get("unexpected_exits")
    except sqlite3.OperationalError:
        return None


def test_deleted_store_is_recreated_and_cli_silences_hold(supervisor_factory, webhook):
    sup = supervisor_factory(PROGRAMS, fast_alerts(webhook)).start()
    pid = sup.listener_pid()
    crash(sup, 0)
    webhook.wait("c0 crashed", timeout=20)
    for suffix in ("", "-wal", "-shm"):
        os.remove(f"{sup.state_path}{suffix}")
    wait_for(lambda: "deleted or replaced" in sup.listener_output(), 60, "the listener notices")
    wait_for(lambda: unexpected_exits(sup, "c0:c0") == 1, 20, "counters rewritten into the new store")
    crash(sup, 1)
    webhook.wait("c1 crashed", timeout=20)
    out = subprocess.run([sys.executable, "-m", "lookout.listener", "-c", str(sup.config_path), "silence", "c2:*",
                          "--for", "10m"], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    crash(sup, 2)
    wait_for(lambda: unexpected_exits(sup, "c2:c2") == 1, 20, "c2 crash seen")
    stays(lambda: not webhook.matching("c2"), 4, "the silence holds")
    assert listener_runs_as(sup, pid)


def test_store_is_private(supervisor_factory, webhook, tmp_path):
    state = tmp_path / "new" / "lookout" / "lookout.db"
    sup = supervisor_factory(PROGRAMS, fast_alerts(webhook), state_path=state).start()
    crash(sup, 0)
    webhook.wait("c0 crashed", timeout=20)
    assert stat.S_IMODE(state.parent.stat().st_mode) == 0o700
    for suffix in ("", "-wal", "-shm"):
        path = f"{state}{suffix}"
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600, path
    # An existing world-readable store from an older version is made private too.
    older = tmp_path / "older.db"
    sqlite3.connect(older).close()
    os.chmod(older, 0o644)
    from lookout.listener.store.schema import connect

    connect(str(older)).close()
    assert stat.S_IMODE(older.stat().st_mode) == 0o600


def check_config(tmp_path, state_path: str) -> subprocess.CompletedProcess:
    toml = tmp_path / "lookout.toml"
    toml.write_text(lookout_toml({"state": {"path": state_path},
                                  "supervisor": {"serverurl": "unix:///nonexistent/lookout.sock"}}))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SUPERVISOR_", "LOOKOUT_"))}
    return subprocess.run([sys.executable, "-m", "lookout.listener", "-c", str(toml), "--check-config"],
                          capture_output=True, text=True, timeout=60, env=env)


@pytest.mark.parametrize("case", ["directory", "unwritable", "corrupt", "empty"])
def test_check_config_refuses_unusable_stores(tmp_path, case):
    if case == "directory":
        path, needle = str(tmp_path), "is a directory"
    elif case == "unwritable":
        (tmp_path / "plainfile").write_text("x")
        path, needle = str(tmp_path / "plainfile" / "lookout.db"), "not a directory"
    elif case == "corrupt":
        (tmp_path / "bad.db").write_bytes(b"garbage" * 1000)
        path, needle = str(tmp_path / "bad.db"), "not a usable SQLite database"
    else:
        path, needle = "", "must not be empty"
    result = check_config(tmp_path, path)
    assert result.returncode == 2, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "state.path" in lines[0] and needle in lines[0], lines
    assert "Traceback" not in result.stderr


def test_check_config_refuses_a_read_only_directory(tmp_path):
    if not shutil.which("unshare") or os.geteuid() != 0:
        pytest.skip("root ignores file modes; a read-only bind mount needs unshare")
    ro = tmp_path / "ro"
    ro.mkdir()
    toml = tmp_path / "lookout.toml"
    toml.write_text(lookout_toml({"state": {"path": str(ro / "lookout.db")},
                                  "supervisor": {"serverurl": "unix:///nonexistent/lookout.sock"}}))
    script = f'mount --bind "{ro}" "{ro}" && mount -o remount,bind,ro "{ro}" && exec "$@"'
    result = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh",
                             sys.executable, "-m", "lookout.listener", "-c", str(toml), "--check-config"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "state.path" in result.stderr and "not writable" in result.stderr
