"""The last stage of the notifier: send what is due from the outbox, record every outcome.

Each message goes out on its own, with the target's timeout. A failure retries with exponential
backoff for notify.retry_for, and rests its target for a backoff of its own (ordering.py says
who goes when). A message that fails REFUSED_AFTER times over REFUSED_FOR although its target
accepted other messages in between is refused for its content: it is given up on at once, so that the later
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

# A message refused this often while its target accepted other messages, over at least this
# long, is refused for its content. Both generous: a target that rate-limits (429) or flaps
# fails a message now and then while accepting others, and must not lose it.
REFUSED_AFTER, REFUSED_FOR = 5, 1800.0
MIN_ATTEMPTS = 3  # retry_for over, a message is still tried this often before it is given up on
CLOCK_STEP = 1.0  # a clock that goes back more than this stepped (NTP, a VM restored)
SENT, FAILED, GIVEN_UP = "sent", "failed", "given up"


class OutboxSender:
    def __init__(self, settings: NotifySettings, by_key: dict[str, Target], clock: Callable[[], float],
                 stop: threading.Event) -> None:
        self.settings, self.by_key, self.clock, self._stop = settings, by_key, clock, stop
        self._unrecorded: dict[int, float] = {}  # outbox ids sent but not yet recorded as sent
        self._resting: dict[str, tuple[float, int]] = {}  # target key -> (backoff until, failures in a row)
        self._accepted_at: dict[str, float] = {}  # target key -> when it last accepted a message
        self._failed_at: dict[int, float] = {}  # outbox id -> its last failure (this listener's)
        self._refusals: dict[int, tuple[int, float]] = {}  # outbox id -> (refusals, the first one's time)
        self._last_now: float | None = None

    def send_due(self, store: DeliveryStore) -> float | None:
        """One pass: returns when the next message falls due (now, when sends unblocked others)."""
        for msg_id in list(self._unrecorded):  # sent while the store could not record it
            store.record_attempt_by_id(msg_id, self._unrecorded[msg_id], status="sent")
            del self._unrecorded[msg_id]
        now = self.clock()
        if self._last_now is not None and now < self._last_now - CLOCK_STEP:
            self._stepped_back(store, self._last_now - now, now)
        self._last_now = now
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
                full = store.with_text(msg)
                if full is None:
                    continue
                outcome = self._send_one(store, full)
                if outcome == FAILED:
                    self._rest(msg.target_key)
                    break  # one failure per target per pass: a target that is down or hangs rests
                if outcome == SENT:
                    self._resting.pop(msg.target_key, None)
                    self._accepted_at[msg.target_key] = self.clock()
        return self.clock() if queues else wake  # what the sends unblocked is looked at in the next pass

    def shift(self, delta: float) -> None:
        """The notifier's frame moved with a step of the wall clock (the outbox's rows move with it,
        worker.py): so do the times held here; the step is not one to cope with below."""
        self._resting = {k: (until + delta, n) for k, (until, n) in self._resting.items()}
        self._accepted_at = {k: t + delta for k, t in self._accepted_at.items()}
        self._failed_at = {k: t + delta for k, t in self._failed_at.items()}
        self._refusals = {k: (n, first + delta) for k, (n, first) in self._refusals.items()}
        self._unrecorded = {k: t + delta for k, t in self._unrecorded.items()}
        if self._last_now is not None:
            self._last_now += delta

    def _stepped_back(self, store: DeliveryStore, step: float, now: float) -> None:
        """A clock that stepped back unannounced (the loop's own clock never does: it announces its
        steps, shift()): retries and rests were set on the old clock; move them with it, so none
        waits the step."""
        log.warning("the clock stepped back %.0fs: pending retries move with it", step)
        store.retries_stepped_back(step, now)
        self._resting = {k: (max(now, until - step), n) for k, (until, n) in self._resting.items()}
        self._accepted_at = {k: t - step for k, t in self._accepted_at.items()}
        self._failed_at = {k: t - step for k, t in self._failed_at.items()}

    def _rest(self, key: str) -> None:
        """A target's own backoff after a failure: its messages wait together, not one by one."""
        n = self.settings
        _, failures = self._resting.get(key, (0.0, 0))
        self._resting[key] = (self.clock() + min(n.retry_max, n.retry_initial * 2 ** min(failures, 30)), failures + 1)

    def _refused(self, msg: OutboxMessage) -> bool:
        """Failed again although its target accepted another message since its last failure."""
        now = self.clock()
        previous = self._failed_at.get(msg.id)
        self._failed_at[msg.id] = now
        count, first = self._refusals.get(msg.id, (0, now))
        if previous is not None and self._accepted_at.get(msg.target_key, float("-inf")) > previous:
            count += 1
            self._refusals[msg.id] = (count, first)
        return count >= REFUSED_AFTER and now - first >= REFUSED_FOR

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
            # retry_for, but a few tries at least: one that waited behind another has its chance
            if (now - msg.created_at >= n.retry_for and msg.attempts + 1 >= MIN_ATTEMPTS) or refused:
                why = (f"{msg.attempts + 1} attempts" if not refused else
                       f"it refused it {REFUSED_AFTER} times in {REFUSED_FOR / 60:.0f}+ minutes while accepting others")
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
