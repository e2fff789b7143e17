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

from .deadman import DeadmanSwitch
from .lifecycle import Lifecycle
from .rules.models import Outcome

log = logging.getLogger("lookout.listener")
LAST_WORDS = 4.0  # seconds the listener waits for its last message to go out before it exits


class LifecycleMixin:
    lifecycle: Lifecycle
    deadman: DeadmanSwitch

    def _start_lifecycle(self) -> None:
        self.lifecycle = Lifecycle(self.config, self.own_namespec)
        self.deadman = DeadmanSwitch(self.config.deadman, self.clock, on_death=self._wake)
        self._reported_restart = False
        self._deadman_saved: dict[str, object] = {}

    def _previous_life(self) -> dict[str, object]:
        """Read what the previous supervisord left (before this listener's meta overwrites it)."""
        state = self.keeper.state
        meta = {key: state.meta(key) for key in ("boot_id", "supervisord_pid", "supervisord_end", "last_tick_at")}
        last_event = state.last_event_at()
        return self.lifecycle.at_start(meta, self.engine.stopping, last_event, self.engine.records.values(),
                                       self.ppid)

    def _after_reconcile(self, infos: list, now: float) -> None:
        if not self._reported_restart:
            self._reported_restart = True
            said = self.lifecycle.after_first_reconcile(infos, now)
            if said is not None:
                self.notifier.announce(*said)
        if self.lifecycle.orphans or self.engine.orphans.alerts.alerts:
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

    def _deadman_due(self) -> None:
        """Every loop turn, before the store is known usable: a degraded lookout calls the fail form."""
        self.deadman.due(self.clock(), self._degraded())
        stats = self.deadman.stats()
        if self.deadman.enabled and stats != self._deadman_saved and self.held is None and self.engine is not None \
                and self.keeper.state is not None:
            self._deadman_saved = stats
            self._commit(Outcome(), meta=stats)  # for lookout_deadman_pings_total

    def _degraded(self) -> str:
        """'' while lookout works, else why not (the dead man's switch gets its fail form)."""
        if self.held is not None or self.engine is None:
            return "lookout cannot write its store: alerts are held"
        failing = self.notifier.failing_since
        if failing is not None and self.clock() - failing >= self.config.deadman.fail_after:
            return "lookout's notifications have been failing"
        return ""
