"""One cell of the matrix: a capability's scenario, a perturbation, and what the scenario reads.

The scenario is written once, straight through, against a real supervisord; it calls
run.midway() where its capability is under way, and the perturbation happens there. Every wait
after that point gets the perturbation's allowance (run.within): a perturbation may delay an
outcome by its own length, never change it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..conftest import fast_alerts
from ..harness import Supervisor, Webhook, wait_for
from .perturbations import Perturbation

FIRING = ("CRITICAL", "WARNING", "INFO")


@dataclass
class Run:
    perturbation: Perturbation
    make_supervisor: Callable[..., Supervisor]  # the supervisor_factory fixture
    hook: Webhook  # the target every assertion reads
    other: Webhook  # a second target, configured in every cell: it trickles under "trickle"
    sup: Supervisor | None = None
    perturbed: bool = False
    holder: subprocess.Popen | None = None  # the process holding the store's write lock
    leftovers: list[int] = field(default_factory=list)  # pids a scenario left running (orphans): killed at the end

    # ---- set-up ----------------------------------------------------------------------------

    def settings(self, **alerts: Any) -> dict[str, Any]:
        """Test-speed timers, two notification targets, a short notify.timeout (the trickle)."""
        settings = fast_alerts(self.hook, **alerts)
        settings["notify"].update(urls=[self.hook.url(), self.other.url("other")], timeout="3s")
        return settings

    def supervisor(self, programs: str, settings: dict[str, Any]) -> Supervisor:
        self.sup = self.make_supervisor(programs, settings, clock_step=self.perturbation.clock_step)
        return self.sup

    # ---- the perturbation ------------------------------------------------------------------

    def midway(self) -> None:
        assert self.sup is not None and not self.perturbed, "one perturbation per cell, after the start"
        self.perturbed = True
        self.perturbation.apply(self)

    @property
    def reloaded(self) -> bool:
        """A reload restarts every program: some scenarios define their outcome apart for it."""
        return self.perturbation.name == "reload"

    def within(self, seconds: float) -> float:
        """A deadline after the mid-way point: the scenario's own, plus the perturbation's length."""
        return seconds + (self.perturbation.allowance if self.perturbed else 0.0)

    def settled(self) -> None:
        """Wait until the perturbation is over (the store's lock released): an operator acts after it."""
        if self.holder is not None:
            self.holder.wait(60)

    # ---- what a scenario reads and does ----------------------------------------------------

    def lookout(self, *args: str) -> subprocess.CompletedProcess:
        assert self.sup is not None
        return self.sup.lookout(*args)

    def firing(self, namespec: str, *needles: str) -> list[str]:
        """Alert entries about one process that raise (not RESOLVED, UPDATE or REMINDER)."""
        return [e for e in self.hook.entries_for(namespec, *needles) if e.split(None, 1)[0] in FIRING]

    def resolved(self, namespec: str, *needles: str) -> list[str]:
        """RESOLVED entries about one process; a problem that came and went before its alert was sent
        (a perturbation delayed it) is one entry that says both: it counts as its resolution too."""
        return [e for e in self.hook.entries_for(namespec, *needles)
                if e.startswith("RESOLVED") or (e.split(None, 1)[0] in FIRING and "recovered since:" in e)]

    def history(self, namespec: str, *needles: str) -> list[str]:
        """Lines of the store's history about one process, oldest first."""
        assert self.sup is not None
        with self.sup.db() as c:
            rows = c.execute("SELECT detail FROM history WHERE namespec = ? ORDER BY id", (namespec,)).fetchall()
        return [d for (d,) in rows if all(n in d for n in needles)]

    def running_in_store(self, *namespecs: str) -> bool:
        """The listener knows each one RUNNING with its pid."""
        assert self.sup is not None
        return all((row := self.sup.process_row(ns) or {}).get("pid") and row.get("state") == "RUNNING"
                   for ns in namespecs)

    def wait_running(self, namespec: str, timeout: float = 20) -> None:
        assert self.sup is not None
        wait_for(lambda: self.sup.state_of(namespec) == "RUNNING" and self.running_in_store(namespec), timeout,
                 f"{namespec} RUNNING, as the listener knows it")

    def describe(self) -> str:
        """What a failed cell saw: the judged target's entries and the listener's last lines."""
        entries = "\n".join(f"  {e.splitlines()[0][:160]}" for e in self.hook.entries())
        log = self.sup.listener_output().splitlines()[-60:] if self.sup else []
        try:
            with self.sup.db() as c:  # type: ignore[union-attr]
                rows = c.execute("SELECT at, namespec, detail FROM history ORDER BY id DESC LIMIT 40").fetchall()
        except Exception as exc:  # noqa: BLE001 - a description, not a check
            rows = [(0.0, "?", f"history unreadable: {exc}")]
        history = "\n".join(f"  {at:.3f} {ns} {detail[:200]}" for at, ns, detail in reversed(rows))
        return (f"perturbation {self.perturbation.name} ({'applied' if self.perturbed else 'not reached'}); "
                f"entries at the target:\n{entries}\nthe store's history, last rows:\n{history}\n"
                "listener log, last lines:\n" + "\n".join(log))

    def close(self) -> None:
        if self.holder is not None:
            self.holder.kill()
            self.holder.wait(10)
        for pid in self.leftovers:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
