"""What supervisord's answers mean for a process alert: its getAllProcessInfo view, fresher than
the events still queued for us, the exit status read from its log, a run's real start. Pure; it
decides on the pending state of process_alerts.py, and raises and resolves through it.

- Align records with it (a process we never heard of, a state we missed while not listening).
- FATAL or unexpectedly EXITED processes nobody alerted on: alert, once a second answer agrees
  for an exit (supervisord may answer between an exit and its respawn).
- A crash episode that looks over (RUNNING for stable_after by our clock) is resolved only when
  supervisord confirms the same process has really been RUNNING that long: events reach us late
  when supervisord or we are busy, and a resolution must not rest on old news.
- Another pid than the record's is another process (a restart we did not hear of, a reload): its
  probes count from zero, with its own grace.
- An action of lookout's that a previous listener left in flight is finished or reported, now that
  supervisord says where it got to.
"""

from __future__ import annotations

from collections.abc import Iterable

from ...config import AlertSettings, format_duration
from .actions import OwnActions
from .alerts import AlertBook
from .health import HealthTracker
from .kinds import KINDS
from .models import (
    EXITED,
    FATAL,
    LEFT_STOPPED,
    NOT_RUNNING,
    PROCESS,
    REMEDIATION,
    HistoryEntry,
    Outcome,
    ProcessRecord,
    ProcessSnapshot,
)
from .process_alerts import LIVE_STATES, ProcessAlerts, begin_episode, reset_failures
from .quorum import QuorumWatch
from .removal import Removals

COARSE_START = 1.0  # supervisord's getProcessInfo `start` and `now` are whole seconds
STABLE_RECHECK = 2.0  # a stable run not yet heard of in events: asked again after this
RAN_AGAIN = "exit status not known: it ran again before lookout asked"
LATE_EVENTS = 30.0  # how long a run's events may be queued before we stop waiting for them


def coarse_start_differs(rec: ProcessRecord, start: float) -> bool:
    """supervisord reports whole seconds: a known start within a second of it is kept (it may be exact)."""
    return rec.last_start is None or abs(rec.last_start - start) > COARSE_START


