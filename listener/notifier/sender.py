"""The last stage of the notifier: send what is due from the outbox, record every outcome.

Each message goes out on its own, with the target's timeout. A failure retries with exponential
backoff for notify.retry_for, and rests its target for a backoff of its own (ordering.py says
who goes when). A message that fails REFUSED_AFTER times although its target accepted other
messages in between is refused for its content: it is given up on at once, so that the later
messages about its alerts are not held back for retry_for. An accepted message is never resent:
its id is kept in memory until the store has recorded it (a full disk).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from ..config import NotifySettings
from ..store.delivery import DeliveryStore, OutboxMessage
from .ordering import delivery_queues
from .targets import DeliveryError, Target

log = logging.getLogger("lookout.notifier")

REFUSED_AFTER = 3  # failures while the target accepted other messages: it refuses this one
SENT, FAILED, GIVEN_UP = "sent", "failed", "given up"


class OutboxSender:
    def __init__(self, settings: NotifySettings, by_key: dict[str, Target], clock: Callable[[], float],
                 stop: threading.Event) -> None:
        self.settings, self.by_key, self.clock, self._stop = settings, by_key, clock, stop
        self._unrecorded: dict[int, float] = {}  # outbox ids sent but not yet recorded as sent
        self._resting: dict[str, tuple[float, int]] = {}  # target key -> (backoff until, failures in a row)
        self._accepted_at: dict[str, float] = {}  # target key -> when it last accepted a message
        self._failed_at: dict[int, float] = {}  # outbox id -> its last failure (this listener's)
        self._refusals: dict[int, int] = {}  # outbox id -> failures while its target accepted others

    def send_due(self, store: DeliveryStore) -> float | None:
        """One pass: returns when the next message falls due (now, when sends unblocked others)."""
        for msg_id in list(self._unrecorded):  # sent while the store could not record it
            store.record_attempt_by_id(msg_id, self._unrecorded[msg_id], status="sent")
            del self._unrecorded[msg_id]
        now = self.clock()
        pending = store.pending_messages()
        if len(self._failed_at) > 5000:  # superseded re-posts are never sent nor given up on: forget them
            keep = {m.id for m in pending}
            for msg_id in [i for i in self._failed_at if i not in keep]:
                self._forget(msg_id)
        resting = {key: until for key, (until, _) in self._resting.items()}
        latest = now + self.settings.retry_max  # no backoff is longer, whatever the clock did
        queues, wake = delivery_queues(pending, now, resting, latest)
        for queue in queues:
            for msg in queue:
                if self._stop.is_set():
                    return self.clock()
                outcome = self._send_one(store, store.with_text(msg))
                if outcome == FAILED:
                    self._rest(msg.target_key)
                    break  # one failure per target per pass: a target that is down or hangs rests
                if outcome == SENT:
                    self._resting.pop(msg.target_key, None)
                    self._accepted_at[msg.target_key] = self.clock()
        return self.clock() if queues else wake  # what the sends unblocked is looked at in the next pass

    def _rest(self, key: str) -> None:
        """A target's own backoff after a failure: its messages wait together, not one by one."""
        n = self.settings
        _, failures = self._resting.get(key, (0.0, 0))
        self._resting[key] = (self.clock() + min(n.retry_max, n.retry_initial * 2 ** min(failures, 30)), failures + 1)

    def _refused(self, msg: OutboxMessage) -> bool:
        """Failed again although its target accepted another message since its last failure."""
        previous = self._failed_at.get(msg.id)
        self._failed_at[msg.id] = self.clock()
        if previous is not None and self._accepted_at.get(msg.target_key, float("-inf")) > previous:
            self._refusals[msg.id] = self._refusals.get(msg.id, 0) + 1
        return self._refusals.get(msg.id, 0) >= REFUSED_AFTER

    def _forget(self, msg_id: int) -> None:
        self._failed_at.pop(msg_id, None)
        self._refusals.pop(msg_id, None)

    def _send_one(self, store: DeliveryStore, msg: OutboxMessage) -> str:
        """Send one message and record the outcome: SENT, FAILED (retried later) or GIVEN_UP."""
        n = self.settings
        target = self.by_key.get(msg.target_key)
        if target is None:
            log.error("dropping message %d: target %s is no longer configured", msg.id, msg.target_label)
            store.record_attempt(msg, self.clock(), status="dropped", error="target removed")
            return GIVEN_UP
        try:
            target.send(msg.title, msg.body, msg.notify_type)
        except Exception as exc:  # DeliveryError, or a bug in one target: this message alone retries
            error = str(exc) if isinstance(exc, DeliveryError) else f"{type(exc).__name__} while sending"
            now = self.clock()
            refused = self._refused(msg)
            if now - msg.created_at >= n.retry_for or refused:
                why = f"it refused it {REFUSED_AFTER} times while accepting others" if refused else \
                    f"{msg.attempts + 1} attempts"
                log.error("giving up on message %d to %s after %s: %s", msg.id, target.label, why, error)
                store.record_attempt(msg, now, status="expired", error=error)
                self._forget(msg.id)
                return GIVEN_UP  # it no longer holds the later ones back
            delay = min(n.retry_max, n.retry_initial * (2 ** min(msg.attempts, 30)))
            log.warning("message %d to %s failed (%s); retry %d in %.0fs",
                        msg.id, target.label, error, msg.attempts + 1, delay)
            store.record_attempt(msg, now, status="pending", error=error, retry_at=now + delay)
            return FAILED
        self._forget(msg.id)
        sent_at = self.clock()
        self._unrecorded[msg.id] = sent_at  # until recorded: never send it twice
        store.record_attempt(msg, sent_at, status="sent")
        del self._unrecorded[msg.id]
        log.info("message %d sent to %s: %s", msg.id, target.label, msg.title)
        return SENT
