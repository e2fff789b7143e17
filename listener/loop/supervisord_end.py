"""The protocol loop's part in supervisord's own life (supervisord_life.py) and in the dead man's switch
(workers/deadman.py). The loop owns one SupervisordEnd and calls it at the moments below; it writes through the
loop's one write path (commits.py) and is handed the engine, which exists once the store could be opened.

- at start, before the listener writes who it is: what the previous supervisord left behind
  (the store's orphans of every generation, and what the sidecar file says a listener that
  could not write the store left: its orphans, its death message, its unfinished episode);
- after the first reconcile: the one message about a previous unclean end or a reboot, and the
  programs that now run twice (an alert each); on every later reconcile: whether they still do;
- stdin closed: the critical message when supervisord died without shutting down, written to
  the outbox and sent before the listener exits (or by the next listener). When the store cannot
  be written, it goes straight to every target from memory, with the orphans and the alerts held
  back, and the sidecar keeps it for the next listener, which sends it late to any target that
  did not confirm it. The orphans then include what the listener saw supervisord run while the
  store could not be written (a look every LOOK_WHILE_HELD: a respawn's events wait in
  supervisord's buffer behind the held one);
- every loop turn: the dead man's switch, told whether lookout is healthy (its store writable,
  its notifications going out).
"""

from __future__ import annotations

import logging
import os
import time
from collections import deque
from collections.abc import Callable
from dataclasses import replace

from ...clock import LookoutClock
from ...config import Config
from ...procfs import spawn_time
from ...redact import scrub
from ...text import clean
from ..notifier.render import resolved_as, what
from ..notifier.worker import Notifier
from ..protocol.events import MalformedEvent, ProcessStateEvent, decode, decode_delivery
from ..protocol.parser import Envelope, Garbage
from ..rules.engine import AlertEngine
from ..rules.models import REMINDER, RESOLVED, ActionResult, Outcome, display_name
from ..store.files import StoreUnavailable
from ..store.keeper import StoreKeeper
from ..store.sidecar import DeathNote, Sidecar, SidecarState
from ..workers.deadman import DeadmanSwitch
from ..workers.inbox import Inbox, Posted
from ..workers.watcher import Sighting, SupervisorWatcher
from .commits import Commits
from .degraded import StoreTrouble
from .health import HealthRunner
from .supervisord_life import LISTENER_STOPPED, Lifecycle, legacy_orphans

log = logging.getLogger("lookout.listener")
LAST_WORDS = 4.0  # seconds the listener waits for its last message to go out before it exits
# Stopped by a signal, the listener waits at most this long for the answer of its own step in flight
# (a stop waits out the program's stopwaitsecs); with the notifier's 3 s after it, it still ends
# within the 10 s stopwaitsecs conf.d/lookout.conf gives it.
STEP_ANSWER_WAIT = 6.0
ORPHAN_CHECK = 2.0  # seconds between looks in /proc at the orphans still alive (cheap: a stat per orphan)
LOOK_WHILE_HELD = 2.0  # seconds between getAllProcessInfo calls while the store cannot be written


