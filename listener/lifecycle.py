"""supervisord's own life, as its listener sees it: a death without a shutdown, the return after
one, an unplanned reboot. Everything else lookout says depends on supervisord being alive.

- Gone: the listener's stdin closes. If no SUPERVISOR_STATE_CHANGE_STOPPING came first (a clean
  `shutdown` or `reload` sends one) and supervisord's pid is gone, it died (the OOM killer,
  kill -9, a crash). supervisord gives every child its own process group, so its programs keep
  running, unsupervised: one critical message names them with their pids, before the listener
  exits; the outbox keeps it if it cannot be sent, and the next listener sends it.
- Back: the next listener finds another supervisord pid and no clean end in the store: one
  message says when the old one was last heard from, how long it was gone and what was started
  again. A previous process still running beside its new copy (the store's pid and start time,
  checked in /proc, so a reused pid is not mistaken) is a program running twice: a critical
  alert each (rules/orphans.py), resolved when the orphan is gone; `lookout status` shows them.
- Rebooted: the kernel's boot id (LOOKOUT_BOOT_ID_FILE replaces its file, for tests) changed with
  no clean shutdown before it: one message; after a clean shutdown nothing (or one info message,
  listener.clean_reboot = "info").
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, replace

from .config import Config, format_duration
from .procfs import is_lookout_exporter, pid_gone, spawn_time, stat_fields
from .rules.models import ProcessRecord, ProcessSnapshot, display_name
from .rules.snapshot import LIVE_STATES

log = logging.getLogger("lookout.lifecycle")
BOOT_ID_FILE = "/proc/sys/kernel/random/boot_id"
SAME_RUN = 2.0  # a live pid whose spawn time is this close to the stored start is that same process
LISTENER_STOPPED = "listener-stopped"  # supervisord_end: the listener was stopped by a signal; what followed is unknown


@dataclass(frozen=True)
class Survivor:
    namespec: str
    pid: int
    started: float  # its spawn time: with the pid, what tells it from a process that reused the pid


def supervisord_dead(ppid: int, wait: float = 2.0) -> bool:
    """The kernel closes a dying process's pipes (our stdin's EOF) before it reparents its children:
    wait a moment for the reparenting, or for the pid to be a zombie or gone."""
    deadline = time.monotonic() + wait
    while True:
        fields = stat_fields(ppid)
        if os.getppid() != ppid or pid_gone(ppid) or (fields is not None and fields[0] == b"Z"):
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.02)


def boot_id() -> str:
    try:
        with open(os.environ.get("LOOKOUT_BOOT_ID_FILE") or BOOT_ID_FILE, encoding="ascii", errors="replace") as f:
            return f.read().strip()[:64]
    except OSError:
        return ""


def alive(survivor: Survivor) -> bool:
    """The same process (pid and start time), and not a zombie (exited, not yet reaped by init)."""
    fields = stat_fields(survivor.pid)
    if fields is None or fields[0] in (b"Z", b"X"):
        return False
    started = spawn_time(survivor.pid)
    return started is not None and abs(started - survivor.started) < SAME_RUN


def survivors(records: Iterable[ProcessRecord], own: str, exporters: list[Survivor] | None = None) -> list[Survivor]:
    """The processes of the records that still run as the same processes (pid and start time).
    lookout-exporter is not one of them: orphaned, it serves supervisord_up 0 until a new
    supervisord answers, then exits for the new one's exporter (exporter/handover.py); it is
    added to `exporters` when given."""
    found = []
    for rec in records:
        if rec.namespec == own or not rec.pid or rec.state not in LIVE_STATES or not rec.last_start:
            continue
        survivor = Survivor(rec.namespec, rec.pid, rec.last_start)
        if alive(survivor):
            if is_lookout_exporter(rec.pid):
                if exporters is not None:
                    exporters.append(survivor)
                continue
            found.append(survivor)
    return sorted(found, key=lambda s: s.namespec)


def _named(survivors: list[Survivor], limit: int = 20) -> str:
    shown = [f"{display_name(s.namespec)} (pid {s.pid})" for s in survivors[:limit]]
    more = f" and {len(survivors) - limit} more" if len(survivors) > limit else ""
    return ", ".join(shown) + more


class Lifecycle:
    def __init__(self, config: Config, own_namespec: str) -> None:
        self.config, self.own = config, own_namespec
        self.report = ""  # "reboot", "reboot-clean" or "unclean": said once the first reconcile has answered
        self.last_heard = 0.0
        self.died_at = 0.0  # when the previous listener saw supervisord die (0: it did not see it)
        self.orphans: list[Survivor] = []
        self.shared_with = 0  # the pid of another live supervisord that uses this store

    # ---- the end --------------------------------------------------------------------------

    def gone(self, records: Iterable[ProcessRecord], stopping: bool, ppid: int, now: float
             ) -> tuple[dict[str, object], tuple[str, str, str] | None]:
        """stdin closed: what to write to the store, and the message to announce (alertname, title,
        text) when supervisord died without shutting down."""
        if not supervisord_dead(ppid):
            if stopping:
                return {"supervisord_end": "clean"}, None
            log.warning("stdin closed, but supervisord (pid %d) still runs: no alert", ppid)
            return {}, None
        exporters: list[Survivor] = []
        records = list(records)
        left = survivors(records, self.own, exporters)
        if stopping and not left:
            return {"supervisord_end": "clean"}, None  # (a clean end stops the listener with a signal first)
        host, at = self.config.hostname, _clock(now)
        if stopping:  # it died while it stopped its programs (a reload, a shutdown): some still run
            text = (f"supervisord (pid {ppid}) on {host} died at {at} while it was stopping or reloading, before "
                    "it had stopped all its programs. ")
        else:
            text = (f"supervisord (pid {ppid}) on {host} died without shutting down at {at} (no "
                    "SUPERVISOR_STATE_CHANGE_STOPPING came before its end: the OOM killer, kill -9, a crash). ")
        starting = sorted(display_name(r.namespec) for r in records
                          if r.state in ("STARTING", "BACKOFF") and not r.pid and r.namespec != self.own)
        none = "None of the programs whose pids lookout knew" if starting else "None of its programs"
        text += (f"{len(left)} program(s) were still running unsupervised then: {_named(left)}. Started again, "
                 "supervisord would start a second copy of each beside them: stop them first (kill PID), or check "
                 "for duplicates after." if left else f"{none} was still running.")
        if starting:
            text += (f" Starting then, their pids not yet known to lookout (they may be running too): "
                     f"{', '.join(starting[:20])}{' and more' if len(starting) > 20 else ''}.")
        if exporters:
            text += (f" lookout-exporter (pid {exporters[0].pid}) serves supervisord_up 0 until a new supervisord "
                     "answers, then hands its port over.")
        meta = {"supervisord_end": "unclean", "supervisord_gone_at": now, "orphans": _dump(left)}
        title = f"supervisord (pid {ppid}) died without shutting down"
        return meta, ("SupervisordDied", title, text)

    # ---- the next start -----------------------------------------------------------------

    def at_start(self, meta: dict[str, str | None], stopping: bool, last_event_at: float,
                 records: Iterable[ProcessRecord], ppid: int) -> dict[str, object]:
        """What the previous supervisord left behind, read before this listener writes its own
        meta; returns what to write (this boot's id, this supervisord's pid start time).

        A supervisord is another one when its pid or its pid's start time differs (in a container
        it is pid 1 every time). An end is known clean when supervisord said it was stopping, or
        when the listener was stopped by a signal before it (`supervisorctl stop lookout`, systemd
        stopping the whole unit at once): then what came after is not known, and nothing is said
        of it; only orphans, checked in /proc, still count. When the previous supervisord still
        runs, two supervisords share this store: said once, and nothing else is judged."""
        now_boot, was_boot = boot_id(), meta.get("boot_id") or ""
        previous = int(meta.get("supervisord_pid") or 0)
        previous_start = float(meta.get("supervisord_started") or 0.0)
        started = spawn_time(ppid) or 0.0
        end = meta.get("supervisord_end") or ""
        clean = stopping or end in ("clean", LISTENER_STOPPED)
        self.last_heard = max(last_event_at, float(meta.get("last_tick_at") or 0.0))
        self.died_at = float(meta.get("supervisord_gone_at") or 0.0) if end == "unclean" else 0.0
        another = bool(previous) and (previous != ppid or (previous_start and started
                                                           and abs(previous_start - started) >= SAME_RUN))
        write = {"boot_id": now_boot, "supervisord_end": "", "supervisord_started": started}
        rebooted = bool(was_boot and now_boot and was_boot != now_boot)  # the old pids mean nothing now
        if not rebooted and another and previous != ppid and previous_start \
                and _same_supervisord_alive(previous, previous_start):
            self.report = "shared"
            self.shared_with = previous
            return write
        if rebooted:
            self.report = "reboot-clean" if clean else "reboot"
        elif another:
            self.report = "" if clean else "unclean"
            self.orphans = survivors(records, self.own)  # the store still has the old pids
        write["orphans"] = _dump(self.orphans)
        return write

    def after_first_reconcile(self, infos: list[ProcessSnapshot], now: float) -> tuple[str, str, str, str] | None:
        """The message about the previous end, once supervisord's view says what runs now:
        (alertname, title, text, severity), or None."""
        report, self.report = self.report, ""
        host = self.config.hostname
        running = [i for i in infos if i.state in LIVE_STATES and i.namespec != self.own]
        names = ", ".join(display_name(i.namespec) for i in running[:20]) + (
            f" and {len(running) - 20} more" if len(running) > 20 else "")
        if report in ("reboot", "reboot-clean"):
            if report == "reboot-clean" and self.config.listener.clean_reboot == "silent":
                return None
            up = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(_boot_time()))
            how = "after a clean shutdown" if report == "reboot-clean" else "without a clean shutdown before it"
            return ("HostRebooted", "the host rebooted",
                    f"{host} rebooted (up since {up}) {how}; supervisord and {len(running)} program(s) started "
                    f"again: {names or 'none'}.", "info" if report == "reboot-clean" else "critical")
        if report == "shared":
            return ("LookoutStoreShared", "two supervisords share lookout's store",
                    f"lookout's store {self.config.state_path} on {host} is used by two supervisords (pid "
                    f"{self.shared_with} and this one): their records, alerts and counters mix. Give each "
                    "supervisord's lookout.toml its own state.path.", "warning")
        if report != "unclean":
            return None
        if self.died_at:
            died = _clock(self.died_at)
            text = (f"supervisord on {host} is back after an unclean end: it died at {died}, gone for "
                    f"{format_duration(max(0.0, now - self.died_at))}. ")
        else:
            heard = _clock(self.last_heard) if self.last_heard else "unknown"
            gone = format_duration(max(0.0, now - self.last_heard)) if self.last_heard else "an unknown time"
            text = (f"supervisord on {host} is back after an unclean end: last heard from at {heard}, gone for at most "
                    f"{gone}. ")
        text += f"Started again: {names or 'nothing yet'}."
        if self.orphans:
            text += f" Still running from before it: {_named(self.orphans)}."
        return "SupervisordBack", "supervisord is back after an unclean end", text, "warning"

    def twice(self, records: dict[str, ProcessRecord]) -> dict[str, tuple[int, int]]:
        """Each orphan still alive: namespec -> (its pid, the pid of the new supervisord's copy, 0
        while that copy is not running or not known yet)."""
        self.orphans = [s for s in self.orphans if alive(s)]
        out = {}
        for s in self.orphans:
            rec = records.get(s.namespec)
            running = rec is not None and rec.pid and rec.pid != s.pid and rec.state in LIVE_STATES
            out[s.namespec] = (s.pid, rec.pid if running else 0)  # type: ignore[union-attr]
        return out

    def shift(self, delta: float) -> None:
        """The wall clock stepped (clock.py): the orphans' start times move with the loop's clock."""
        self.orphans = [replace(s, started=s.started + delta) for s in self.orphans]

    def orphans_meta(self) -> dict[str, object]:
        return {"orphans": _dump(self.orphans)}


def _same_supervisord_alive(pid: int, started: float) -> bool:
    """The previous supervisord still runs (its pid, with its start time when it was recorded)."""
    fields = stat_fields(pid)
    if fields is None or fields[0] in (b"Z", b"X"):
        return False
    spawned = spawn_time(pid)
    return spawned is not None and abs(spawned - started) < SAME_RUN


def _clock(at: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(at))


def _dump(survivors: list[Survivor]) -> str:
    return json.dumps([asdict(s) for s in survivors])


def load_orphans(text: str | None) -> list[Survivor]:
    """The orphans the listener last wrote to the store (for `lookout status`), still alive now."""
    try:
        return [s for s in (Survivor(**d) for d in json.loads(text or "[]")) if alive(s)]
    except (TypeError, ValueError):
        return []


def _boot_time() -> float:
    try:
        with open("/proc/uptime", encoding="ascii") as f:
            return time.time() - float(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 0.0
