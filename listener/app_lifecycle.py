"""The protocol loop's part in supervisord's own life (lifecycle.py) and in the dead man's switch
(deadman.py). A mixin of app.Listener, for the size of one file: it uses the listener's engine,
store keeper, notifier and commit.

- at start, before the listener writes who it is: what the previous supervisord left behind;
- after the first reconcile: the one message about a previous unclean end or a reboot, and the
  programs that now run twice (an alert each); on every later reconcile: whether they still do;
- stdin closed: the critical message when supervisord died without shutting down, written to
  the outbox and sent before the listener exits (or by the next listener);
- every loop turn: the dead man's switch, told whether lookout is healthy (its store writable,
  its notifications going out).
"""

from __future__ import annotations

import logging
import time

from .deadman import DeadmanSwitch
from .lifecycle import LISTENER_STOPPED, Lifecycle
from .rules.models import Outcome

log = logging.getLogger("lookout.listener")
LAST_WORDS = 4.0  # seconds the listener waits for its last message to go out before it exits
ORPHAN_CHECK = 2.0  # seconds between looks in /proc at the orphans still alive (cheap: a stat per orphan)


class LifecycleMixin:
    lifecycle: Lifecycle
    deadman: DeadmanSwitch

    def _start_lifecycle(self) -> None:
        self.lifecycle = Lifecycle(self.config, self.own_namespec)
        self.deadman = DeadmanSwitch(self.config.deadman, time.monotonic, on_death=self._wake)
        self._reported_restart = False
        self._deadman_saved: dict[str, object] = {}
        self._orphans_checked_at = float("-inf")  # (monotonic)
        self._deadman_carried = False  # the previous listener's counts are added before ours are written

    def _previous_life(self) -> dict[str, object]:
        """Read what the previous supervisord left (before this listener's meta overwrites it)."""
        state = self.keeper.state
        keys = ("boot_id", "supervisord_pid", "supervisord_started", "supervisord_end", "supervisord_gone_at",
                "last_tick_at", "deadman_ok", "deadman_fail_sent", "deadman_error")
        meta = {key: state.meta(key) for key in keys}
        self.deadman.carry_over(meta)
        self._deadman_carried = True
        last_event = state.last_event_at()
        return self.lifecycle.at_start(meta, self.engine.stopping, last_event, self.engine.records.values(),
                                       self.ppid)

    def _after_reconcile(self, infos: list, now: float) -> None:
        if not self._reported_restart:
            self._reported_restart = True
            said = self.lifecycle.after_first_reconcile(infos, now)
            if said is not None:
                self.notifier.announce(*said)
        self._orphans_due(now, force=True)

    def _orphans_due(self, now: float, force: bool = False) -> None:
        """Whether the orphans still run: on every reconcile, and every ORPHAN_CHECK while there are
        any, so an alert resolves within seconds of the orphan's end."""
        if not (self.lifecycle.orphans or self.engine.orphans.has_open()):
            return
        if not force and time.monotonic() - self._orphans_checked_at < ORPHAN_CHECK:
            return
        self._orphans_checked_at = time.monotonic()
        self._apply(self.engine.on_orphans(self.lifecycle.twice(self.engine.records), now),
                    meta=self.lifecycle.orphans_meta())

    def _supervisord_gone(self) -> None:
        """stdin closed: supervisord shut down (nothing to say) or died (say it, now)."""
        engine = self.engine
        if engine is None:
            return
        meta, message = self.lifecycle.gone(engine.records.values(), engine.stopping, self.ppid, self.clock())
        if meta:
            self._commit(Outcome(), meta=meta)
        if message is not None:
            log.critical("%s", message[2])
            self.notifier.announce(message[0], message[1], message[2], "critical")
            if not self.notifier.settle(LAST_WORDS):
                log.warning("the message about supervisord's death is still in the outbox: the next listener sends "
                            "it")

    def _stopped_by_signal(self) -> None:
        """Stopped by a signal (supervisorctl stop, a shutdown, systemd stopping the unit at once):
        whatever supervisord does next is not seen, so the next listener must not call it unclean."""
        if self.engine is not None and self.held is None and self.keeper.state is not None:
            self._commit(Outcome(), meta={"supervisord_end": "clean" if self.engine.stopping else LISTENER_STOPPED})

    def _deadman_due(self) -> None:
        """Every loop turn, before the store is known usable: a degraded lookout calls the fail form."""
        self.deadman.due(time.monotonic(), self._degraded())  # an interval: no wall-clock step moves it
        stats = self.deadman.stats()
        if self.deadman.enabled and self._deadman_carried and stats != self._deadman_saved and self.held is None \
                and self.engine is not None and self.keeper.state is not None:
            self._deadman_saved = stats
            self._commit(Outcome(), meta=stats)  # for lookout_deadman_pings_total

    def _degraded(self) -> str:
        """'' while lookout works, else why not (the dead man's switch gets its fail form)."""
        if self.held is not None or self.engine is None:
            return "lookout cannot write its store: alerts are held"
        failing = self.notifier.failing_since  # (on the notifier's frame of the clock, as it is written)
        if failing is not None and self.notifier.clock() - failing >= self.config.deadman.fail_after:
            return "lookout's notifications have been failing"
        return ""
