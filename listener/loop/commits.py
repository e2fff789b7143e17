"""The loop's one write path: commit a decision, then acknowledge the event and act on it.

    Outcome --store--> COMMIT --> "RESULT 2\\nOK" --> Effects: the workers told (probes to run,
    lookout's action steps, reconciles and exit lookups, the notifier woken)

Nothing acts on a decision the store does not hold yet: when the store cannot be written, the
commit, its acknowledgement and its effects are held together (`held`, degraded.py) and retried by
the loop; a damaged store (`corrupt`) makes the listener exit 1 with the event unacknowledged.
"""

from __future__ import annotations

import logging
import time

from ..notifier.worker import Notifier
from ..protocol.channel import ProtocolChannel
from ..rules.engine import LIVE_STATES, AlertEngine
from ..rules.models import Outcome, ProcessRecord
from ..store.files import StoreCorrupt, StoreUnavailable
from ..store.keeper import StoreKeeper
from ..workers.nudge import ExitNudger
from ..workers.watcher import SupervisorWatcher
from .degraded import HeldCommit, StoreTrouble
from .health import HealthRunner

log = logging.getLogger("lookout.listener")


class Effects:
    """What a committed outcome sets going on the worker threads."""

    def __init__(self, health: HealthRunner, nudger: ExitNudger, notifier: Notifier, watcher: SupervisorWatcher,
                 own_namespec: str) -> None:
        self.health, self.nudger, self.notifier, self.watcher = health, nudger, notifier, watcher
        self.own_namespec = own_namespec
        self.last_reconcile_at = float("-inf")  # (monotonic)

    def after_commit(self, outcome: Outcome, engine: AlertEngine) -> None:
        for rec in outcome.records.values():
            self.track(rec)
            self.health.sync(rec, engine.policies)
        if outcome.cancelled:
            self.health.cancel(outcome.cancelled)
        for action in outcome.actions:
            self.health.act(action, engine)
        if outcome.reconcile:
            self.reconcile(outcome.reconcile)
        if outcome.notices:
            self.notifier.wake()
        if outcome.exit_lookups:
            self.watcher.lookup_exits(outcome.exit_lookups)
        if outcome.start_lookups:
            self.watcher.lookup_starts(outcome.start_lookups)

    def track(self, rec: ProcessRecord) -> None:
        """The nudger watches the pid of every live process but the listener's own."""
        if rec.namespec != self.own_namespec:
            self.nudger.track(rec.namespec, rec.pid if rec.state in LIVE_STATES else None)

    def reconcile(self, why: str) -> None:
        self.last_reconcile_at = time.monotonic()
        self.watcher.reconcile(why)


class Commits:
    """Commit, then acknowledge (ack=True) and act; or hold all of that until the store can be written."""

    def __init__(self, keeper: StoreKeeper, channel: ProtocolChannel, trouble: StoreTrouble, effects: Effects) -> None:
        self.keeper, self.channel, self.trouble, self.effects = keeper, channel, trouble, effects
        self.held: HeldCommit | None = None
        self.corrupt: StoreCorrupt | None = None

    def commit(self, outcome: Outcome, engine: AlertEngine | None, *, ack: bool = False, **kwargs: object) -> bool:
        """Returns whether it was committed now."""
        kwargs.setdefault("stopping", engine.stopping if engine else False)
        try:
            self.keeper.commit(outcome, **kwargs)
        except StoreCorrupt as exc:
            self.held = HeldCommit(outcome, kwargs, ack)
            self.corrupted(exc)
            return False
        except StoreUnavailable as exc:
            self.held = HeldCommit(outcome, kwargs, ack)
            self.trouble.failed(exc, "committing")
            return False
        if ack:
            self.channel.ack()
        if engine is not None:
            self.effects.after_commit(outcome, engine)
        return True

    def apply(self, outcome: Outcome, engine: AlertEngine, meta: dict[str, object] | None = None) -> None:
        """Persist what changed; requests alone (a reconcile, lookups) need no commit."""
        if outcome or meta:
            self.commit(outcome, engine, meta=meta)
        else:
            self.effects.after_commit(outcome, engine)

    def retry_held(self) -> HeldCommit:
        """Commit the held decision (StoreUnavailable while the store still cannot take it); the
        caller then finishes it."""
        held = self.held
        assert held is not None
        self.keeper.commit(held.outcome, **held.kwargs)
        self.held = None
        return held

    def finish(self, held: HeldCommit, engine: AlertEngine) -> None:
        """A held decision committed at last: its acknowledgement and its effects."""
        if held.ack:
            self.channel.ack()
        self.effects.after_commit(held.outcome, engine)

    def corrupted(self, exc: StoreCorrupt) -> None:
        """Damaged under us: exit 1; the event stays unacknowledged, and the next listener moves
        the file aside at start and gets the event again."""
        log.critical("the store became unusable (%s): exiting (status 1) so that it is replaced at the next start",
                     exc)
        self.corrupt = exc
