"""The perturbations of the matrix: what the world does to lookout while a capability is under way.

Each is applied once, at the scenario's mid-way point (Run.midway), and returns when it has
happened (a listener restarted is ready again; a lock is held): the scenario then goes on while
its effects last. `allowance` is the perturbation's own length: how much later than unperturbed
an outcome may come. Nothing may be lost, doubled or acted on wrongly.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..harness import Supervisor, wait_for

if TYPE_CHECKING:
    from .run import Run

LOCK_SECONDS = 10.0
TRICKLE_SECONDS = 2.0  # one byte of the answer every 2 s: a stuck proxy
READY = "lookout-listener ready"


@dataclass(frozen=True)
class Perturbation:
    name: str
    what: str
    apply: Callable[[Run], None]
    allowance: float  # seconds an outcome may come later than unperturbed
    clock_step: bool = False  # the supervisor needs Supervisor(clock_step=True)
    degrades: bool = False  # lookout is rightly degraded while it lasts (dead man's switch: the fail form)


def _readies(sup: Supervisor) -> int:
    return sup.listener_output().count(READY)


def _none(run: Run) -> None:
    pass


def _restart_listener(run: Run) -> None:
    sup = run.sup
    before = _readies(sup)
    done = sup.ctl("restart", "lookout")
    assert done.returncode == 0, done.stdout + done.stderr
    wait_for(lambda: _readies(sup) > before, 30, "the listener ready again after `supervisorctl restart lookout`")


def _kill_listener(run: Run) -> None:
    sup = run.sup
    before, pid = _readies(sup), sup.listener_pid()
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: sup.listener_running_anew(pid) and _readies(sup) > before, 30,
             "a new listener after kill -9 of the listener")


def _reload(run: Run) -> None:
    sup = run.sup
    before = _readies(sup)
    done = sup.ctl("reload")
    assert done.returncode == 0, done.stdout + done.stderr
    wait_for(lambda: _readies(sup) > before, 60, "a new listener after `supervisorctl reload`")


def _step(seconds: float) -> Callable[[Run], None]:
    def step(run: Run) -> None:
        run.sup.step_clock(seconds)

    return step


def _trickle(run: Run) -> None:
    run.other.trickle = TRICKLE_SECONDS


def _lock_store(run: Run) -> None:
    """Another process holds SQLite's write lock (BEGIN EXCLUSIVE) for LOCK_SECONDS; readers go on (WAL)."""
    holder = subprocess.Popen([sys.executable, "-c", f"""
import sqlite3, time
c = sqlite3.connect({str(run.sup.state_path)!r}, isolation_level=None, timeout=30)
c.execute("BEGIN EXCLUSIVE")
print("locked", flush=True)
time.sleep({LOCK_SECONDS})
c.execute("ROLLBACK")
"""], stdout=subprocess.PIPE, text=True)
    run.holder = holder
    assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"


PERTURBATIONS: dict[str, Perturbation] = {p.name: p for p in (
    Perturbation("none", "nothing happens", _none, 0.0),
    Perturbation("listener-restart", "`supervisorctl restart lookout`", _restart_listener, 10.0),
    Perturbation("listener-kill9", "kill -9 of the listener (supervisord restarts it)", _kill_listener, 10.0),
    Perturbation("reload", "`supervisorctl reload`: every program restarts", _reload, 20.0),
    Perturbation("clock+1h", "the wall clock steps 1 h forward", _step(3600.0), 0.0, clock_step=True),
    Perturbation("clock-1h", "the wall clock steps 1 h back", _step(-3600.0), 0.0, clock_step=True),
    Perturbation("trickle", "the second target answers one byte every 2 s", _trickle, 3.0, degrades=True),
    Perturbation("store-locked", f"another process holds the store's write lock for {LOCK_SECONDS:g} s",
                 _lock_store, LOCK_SECONDS + 4.0, degrades=True),
)}