class SupervisordEnd:
    def __init__(self, config: Config, clock: LookoutClock, own_namespec: str, ppid: int, *, sidecar: Sidecar,
                 trouble: StoreTrouble, notifier: Notifier, keeper: StoreKeeper, commits: Commits,
                 watcher: SupervisorWatcher, health: HealthRunner, inbox: Inbox[Posted],
                 backlog: deque[Envelope | Garbage], results: deque[Posted], wake: Callable[[], None]) -> None:
        self.config, self.clock, self.ppid = config, clock, ppid
        self.sidecar, self.trouble, self.notifier = sidecar, trouble, notifier
        self.keeper, self.commits = keeper, commits
        self.watcher, self.health, self.inbox = watcher, health, inbox
        self.backlog, self.results = backlog, results  # the loop's: read here, never reordered
        self.lifecycle = Lifecycle(config, own_namespec)
        self._previous_meta: dict[str, object] | None = None  # read once: a held first commit must not read ours
        self.left_by_previous = sidecar.open(os.getpid(), spawn_time(os.getpid()) or clock())
        if self.left_by_previous.degraded_since:
            trouble.inherit(self.left_by_previous)
        self.deadman = DeadmanSwitch(config.deadman, time.monotonic, on_death=wake)
        self._reported_restart = False
        self._deadman_saved: dict[str, object] = {}
        self._orphans_checked_at = float("-inf")  # (monotonic)
        self._deadman_carried = False  # the previous listener's counts are added before ours are written
        self._look_due = float("-inf")  # (monotonic) the next look while the store cannot be written
        self._looks_in: float | None = None  # the episode (trouble.since) lifecycle.sighted belongs to

    def previous_life(self, engine: AlertEngine) -> dict[str, object]:
        """Read what the previous supervisord left (before this listener's meta overwrites it)."""
        if self._previous_meta is not None:
            return self._previous_meta
        state = self.keeper.state
        keys = ("boot_id", "supervisord_pid", "supervisord_started", "supervisord_end", "supervisord_gone_at",
                "last_tick_at", "deadman_ok", "deadman_fail_sent", "deadman_error", "orphans")
        meta = {key: state.meta(key) for key in keys}
        self.deadman.carry_over(meta)
        self._deadman_carried = True
        last_event = state.last_event_at()
        known = state.load_orphans() or legacy_orphans(meta.pop("orphans"))
        left = self.left_by_previous
        self._previous_meta = self.lifecycle.at_start(
            meta, engine.stopping, last_event, engine.records.values(), self.ppid, known=known,
            left=left.orphans, died_at=left.death.at if left.death else 0.0, now=self.clock())
        return self._previous_meta

    def after_ready(self) -> None:
        """The first commit went through: what a listener that could not write the store left is
        told now (its episode's end, its death message to the targets that missed it), and its
        orphans are in the store."""
        left, self.left_by_previous = self.left_by_previous, SidecarState()
        self.trouble.wrote()
        if left.orphans:
            self.sidecar.orphans_recorded()
        death = left.death
        if death is None:
            return
        if death.undelivered:
            log.warning("sending late, to %d target(s), the message about supervisord's death that the previous "
                        "listener could not deliver", len(death.undelivered))
            self.notifier.announce(death.alertname, f"{death.title} (sent late)",
                                   "Sent late: this message could not be delivered when supervisord died (lookout "
                                   f"could not write its store then).\n\n{death.text}", "critical",
                                   targets=tuple(death.undelivered))
        self.sidecar.death_told()

    def after_reconcile(self, infos: list, now: float, engine: AlertEngine) -> None:
        if not self._reported_restart:
            self._reported_restart = True
            said = self.lifecycle.after_first_reconcile(infos, now)
            if said is not None:
                self.notifier.announce(*said)
        self.orphans_due(now, engine, force=True)

    def orphans_due(self, now: float, engine: AlertEngine, force: bool = False) -> None:
        """Whether the orphans still run: on every reconcile, and every ORPHAN_CHECK while there are
        any, so an alert resolves within seconds of the orphan's end."""
        if not (self.lifecycle.orphans or engine.orphans.has_open()):
            return
        if not force and time.monotonic() - self._orphans_checked_at < ORPHAN_CHECK:
            return
        self._orphans_checked_at = time.monotonic()
        programs = self.lifecycle.twice(engine.records, now)
        outcome = engine.on_orphans(programs, now)
        found_or_gone = self.lifecycle.take_unsaved()
        if outcome or found_or_gone:
            self.commits.commit(outcome, engine, orphans=found_or_gone)
        else:
            self.commits.effects.after_commit(outcome, engine)

    def look_while_held(self) -> None:
        """While the store cannot be written: which pid each program runs, every LOOK_WHILE_HELD.
        The event in hand stays unacknowledged, so a respawn's RUNNING (its new pid) waits in
        supervisord's buffer: without a look, a death now would leave that process unnamed. The
        inbox's other results (the watcher's, probe and action results) wait, in order, for the loop."""
        if not self.trouble.active:
            return
        self._this_episode()
        for result in self.inbox.drain():
            if not isinstance(result, Sighting):
                self.results.append(result)
                continue
            at = self.clock.from_mono(result.taken_mono)
            if self.trouble.since is not None and at < self.trouble.since:
                continue  # asked for in an episode that has ended
            for info in result.infos:
                if self.lifecycle.saw(info.namespec, info.pid, info.state, at):
                    log.info("while the store cannot be written: %s runs as pid %d", info.namespec, info.pid)
        if time.monotonic() >= self._look_due:
            self._look_due = time.monotonic() + LOOK_WHILE_HELD
            self.watcher.look()

    def _this_episode(self) -> None:
        """What was seen in an earlier episode of an unwritable store says nothing of this one."""
        if self._looks_in != self.trouble.since:
            self._looks_in = self.trouble.since
            self.lifecycle.sighted.clear()

    def _seen_while_held(self, records: list) -> tuple[list, dict[str, int]]:
        """The records as memory has them at supervisord's death: while the store cannot be written,
        with the pids the looks saw and those of an event read but not yet handled (newer than any
        record); and which pids that changed (namespec -> pid)."""
        if not self.trouble.active:
            return records, {}
        self._this_episode()
        now = self.clock()
        for item in self.backlog:
            if isinstance(item, Envelope):
                try:
                    event = decode(item, decode_delivery(item))
                except MalformedEvent:
                    continue
                if isinstance(event, ProcessStateEvent):
                    self.lifecycle.saw(event.namespec, event.pid or 0, event.state, now)
        return self.lifecycle.with_sightings(records)

    def supervisord_gone(self, engine: AlertEngine | None) -> None:
        """stdin closed: supervisord shut down (nothing to say) or died (say it, now)."""
        records = list(engine.records.values()) if engine is not None else []
        records, respawned = self._seen_while_held(records)
        meta, message = self.lifecycle.gone(records, engine.stopping if engine is not None else False, self.ppid,
                                            self.clock(), records_known=engine is not None)
        written = bool(meta) and self._last_commit(meta, engine)
        if message is None:
            return
        log.critical("%s", message[2])
        if not written:
            self._last_words_from_memory(*message, respawned=respawned)
            return
        self.notifier.announce(message[0], message[1], message[2], "critical")
        if not self.notifier.settle(LAST_WORDS):
            log.warning("the message about supervisord's death is still in the outbox: the next listener sends it")

    def _last_commit(self, meta: dict[str, object], engine: AlertEngine | None) -> bool:
        """Write supervisord's end and the orphans it left, after the decision held back (if any:
        nothing waits for its acknowledgement now); False when the store cannot take it."""
        if engine is None or self.keeper.state is None:
            return False
        orphans = self.lifecycle.take_unsaved()
        try:
            held = self.commits.held
            if held is not None:
                self.keeper.commit(held.outcome, **held.kwargs)
                self.commits.held = None
            self.keeper.commit(Outcome(), meta=meta, orphans=orphans, stopping=engine.stopping)
        except StoreUnavailable as exc:
            self.lifecycle.unsaved = orphans + self.lifecycle.unsaved
            self.trouble.failed(exc, "recording supervisord's end")
            return False
        self.trouble.resolved()
        self.notifier.wake()
        return True

    def _last_words_from_memory(self, alertname: str, title: str, text: str,
                                respawned: dict[str, int] | None = None) -> None:
        """The store cannot be written, so neither can the outbox: the death message goes straight
        to every target, with what only memory holds; the sidecar keeps it (and which targets did
        not confirm it) and the orphans for the next listener."""
        now = self.clock()
        since = self.trouble.since if self.trouble.since is not None else now
        text += (f"\n\nlookout cannot write its store {self.config.state_path} "
                 f"({self.trouble.reason or 'it could not be opened'}) since {_clock(since)}: this message comes "
                 "straight from the listener's memory.")
        held = self._held_back(respawned or {})
        if held:
            text += " Held back, neither in its store nor sent yet:\n" + "\n".join(held)
        text = scrub(text)  # (an alert's detail may name a probe URL's token)
        ticket = self.notifier.direct(alertname, title, text, "critical")
        keys = [t.key for t in self.notifier.targets]
        note = DeathNote(now, self.ppid, alertname, title, text, undelivered=keys)
        self.sidecar.died(note, self.lifecycle.orphans)  # first: a kill while it is sent loses nothing
        deadline = time.monotonic() + LAST_WORDS + self.config.notify.timeout  # one try each, however slow
        outcome = self.notifier.direct_outcome(ticket)
        while len(outcome) < len(keys) and time.monotonic() < deadline:
            time.sleep(0.05)  # the notifier's thread sends; each target's first answer is what we wait for
            outcome = self.notifier.direct_outcome(ticket)
        missed = [k for k in keys if not outcome.get(k)]
        self.sidecar.died(replace(note, undelivered=missed), self.lifecycle.orphans)
        if missed:
            log.warning("the message about supervisord's death did not reach %d target(s): the next listener sends "
                        "it late", len(missed))

    def _held_back(self, respawned: dict[str, int]) -> list[str]:
        """The news in the commit held back (an unexpected exit seen, an alert raised or resolved);
        respawned: the pids a look saw since (namespec -> pid)."""
        held = self.commits.held
        if held is None:
            return []
        outcome, lines, named = held.outcome, [], set()
        for notice in outcome.notices:
            alert = outcome.alerts.get(notice.key)
            if alert is None or notice.kind == REMINDER:
                continue
            named.add(alert.namespec)
            if notice.kind == RESOLVED:
                lines.append(f"- RESOLVED {display_name(alert.namespec)} {resolved_as(alert)} at {_clock(notice.at)}")
            else:
                lines.append(f"- {alert.severity.upper()} {display_name(alert.namespec)} {what(alert)} at "
                             f"{_clock(notice.at)}" + (f": {clean(alert.detail)[:300]}" if alert.detail else ""))
        for rec in outcome.records.values():
            if rec.pending_exit_at is not None and rec.namespec not in named:
                how = f" ({rec.last_exit_text})" if rec.last_exit_text else ""
                pid = respawned.get(rec.namespec)
                after = (f"supervisord started it again as pid {pid} before it died" if pid else
                         "whether supervisord started it again before it died is not known")
                lines.append(f"- {display_name(rec.namespec)} crashed at {_clock(rec.pending_exit_at)}: an "
                             f"unexpected exit{how}; {after}")
        return lines[:20]

    def stopped_by_signal(self, engine: AlertEngine | None) -> None:
        """Stopped by a signal (supervisorctl stop, a shutdown, systemd stopping the unit at once):
        whatever supervisord does next is not seen, so the next listener must not call it unclean."""
        if engine is not None and self.commits.held is None and self.keeper.state is not None:
            self._commit_answers_in_flight(engine)
            if self.commits.held is None:
                self.commits.commit(Outcome(), engine, meta={"supervisord_end": "clean" if engine.stopping
                                                             else LISTENER_STOPPED})

    def _commit_answers_in_flight(self, engine: AlertEngine) -> None:
        """A step of lookout's own action may be in flight (`supervisorctl restart lookout` while its
        stop waits out stopwaitsecs). Its answer is the only proof that the stop was lookout's: without
        it the next listener finds the program STOPPED and cannot tell whose stop that was. So wait for
        it (bounded) and commit it. The step it calls for next (the restart's start) is committed as the
        one in flight but not made here (a start waits out startsecs): the next listener finds it
        interrupted and makes it (rules/actions.py: resume), only while nobody started the program since."""
        if not self.health.executor.settle(STEP_ANSWER_WAIT):
            log.warning("lookout's own action is still waiting for supervisord's answer after %.0fs: the next "
                        "listener settles it from supervisord's view", STEP_ANSWER_WAIT)
        outcome = Outcome()
        self.results.extend(self.inbox.drain())
        for result in [r for r in [*self.health.received, *self.results] if isinstance(r, ActionResult)]:
            try:
                outcome.merge(engine.on_action_result(result, self.clock()))
            except Exception:  # a rules bug must not cost the commit of the others
                log.exception("rules failed on the answer of lookout's %s of %s", result.step, result.namespec)
        outcome.actions = []  # the next listener makes them (see above); this one hands out nothing more
        if outcome:
            self.commits.commit(outcome, engine)

    def deadman_due(self, engine: AlertEngine | None) -> None:
        """Every loop turn, before the store is known usable: a degraded lookout calls the fail form."""
        self.deadman.due(time.monotonic(), self._degraded(engine))  # an interval: no wall-clock step moves it
        stats = self.deadman.stats()
        if self.deadman.enabled and self._deadman_carried and stats != self._deadman_saved \
                and self.commits.held is None and engine is not None and self.keeper.state is not None:
            self._deadman_saved = stats
            self.commits.commit(Outcome(), engine, meta=stats)  # for lookout_deadman_pings_total

    def _degraded(self, engine: AlertEngine | None) -> str:
        """'' while lookout works, else why not (the dead man's switch gets its fail form)."""
        if self.commits.held is not None or engine is None:
            return "lookout cannot write its store: alerts are held"
        failing = self.notifier.failing_since  # (on the notifier's frame of the clock, as it is written)
        if failing is not None and self.notifier.clock() - failing >= self.config.deadman.fail_after:
            return "lookout's notifications have been failing"
        return ""


def _clock(at: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(at))
