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
  alert each (rules/orphans.py), resolved when every orphan of it is gone; `lookout status` shows
  them.
- Orphans are state: the store's orphans table keeps each one (pid, start time, the supervisord
  that left it) until it is seen gone, so a listener restart or a reload forgets none, and a
  second death names the first generation too. When the death could not be written (disk full),
  the sidecar file carries the orphans to the next listener (store/sidecar.py).
- While the store cannot be written the listener holds an event unacknowledged, so supervisord
  keeps the next ones (a respawn's RUNNING with its new pid) in its buffer: the listener looks at
  supervisord itself then (saw(), from getAllProcessInfo), and a death meanwhile names those pids.
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
from dataclasses import replace

from ...config import Config, format_duration
from ...procfs import is_lookout_exporter, pid_gone, same_process, spawn_age, spawn_time, stat_fields
from ..rules.models import ProcessRecord, ProcessSnapshot, display_name
from ..rules.orphans import Copies, Orphan
from ..rules.process_alerts import LIVE_STATES

log = logging.getLogger("lookout.lifecycle")
BOOT_ID_FILE = "/proc/sys/kernel/random/boot_id"
SAME_RUN = 2.0  # a live pid whose spawn time is this close to the stored start is that same process
LISTENER_STOPPED = "listener-stopped"  # supervisord_end: the listener was stopped by a signal; what followed is unknown


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


def alive(orphan: Orphan) -> bool:
    """The same process (pid and start time), and not a zombie (exited, not yet reaped by init)."""
    return same_process(orphan.pid, orphan.started, SAME_RUN)


def _known(orphan: Orphan, among: Iterable[Orphan]) -> bool:
    return any(o.pid == orphan.pid and abs(o.started - orphan.started) < SAME_RUN for o in among)


def survivors(records: Iterable[ProcessRecord], own: str, exporters: list[Orphan] | None = None) -> list[Orphan]:
    """The processes of the records that still run as the same processes (pid and start time).
    lookout-exporter is not one of them: orphaned, it serves supervisord_up 0 until a new
    supervisord answers, then exits for the new one's exporter (exporter/handover.py); it is
    added to `exporters` when given."""
    found = []
    for rec in records:
        if rec.namespec == own or not rec.pid or rec.state not in LIVE_STATES or not rec.last_start:
            continue
        survivor = Orphan(rec.namespec, rec.pid, rec.last_start)
        if alive(survivor):
            if is_lookout_exporter(rec.pid):
                if exporters is not None:
                    exporters.append(survivor)
                continue
            found.append(survivor)
    return sorted(found, key=lambda s: s.namespec)


def _named(survivors: list[Orphan], limit: int = 20, origin: bool = False) -> str:
    shown = [f"{display_name(s.namespec)} (pid {s.pid}{f', {s.origin()}' if origin else ''})"
             for s in survivors[:limit]]
    more = f" and {len(survivors) - limit} more" if len(survivors) > limit else ""
    return ", ".join(shown) + more


class Lifecycle:
    def __init__(self, config: Config, own_namespec: str) -> None:
        self.config, self.own = config, own_namespec
        self.report = ""  # "reboot", "reboot-clean" or "unclean": said once the first reconcile has answered
        self.last_heard = 0.0
        self.died_at = 0.0  # when the previous listener saw supervisord die (0: it did not see it)
        self.orphans: list[Orphan] = []  # every generation's, alive at the last look in /proc
        self.unsaved: list[Orphan] = []  # found, or seen gone, since the last take_unsaved()
        self.shared_with = 0  # the pid of another live supervisord that uses this store
        self.died_unwatched: list[str] = []  # ran when the store last heard, gone when supervisord came back
        # namespec -> (when, the process): seen running by a look while the store could not be written
        self.sighted: dict[str, tuple[float, Orphan]] = {}

    # ---- the end --------------------------------------------------------------------------

    def gone(self, records: Iterable[ProcessRecord], stopping: bool, ppid: int, now: float,
             records_known: bool = True) -> tuple[dict[str, object], tuple[str, str, str] | None]:
        """stdin closed: what to write to the store, and the message to announce (alertname, title,
        text) when supervisord died without shutting down. What it left running joins the orphans
        (take_unsaved() has them for the store); earlier generations still alive are named too."""
        if not supervisord_dead(ppid):
            if stopping:
                return {"supervisord_end": "clean"}, None
            log.warning("stdin closed, but supervisord (pid %d) still runs: no alert", ppid)
            return {}, None
        exporters: list[Orphan] = []
        records = list(records)
        left = survivors(records, self.own, exporters)
        self._look(now)
        earlier = list(self.orphans)
        fresh = [replace(o, supervisord_pid=ppid, left_at=now, death_seen=True, found_at=now) for o in left
                 if not _known(o, earlier)]
        self.orphans += fresh
        self.unsaved += fresh
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
                 "for duplicates after." if left else f"{none} was still running." if records_known else
                 "lookout could not open its store, so it cannot say which of its programs were still running: "
                 "check for them (ps) before supervisord starts again.")
        if starting:
            text += (f" Starting then, their pids not yet known to lookout (they may be running too): "
                     f"{', '.join(starting[:20])}{' and more' if len(starting) > 20 else ''}.")
        if earlier:
            text += (f" Still running from earlier deaths of supervisord: {_named(earlier, origin=True)}.")
        if exporters:
            text += (f" lookout-exporter (pid {exporters[0].pid}) serves supervisord_up 0 until a new supervisord "
                     "answers, then hands its port over.")
        meta = {"supervisord_end": "unclean", "supervisord_gone_at": now}
        title = f"supervisord (pid {ppid}) died without shutting down"
        return meta, ("SupervisordDied", title, text)

    def saw(self, namespec: str, pid: int, state: str, at: float) -> bool:
        """supervisord ran `pid` for `namespec` at `at` (a look, or an event not yet handled, while
        the store cannot be written): its spawn time from /proc tells it from a reused pid later.
        True when that is news (another pid than the last look's)."""
        if namespec == self.own:
            return False
        age = spawn_age(pid) if pid and state in LIVE_STATES else None
        if age is None:  # not running (any more): what the records say stands
            self.sighted.pop(namespec, None)
            return False
        before = self.sighted.get(namespec)
        self.sighted[namespec] = (at, Orphan(namespec, pid, at - age))
        return before is None or before[1].pid != pid

    def with_sightings(self, records: Iterable[ProcessRecord]) -> tuple[list[ProcessRecord], dict[str, int]]:
        """The records, each with the process a look saw after its last event (a respawn whose events
        supervisord still held), and which pids that changed: namespec -> the pid seen."""
        out = {r.namespec: r for r in records}
        changed: dict[str, int] = {}
        for ns, (at, seen) in self.sighted.items():
            rec = out.get(ns)
            if rec is not None and rec.event_at > at:
                continue  # an event newer than the look has it
            if rec is None:
                group, _, name = ns.partition(":")
                rec = ProcessRecord(group, name)
            if rec.pid != seen.pid or rec.state not in LIVE_STATES:
                changed[ns] = seen.pid
            out[ns] = replace(rec, state="RUNNING", pid=seen.pid, last_start=seen.started)
        return list(out.values()), changed

    # ---- the next start -----------------------------------------------------------------

    def at_start(self, meta: dict[str, str | None], stopping: bool, last_event_at: float,
                 records: Iterable[ProcessRecord], ppid: int, known: Iterable[Orphan] = (),
                 left: Iterable[Orphan] = (), died_at: float = 0.0, now: float | None = None) -> dict[str, object]:
        """What the previous supervisord left behind, read before this listener writes its own
        meta; returns what to write (this boot's id, this supervisord's pid start time).

        A supervisord is another one when its pid or its pid's start time differs (in a container
        it is pid 1 every time). An end is known clean when supervisord said it was stopping, or
        when the listener was stopped by a signal before it (`supervisorctl stop lookout`, systemd
        stopping the whole unit at once): then what came after is not known, and nothing is said
        of it; only orphans, checked in /proc, still count. When the previous supervisord still
        runs, two supervisords share this store: said once, and nothing else is judged.

        known: the store's orphans (every generation); left: those a death the store could not
        record left (the sidecar), died_at its time. After another supervisord, the programs of
        the store's records still running join them, as the previous supervisord's generation."""
        now = time.time() if now is None else now
        records = list(records)
        now_boot, was_boot = boot_id(), meta.get("boot_id") or ""
        previous = int(meta.get("supervisord_pid") or 0)
        previous_start = float(meta.get("supervisord_started") or 0.0)
        started = spawn_time(ppid) or 0.0
        end = meta.get("supervisord_end") or ""
        clean = stopping or end in ("clean", LISTENER_STOPPED)
        self.last_heard = max(last_event_at, float(meta.get("last_tick_at") or 0.0))
        self.died_at = float(meta.get("supervisord_gone_at") or 0.0) if end == "unclean" else died_at
        another = bool(previous) and (previous != ppid or (previous_start and started
                                                           and abs(previous_start - started) >= SAME_RUN))
        write: dict[str, object] = {"boot_id": now_boot, "supervisord_end": "", "supervisord_started": started,
                                    "orphans": None}  # (older versions kept them here, as JSON)
        rebooted = bool(was_boot and now_boot and was_boot != now_boot)  # the old pids mean nothing now
        self.orphans = list(known)
        self._look(now)
        if not rebooted and another and previous != ppid and previous_start \
                and same_process(previous, previous_start, SAME_RUN):
            self.report = "shared"
            self.shared_with = previous
            return write
        if rebooted:
            self.report = "reboot-clean" if clean else "reboot"
            self.unsaved += [replace(o, gone_at=now) for o in self.orphans]
            self.orphans = []
        elif another:
            self.report = "" if clean else "unclean"
            at, seen = (self.died_at, True) if self.died_at else (self.last_heard, False)
            generation = [replace(o, supervisord_pid=previous, left_at=at, death_seen=seen)
                          for o in survivors(records, self.own)]  # the store still has the old pids
            self.died_unwatched = [r.namespec for r in records if r.namespec != self.own and r.pid
                                   and r.state in LIVE_STATES and not any(o.pid == r.pid for o in generation)]
            for orphan in [*left, *generation]:
                if alive(orphan) and not _known(orphan, self.orphans):
                    orphan = replace(orphan, found_at=now, gone_at=None)
                    self.orphans.append(orphan)
                    self.unsaved.append(orphan)
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
        if self.died_unwatched:  # ran when last heard of, gone without a word: with supervisord, or on their own
            died = self.died_unwatched
            text += (f" {len(died)} program(s) that ran when it was last heard of died while nobody watched: "
                     f"{', '.join(display_name(ns) for ns in died[:20])}{' and more' if len(died) > 20 else ''}.")
        if self.orphans:
            text += f" Still running from before it: {_named(self.orphans)}."
        return "SupervisordBack", "supervisord is back after an unclean end", text, "warning"

    def twice(self, records: dict[str, ProcessRecord], now: float) -> dict[str, Copies]:
        """The programs with an orphan still alive: namespec -> its orphans (oldest generation first)
        and the pid of the copy supervisord runs now (0 while it is not running or not known yet).
        Orphans seen gone are left out, and wait in take_unsaved() with their gone_at."""
        self._look(now)
        by_program: dict[str, list[Orphan]] = {}
        for o in self.orphans:
            by_program.setdefault(o.namespec, []).append(o)
        out = {}
        for ns, orphans in by_program.items():
            rec = records.get(ns)
            pids = {o.pid for o in orphans}
            running = rec is not None and rec.pid and rec.pid not in pids and rec.state in LIVE_STATES
            ordered = tuple(sorted(orphans, key=lambda o: (o.left_at, o.pid)))
            # Between two runs: its STARTING named no pid yet; or the record still names an orphan as its copy
            # (the store's word from before supervisord died, before the first reconcile): not known yet either.
            between = rec is not None and not running and (rec.state in ("STARTING", "BACKOFF", "STOPPING")
                                                           or (rec.state == "RUNNING" and rec.pid in pids))
            out[ns] = Copies(ordered, rec.pid if running else 0, between)  # type: ignore[union-attr]
        return out

    def take_unsaved(self) -> list[Orphan]:
        """The orphans found, or seen gone, since the last call: for the store's next commit."""
        taken, self.unsaved = self.unsaved, []
        return taken

    def shift(self, delta: float) -> None:
        """The wall clock stepped (clock.py): the orphans' times move with the loop's clock."""
        self.orphans = [_shifted(o, delta) for o in self.orphans]
        self.unsaved = [_shifted(o, delta) for o in self.unsaved]
        self.sighted = {ns: (at + delta, _shifted(o, delta)) for ns, (at, o) in self.sighted.items()}

    def _look(self, now: float) -> None:
        """Which orphans still run (/proc): the gone ones leave, remembered as gone for the store."""
        still = [o for o in self.orphans if alive(o)]
        self.unsaved += [replace(o, gone_at=now) for o in self.orphans if o not in still]
        self.orphans = still


def _shifted(o: Orphan, delta: float) -> Orphan:
    return replace(o, started=o.started + delta, left_at=o.left_at + delta if o.left_at else 0.0,
                   found_at=o.found_at + delta if o.found_at else 0.0,
                   gone_at=None if o.gone_at is None else o.gone_at + delta)


def _clock(at: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(at))


def legacy_orphans(text: str | None) -> list[Orphan]:
    """The orphans an older listener kept in the store's meta as JSON (before the orphans table):
    taken over once, when the table has none, so an upgrade forgets no orphan."""
    try:
        return [Orphan(str(d["namespec"]), int(d["pid"]), float(d["started"])) for d in json.loads(text or "[]")]
    except (TypeError, ValueError, KeyError):
        return []


def _boot_time() -> float:
    try:
        with open("/proc/uptime", encoding="ascii") as f:
            return time.time() - float(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 0.0
