"""Issue 21, case 6: the disk under the store is full, a crash is held, then supervisord is killed
-9. The death message (its orphans, the held crash) goes straight from memory to every target;
"cannot write its store" gets its end, when the store is writable again or at the next start;
a target that missed the death message gets it late from the next listener. Real supervisord,
the store on a 3 MB tmpfs in a private mount namespace (as tests/test_store_faults.py)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys

import pytest

from .conftest import fast_alerts
from .harness import stays, wait_for
from .test_store_faults import ON_CUE, crash
from .test_supervisord_death import gone, kill
from .test_supervisord_death import running_in_store as known_running

FEED = "[program:feed]\ncommand=sh -c 'trap \"\" HUP; exec sleep 1000'\nstartsecs=1\n\n"

private_tmpfs = pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("unshare") or not shutil.which("nsenter"),
                                   reason="needs root, unshare and nsenter for a private tmpfs")


def in_ns(pid: int, *cmd: str) -> subprocess.CompletedProcess:
    """A command in the mount namespace of `pid` (the tmpfs is seen there only)."""
    return subprocess.run(["nsenter", "-t", str(pid), "-m", *cmd], capture_output=True, timeout=30)


def running_in_store(sup, names: list[str]) -> bool:  # noqa: ANN001
    """The listener knows each one RUNNING with its pid (read in supervisord's mount namespace)."""
    read = ("import sqlite3,sys; c = sqlite3.connect(f'file:{sys.argv[1]}?mode=ro', uri=True, timeout=5); "
            "print(sum(1 for n in sys.argv[2:] if (r := c.execute('SELECT state, pid FROM processes WHERE namespec "
            "= ?', (f'{n}:{n}',)).fetchone()) and r[0] == 'RUNNING' and r[1]))")
    done = in_ns(sup.proc.pid, sys.executable, "-c", read, str(sup.state_path), *names)
    return done.stdout.strip() == str(len(names)).encode()


@private_tmpfs
@pytest.mark.parametrize("case", ["disk freed before the next start", "disk still full at the next start",
                                  "target down at the death"])
def test_disk_full_then_supervisord_killed(supervisor_factory, webhook, tmp_path, case):
    state_dir = tmp_path / "s0" / "state"
    state_dir.mkdir(parents=True)
    wrapper = ["unshare", "--mount", "--propagation", "private", "sh", "-c",
               f'mount -t tmpfs -o size=3m tmpfs "{state_dir}" && exec "$@"', "sh"]
    sup = supervisor_factory(FEED + ON_CUE.format(i=1), fast_alerts(webhook), wrapper=wrapper,
                             state_path=state_dir / "lookout.db").start()
    left: list[int] = []
    try:
        wait_for(lambda: running_in_store(sup, ["feed", "c1"]), 20, "feed and c1 running")
        feed, c1 = sup.info("feed:feed")["pid"], sup.info("c1:c1")["pid"]
        left.append(feed)
        first = sup.proc.pid
        in_ns(first, "dd", "if=/dev/zero", f"of={state_dir}/filler", "bs=64k")  # until the disk is full
        crash(sup, 1)  # its exit is an event the listener cannot commit: held
        webhook.wait("cannot write its store", timeout=30)
        wait_for(lambda: sup.info("c1:c1")["statename"] == "RUNNING" and sup.info("c1:c1")["pid"] != c1, 20,
                 "supervisord restarted c1 (the listener still holds its exit)")
        left.append(sup.info("c1:c1")["pid"])
        listener = sup.listener_pid()
        if case == "target down at the death":
            webhook.fail_status = 503
        sup.proc.kill()
        sup.proc.wait(10)

        if case == "target down at the death":  # (its log went to supervisord's pipe: its exit is what we see)
            wait_for(lambda: webhook.failed_attempts >= 1 and gone(listener), 30, "the death message refused")
            webhook.fail_status = 0
        else:
            died = webhook.wait("died without shutting down", timeout=20)
            assert len(died) == 1, [m.title for m in webhook.messages]
            body = died[0].body
            assert f"feed (pid {feed})" in body, body  # its orphan, from memory
            assert "this message comes straight from the listener's memory" in body, body
            assert "Held back, neither in its store nor sent yet" in body and "c1 crashed at" in body, body
            assert "can write its store again" not in "".join(m.title for m in webhook.messages)

        status = in_ns(feed, sys.executable, "-m", "lookout", "-c", str(sup.config_path), "status")
        assert status.returncode == 2, status.stderr  # supervisord is down; its orphans, from the sidecar:
        assert f"ORPHAN feed pid {feed} still runs, left by supervisord pid {first}, which died at".encode() \
            in status.stdout, status.stdout
        if case != "disk still full at the next start":
            assert in_ns(feed, "rm", "-f", f"{state_dir}/filler").returncode == 0
        sup.wrapper = ["nsenter", "-t", str(feed), "-m"]  # the orphans keep the namespace and its tmpfs
        sup.start()
        if case == "disk still full at the next start":
            wait_for(lambda: sup.listener_output().count("cannot write the store (disk full)") == 2, 30,
                     "the next listener holds too")
            still = webhook.wait("cannot write its store: alerts are held", timeout=20, count=2)[-1].body
            assert "the previous listener" in still and "could not write it either" in still, still
            stays(lambda: not webhook.matching("can write its store again"), 3, "not writable yet")
            assert in_ns(feed, "rm", "-f", f"{state_dir}/filler").returncode == 0
        again = webhook.wait("can write its store again", timeout=40)
        stays(lambda: len(webhook.matching("can write its store again")) == 1, 3, "said once")
        assert again[0].title.startswith("[RESOLVED]"), again[0].title
        twice = wait_for(lambda: [e for e in webhook.entries() if f"orphan pid {feed} from the previous supervisord"
                                  in e and f"left by supervisord pid {first}, which died at" in e], 30,
                         "feed runs twice, its orphan named with the supervisord that died")
        assert twice
        back = webhook.wait("is back after an unclean end", timeout=10)[0].body
        assert "it died at" in back, back  # the sidecar knew when, though the store did not
        if case == "target down at the death":
            late = webhook.wait("(sent late)", timeout=30)
            assert len(late) == 1 and f"feed (pid {feed})" in late[0].body and "c1 crashed at" in late[0].body
            assert "Sent late: this message could not be delivered when supervisord died" in late[0].body
        stays(lambda: len(webhook.matching("died without shutting down")) == 1, 3, "the death message once")
    finally:
        kill(left)


TWO = "[program:c]\ncommand=sleep 1000\nstartsecs=1\n\n[program:d]\ncommand=sleep 1000\nstartsecs=1\n\n"
LOCK = """
import sqlite3, sys
c = sqlite3.connect(sys.argv[1], isolation_level=None)
c.execute("BEGIN EXCLUSIVE")
print("locked", flush=True)
sys.stdin.read()
c.execute("ROLLBACK")
"""


def test_a_program_respawned_while_the_store_is_locked_is_named_when_supervisord_dies(supervisor_factory, webhook):
    """Issue 21 (attack a4): the store locked, c killed. The listener holds c's exit, so supervisord
    keeps the RUNNING event of c's respawn in its buffer; supervisord is then killed. The death
    message still names c's new pid (the listener looked at supervisord itself while it held), the
    sidecar carries that orphan, and the next listener alerts that c runs twice until it is gone."""
    sup = supervisor_factory(TWO, fast_alerts(webhook)).start()
    wait_for(lambda: known_running(sup, ["c", "d"]), 20, "c and d running")
    old_c, d = sup.info("c:c")["pid"], sup.info("d:d")["pid"]
    left = [old_c, d]
    holder = subprocess.Popen([sys.executable, "-c", LOCK, str(sup.state_path)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        os.kill(old_c, signal.SIGKILL)  # its exit is an event the listener cannot commit: held
        webhook.wait("cannot write its store", timeout=30)
        new_c = wait_for(lambda: (i := sup.info("c:c"))["statename"] == "RUNNING" and i["pid"] not in (0, old_c)
                         and i["pid"], 20, "supervisord restarted c (the listener still holds its exit)")
        left.append(new_c)
        wait_for(lambda: f"c:c runs as pid {new_c}" in sup.listener_output(), 20,
                 "the listener saw c's new pid while it held")
        sup.proc.kill()
        sup.proc.wait(10)
        died = webhook.wait("died without shutting down", timeout=20)
        assert len(died) == 1, [m.title for m in webhook.messages]
        body = died[0].body
        assert "this message comes straight from the listener's memory" in body, body
        assert f"c (pid {new_c})" in body and f"d (pid {d})" in body, body  # both orphans, from memory
        assert f"supervisord started it again as pid {new_c}" in body and "is not known" not in body, body

        holder.stdin.close()  # the lock released
        holder.wait(10)
        sup.start()
        for name, orphan in (("c", new_c), ("d", d)):
            wait_for(lambda n=name, o=orphan: [e for e in webhook.entries() if e.startswith("CRITICAL")
                                               and f"{n} runs twice: orphan pid {o} from the previous supervisord"
                                               in e], 30, f"{name} runs twice, its orphan named")
        back = webhook.wait("is back after an unclean end", timeout=10)[0].body
        assert f"c (pid {new_c})" in back and f"d (pid {d})" in back, back
        kill([new_c])
        wait_for(lambda: [e for e in webhook.entries() if e.startswith("RESOLVED") and "c runs" in e.split("\n")[0]],
                 30, "c's orphan gone: resolved")
    finally:
        holder.kill()
        kill(left)


# ---- the sidecar file on its own -------------------------------------------------------------


def test_the_sidecar_is_allocated_once_and_survives_a_torn_write(tmp_path):
    from lookout.listener.rules.orphans import Orphan
    from lookout.listener.store.sidecar import SLOT, DeathNote, Sidecar

    store = str(tmp_path / "state" / "lookout.db")
    first = Sidecar(store)
    assert first.open(100, 1.0).degraded_since == 0  # nothing left by anyone
    path = tmp_path / "state" / "lookout.db.sidecar"
    assert path.stat().st_size == 2 * SLOT and (path.stat().st_mode & 0o777) == 0o600
    blocks = path.stat().st_blocks
    first.degraded(1000.0, "disk full")
    orphans = [Orphan(f"p{i}:p{i}", 10_000 + i, 5.0 + i, supervisord_pid=9) for i in range(2000)]  # more than fit
    first.died(DeathNote(1001.0, 9, "SupervisordDied", "supervisord died", "x" * 50_000, ["k1", "k2"]), orphans)
    assert path.stat().st_size == 2 * SLOT and path.stat().st_blocks == blocks  # in place: no new blocks

    left = Sidecar(store).open(200, 2.0)
    assert (left.listener_pid, left.degraded_since, left.reason) == (100, 1000.0, "disk full")
    assert left.death is not None and left.death.undelivered == ["k1", "k2"] and len(left.death.text) <= 8000
    assert 0 < len(left.orphans) < 2000 and left.orphans[0] == orphans[0]  # cut to fit, oldest kept

    first.death_told()  # the newest slot, then torn by a crash in the middle of a write
    with open(path, "r+b") as f:
        newest = first.seq % 2
        f.seek(newest * SLOT + 30)
        f.write(b"\xff" * 100)
    torn = Sidecar(store).open(300, 3.0)
    assert torn.death is not None and torn.reason == "disk full"  # the slot before it


def test_the_sidecar_never_follows_a_symlink(tmp_path):
    from lookout.listener.store.sidecar import Sidecar

    target = tmp_path / "elsewhere"
    target.write_text("precious")
    (tmp_path / "lookout.db.sidecar").symlink_to(target)
    side = Sidecar(str(tmp_path / "lookout.db"))
    assert side.open(1, 1.0).degraded_since == 0 and side.fd is None
    side.degraded(5.0, "disk full")  # logged, not written anywhere
    assert target.read_text() == "precious"