class SupervisordAnswers:
    """on_snapshot and its helpers, and what else supervisord's answers or the kernel tell about a
    run (its exit status, its real start)."""

    def __init__(self, settings: AlertSettings, process: ProcessAlerts, book: AlertBook, health: HealthTracker,
                 actions: OwnActions, quorum: QuorumWatch, removals: Removals) -> None:
        self.settings, self.process, self.book, self.health = settings, process, book, health
        self.actions, self.quorum, self.removals = actions, quorum, removals
        self.records, self.pending = process.records, process.pending

    def on_exit_observed(self, namespec: str, status: int | None, text: str, ran: float | None = None,
                         pid: int | None = None) -> Outcome:
        """The exit status of the run `pid` read from supervisord's log (events do not carry it),
        and how long that run lasted by the log's own times (better than ours when the events came
        late); status None: not known (the text says why). Each awaited exit of that run gets its
        row at its own time; the record's last exit changes only when it is the latest exit."""
        out = Outcome()
        rec = self.records.get(namespec)
        if rec is None or not text:
            return out
        waits = self.pending.exits_awaited.get(namespec, [])
        mine = [w for w in waits if w[0] == pid]
        if not mine:  # nothing asked for this run (a direct caller): news of the latest exit
            mine = [(pid, rec.last_exit_at or rec.state_since, rec.last_run_seconds)]
        else:
            self.pending.exits_awaited[namespec] = [w for w in waits if w[0] != pid]
            if not self.pending.exits_awaited[namespec]:
                del self.pending.exits_awaited[namespec]
        for i, (_, at, run_seconds) in enumerate(mine):
            latest = i == len(mine) - 1  # earlier pid-less exits of the same program: it ran again since
            what, code, took = (text, status, ran if ran is not None else run_seconds) if latest \
                else (RAN_AGAIN, None, run_seconds)
            if at == rec.last_exit_at or rec.last_exit_at is None:
                if (rec.last_exit_text, rec.last_exit_status) == (what, code):
                    continue
                rec.last_exit_status, rec.last_exit_text = code, what
                if took is not None:
                    rec.last_run_seconds = took
                out.records[namespec] = rec
            shown = f" after running {format_duration(took)}" if took is not None else ""
            out.history.append(HistoryEntry(at, namespec, "exit", f"{what}{shown}", exit_status=code,
                                            exit_text=what if code is not None else ""))
        return out

    def on_start_observed(self, namespec: str, start: float, *, exact: bool = False, pid: int = 0) -> Outcome:
        """The real spawn time: events reach us late in a storm, uptime must not.

        `exact` comes from the kernel (/proc) and always wins; otherwise it is supervisord's
        whole-second `start`, which only replaces a time it contradicts, and only for the run we
        know of: an answer about a later run (`pid`) while our events lag behind does not count.
        """
        out = Outcome()
        rec = self.records.get(namespec)
        if rec is None or rec.state not in LIVE_STATES or not start or (pid and rec.pid and pid != rec.pid):
            return out
        if pid and not rec.pid and rec.state == "STARTING":  # STARTING events carry no pid: supervisord's answer does
            rec.pid = pid  # (not event_pid: the answer may be about a later run, events still queued)
            out.records[namespec] = rec
        if (exact and rec.last_start != start) or (not exact and coarse_start_differs(rec, start)):
            rec.last_start = start
            out.records[namespec] = rec
        return out

    def on_start_unknown(self, namespec: str) -> Outcome:
        """A RUNNING event that arrives after its process died: the times we took from the
        events are too late to tell how long it ran (supervisord's log may tell, later)."""
        out = Outcome()
        rec = self.records.get(namespec)
        if rec is not None and rec.state == "RUNNING":
            rec.last_start = rec.running_since = None
            out.records[namespec] = rec
        return out

    def on_snapshot(self, infos: Iterable[ProcessSnapshot], taken_at: float, now: float, out: Outcome) -> Outcome:
        """Align records with supervisord's view; alert on FATAL/EXITED we never heard of."""
        seen = set()
        for info in infos:
            ns = info.namespec
            seen.add(ns)
            self.pending.unconfirmed.discard(ns)
            rec = self.process.record(info.group, info.name)
            self.pending.confirming.discard(ns)
            pending = self.pending
            stable_check = ns in pending.stable_checks or ns in pending.stable_not_before  # one answer: all waits
            self.pending.stable_checks.discard(ns)
            interrupted = rec.action is not None and rec.action.interrupted
            if rec.event_at > taken_at:
                if interrupted:  # a fresher answer settles it
                    out.reconcile = out.reconcile or f"settle lookout's interrupted action on {ns}"
                continue  # an event told us something newer than this snapshot
            if interrupted:
                self.actions.resume(rec, info.state, info.pid, info.start, now, out)
            left = self.book.get(REMEDIATION, ns)
            if left is not None and left.kind == LEFT_STOPPED and info.state == "RUNNING":
                self.book.close(REMEDIATION, ns, now, out, "started again", notify=True)
            if stable_check and self._confirmed_stable(rec, info, taken_at):
                if self._heard_this_run(rec, info, taken_at):
                    self.pending.stable_not_before.pop(ns, None)
                    self.pending.unheard_since.pop(ns, None)
                    closed = self.book.close(PROCESS, ns, now, out, "recovered", notify=True)
                    if closed is not None:  # down until this run began, not until it was called stable
                        closed.back_at = rec.last_start or (info.start + taken_at - info.now)  # its spawn
                    reset_failures(rec)
                    self.process.touch(rec, out)
                else:  # its own events are still queued behind older ones: they may be crashes
                    self.pending.stable_not_before[ns] = taken_at + STABLE_RECHECK
            elif stable_check:
                self.pending.stable_not_before.pop(ns, None)
                self.pending.unheard_since.pop(ns, None)
            if self._align(rec, info, taken_at, out) | self._unheard_problems(rec, info, now, out):
                self.process.touch(rec, out)
        self.pending.confirming &= seen  # answered too: a name it does not list is gone (asked again if it is back)
        gone_groups = set()
        for ns, rec in self.records.items():
            if ns not in seen and rec.present and rec.event_at <= taken_at:
                self.removals.process_removed(rec, now, out)  # removed by reread + update: its event missed
                self.pending.forget(ns)
                self.process.touch(rec, out)
                gone_groups.add(rec.group)
        for group in gone_groups:
            if not any(r.present for r in self.records.values() if r.group == group):
                self.removals.group_removed(group, self.records.values(), now, out)
        self.quorum.refresh(self.records, {r.group for r in self.records.values()}, now, out)
        return out

    def _confirmed_stable(self, rec: ProcessRecord, info: ProcessSnapshot, taken_at: float) -> bool:
        """supervisord says it has been RUNNING, as the same process, for stable_after."""
        started = info.start + (taken_at - info.now)
        return (rec.failing_since is not None and info.state == "RUNNING" and bool(info.start)
                and (not rec.pid or info.pid == rec.pid) and taken_at - started >= self.settings.stable_after)

    def _heard_this_run(self, rec: ProcessRecord, info: ProcessSnapshot, taken_at: float) -> bool:
        """An event named the pid supervisord says is running, so the crashes before it have
        reached us too (events come in order). After a listener restart the reconcile sees the
        current process while the events of earlier runs still wait in supervisord's buffer:
        resolving then would split one crash loop into "recovered" and a new crash. With no
        event LATE_EVENTS after we first asked (not after it started: the listener may have been
        down longer than that), it is taken as stable: its events were lost to an overflow."""
        if (rec.event_pid if rec.event_pid is not None else rec.pid or 0) == info.pid:
            return True
        since = self.pending.unheard_since.setdefault(rec.namespec, taken_at)  # from when we could hear of it
        return taken_at - since >= LATE_EVENTS

    def _align(self, rec: ProcessRecord, info: ProcessSnapshot, taken_at: float, out: Outcome) -> bool:
        changed = not rec.present or rec.state != info.state
        if rec.state != info.state:
            out.history.append(HistoryEntry(taken_at, rec.namespec, "state",
                                f"{info.state} (seen by a reconcile, was {rec.state})"))
        rec.present = True
        skew = taken_at - info.now  # our clock minus supervisord's
        if info.state in LIVE_STATES and info.pid and rec.pid and info.pid != rec.pid:
            self.health.reset(rec.namespec, out)  # another process than we knew of: judged afresh
            rec.remediation_wanted, rec.pid, changed = "", info.pid, True
            rec.running_since = info.start + skew if info.state == "RUNNING" and info.start else None
        if info.state in LIVE_STATES and info.start and coarse_start_differs(rec, info.start + skew):
            rec.last_start, changed = info.start + skew, True  # supervisord's spawn time
        if rec.state != info.state:
            rec.state = info.state
            rec.pid = info.pid or None
            if info.state in LIVE_STATES and info.start:
                rec.state_since = info.start + skew
            elif info.stop and info.start:  # (a stop before a step of the wall clock back is not in the future)
                rec.state_since = min(info.stop + skew, taken_at)
            else:
                rec.state_since = taken_at
            rec.running_since = rec.state_since if info.state == "RUNNING" else None
        return changed

    def _unheard_problems(self, rec: ProcessRecord, info: ProcessSnapshot, now: float, out: Outcome) -> bool:
        ns, open_alert = rec.namespec, self.book.get(PROCESS, rec.namespec)
        if info.state == "FATAL" and open_alert is None:
            rec.spawnerr = info.spawnerr
            self.process.raise_(rec, FATAL, now, out, detail=info.spawnerr, unseen=rec.event_at < rec.state_since)
            return True
        # An unexpected exit that supervisord did not respawn (autorestart=false): one we saw happen
        # (pending_exit_at) or one from before we were listening ("Bad exit code"). If it was
        # respawned, its STARTING event is on the way and raises "crashed". A busy supervisord may
        # not have run its respawn yet when it answered: only a second sighting, answered in a
        # later iteration of its loop, counts.
        unheard = info.spawnerr.startswith("Bad exit code") and open_alert is None
        if info.state != "EXITED":
            changed = rec.down_since is not None
            rec.down_since = None  # (a must_run program runs again, or is stopped: by whom, events say)
            self.pending.exit_sightings.pop(ns, None)
            return changed
        if rec.down_since is None and rec.pending_exit_at is None and not unheard \
                and (open_alert is None or KINDS[open_alert.kind].rank < KINDS[NOT_RUNNING].rank) \
                and self.process.policies.lookup(ns).must_run:
            rec.down_since = rec.state_since or now  # down from before we heard: after its grace, asked again
            return True
        if not (rec.pending_exit_at is not None or unheard or rec.down_since is not None):
            self.pending.exit_sightings.pop(ns, None)
            return False
        must_run_only = rec.pending_exit_at is None and not unheard
        if must_run_only and now - rec.down_since < self.process.policies.lookup(ns).grace:
            return False  # (another reconcile came first: its grace is not over yet)
        if self.pending.exit_sightings.get(ns) != info.stop:
            self.pending.exit_sightings[ns] = info.stop
            self.pending.confirming.add(ns)
            out.reconcile = f"confirm that {ns} stays EXITED"
            return False
        del self.pending.exit_sightings[ns]
        if must_run_only:
            begin_episode(rec, rec.down_since)  # (down since then, not since we confirmed it)
            rec.down_since = None
            self.process.raise_(rec, NOT_RUNNING, now, out)  # (escalates a crash still open)
            return True
        if rec.pending_exit_at is None:
            rec.last_exit_status = info.exitstatus
            rec.last_exit_text = f"exit status {info.exitstatus}"
        unseen = rec.pending_exit_at is None  # a "Bad exit code" from before we listened
        rec.pending_exit_at, rec.down_since = None, None
        self.process.raise_(rec, EXITED, now, out, unseen=unseen)
        return True

