"""The last stage of the notifier: hand what is due from the outbox to the targets' lanes, and
record every answer.

Each target's lane sends one message at a time under one deadline for the whole request
(lanes.py); the target's next message is handed over once the answer is in, and nothing here
waits for one. A failure retries with exponential backoff for notify.retry_for, and rests its
target for a backoff of its own (ordering.py says who goes when). A message that fails
REFUSED_AFTER times over REFUSED_FOR although its target accepted other messages in between is
refused for its content: it is given up on at once, so that the later messages about its alerts
are not held back for retry_for. A send whose request the target's host took in full but did not
answer in time is "maybe delivered": sent again with the same backoff, MAX_COPIES copies in all,
then given up on as maybe delivered (the target may have it; another copy would be the 4th). A
send out when its listener stopped counts as a copy too (the next listener's sends_interrupted),
so restarts between copies never make more than MAX_COPIES. An accepted message is never resent:
its answer is kept in memory until the store has recorded it (a full disk).

A target whose sends get no answer within the deadline hangs: it counts as failing (the targets
table: `lookout status`, /metrics, the dead man's switch) until it answers in time again.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import replace

from ...config import NotifySettings, format_duration
from ..store.delivery import DeliveryStore, OutboxMessage, TargetRow
from .lanes import Job, Lanes, Result, Verdict
from .ordering import delivery_queues
from .target import Target

log = logging.getLogger("lookout.notifier")

# A message refused this often while its target accepted other messages, over at least this
# long, is refused for its content. Both generous: a target that rate-limits (429) or flaps
# fails a message now and then while accepting others, and must not lose it.
REFUSED_AFTER, REFUSED_FOR = 5, 1800.0
MIN_ATTEMPTS = 3  # retry_for over, a message is still tried this often before it is given up on
MAX_COPIES = 3  # sends of one message that its target's host took in full, answered in time or not
CLOCK_STEP = 1.0  # a clock that goes back more than this stepped (NTP, a VM restored)
STATS = {Verdict.SENT: "success", Verdict.FAILED: "failure", Verdict.TIMED_OUT: "timeout",
         Verdict.MAYBE: "maybe_delivered"}  # lookout_notifications_total{result}


class OutboxSender:
    def __init__(self, settings: NotifySettings, by_key: dict[str, Target], clock: Callable[[], float],
                 stop: threading.Event, lanes: Lanes) -> None:
        self.settings, self.by_key, self.clock, self._stop, self.lanes = settings, by_key, clock, stop, lanes
        self._answers: list[Result] = []  # outbox sends answered, not yet recorded
        self._out: dict[str, int] = {}  # target key -> the outbox id handed to its lane, until its answer is recorded
        self.system_answers: list[Result] = []  # answers to the notifier's messages from memory
        self._targets: dict[str, TargetRow] = {}  # target key -> as last judged (hanging or not)
        self._unsaved: set[str] = set()  # target keys whose row the store does not have yet
        self._store: DeliveryStore | None = None  # the store last used: another one gets the targets' rows
        self.hanging_since: float | None = None  # the earliest hanging_since of a configured target
        self._resting: dict[str, tuple[float, int]] = {}  # target key -> (backoff until, failures in a row)
        self._accepted_at: dict[str, float] = {}  # target key -> when it last accepted a message
        self._failed_at: dict[int, float] = {}  # outbox id -> its last failure (this listener's)
        self._refusals: dict[int, tuple[int, float]] = {}  # outbox id -> (refusals, the first one's time)
        self._last_now: float | None = None

    @property
    def unrecorded(self) -> bool:
        return bool(self._answers)

    def collect(self) -> None:
        """Take the lanes' answers: each says whether its target hangs; outbox answers wait to be
        recorded (send_due), the others go to the notifier (system_answers)."""
        for result in self.lanes.results():
            self._judge(result)
            if isinstance(result.job.ref, OutboxMessage):
                self._answers.append(result)
            else:
                self.system_answers.append(result)

    def send_due(self, store: DeliveryStore) -> float | None:
        """One pass: record the answers, hand each idle lane its target's next message. Returns when
        to look again: now when answers were recorded (they may unblock others), else when the next
        message falls due (a lane's answer wakes the notifier sooner)."""
        self._start(store)
        self.collect()
        recorded = bool(self._record_answers(store))
        for key in list(self._unsaved):
            row = self._targets[key]
            store.save_target(row, self.clock())
            self._unsaved.discard(key)
        now = self.clock()
        if self._last_now is not None and now < self._last_now - CLOCK_STEP:
            self._stepped_back(store, self._last_now - now, now)
        self._last_now = now
        if self._stop.is_set():
            return None  # stopping: answers recorded, nothing new handed out
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
                if msg.target_key not in self.by_key:
                    log.error("dropping message %d: target %s is no longer configured", msg.id, msg.target_label)
                    store.record_attempt(msg, self.clock(), status="dropped", error="target removed")
                    continue
                if msg.copies >= MAX_COPIES:
                    self._copies_spent(store, msg)  # the last one went out with a listener that stopped
                    continue
                if msg.target_key in self._out or not self.lanes.idle(msg.target_key):
                    break  # its send is out (or its answer not recorded yet): the answer wakes the notifier
                full = store.with_text(msg)
                if full is None:
                    continue
                store.mark_sending(msg.id, self.clock())
                self._out[msg.target_key] = msg.id
                self.lanes.submit(Job(msg.target_key, full.title, full.body, full.notify_type, full))
                self.collect()  # a lane without a thread of its own has answered already
                verdicts = self._record_answers(store)
                recorded = recorded or bool(verdicts)
                if verdicts.get(msg.id) is not Verdict.SENT:
                    break  # out on its lane, or failed: one failure per target per pass, then it rests
        return self.clock() if recorded else wake

    def _start(self, store: DeliveryStore) -> None:
        """With the first store: the sends the previous listener left out, the targets it judged;
        with any other (reopened, or recreated under the listener): what this one judged since."""
        if store is self._store:
            return
        if self._store is None:
            interrupted = store.sends_interrupted()
            if interrupted:
                log.warning("%d send(s) were out when the previous listener stopped: each counts as a copy that "
                            "may have arrived", interrupted)
        configured = [TargetRow(t.key, t.label, t.scheme) for t in self.by_key.values()]
        for key, row in store.load_targets(configured, self.clock()).items():
            if key in self.by_key and key not in self._targets:  # (an answer in memory is newer)
                self._targets[key] = row
        self._unsaved.update(self._targets)
        self._store = store
        self._hanging_changed()

    def _judge(self, result: Result) -> None:
        """A target hangs from the first send it did not answer in time until it answers one."""
        target = self.by_key.get(result.job.target_key)
        if target is None:
            return
        row = self._targets.get(target.key) or TargetRow(target.key, target.label, target.scheme)
        if result.answered and row.hanging_since is not None:
            log.info("%s answers within its deadline again", target.label)
            row = replace(row, hanging_since=None, last_error="")
        elif not result.answered:
            if row.hanging_since is None:
                log.warning("%s hangs: %s", target.label, result.error)
            since = row.hanging_since if row.hanging_since is not None else self.clock() - result.took
            row = replace(row, hanging_since=since, last_error=result.error)
        else:
            return
        self._targets[target.key] = row
        self._unsaved.add(target.key)
        self._hanging_changed()

    def _hanging_changed(self) -> None:
        since = [r.hanging_since for r in self._targets.values() if r.hanging_since is not None]
        self.hanging_since = min(since, default=None)  # one assignment: the protocol loop reads it

    def _record_answers(self, store: DeliveryStore) -> dict[int, Verdict]:
        """Record the answers in order; one the store cannot take stays for the next pass."""
        done: dict[int, Verdict] = {}
        while self._answers:
            result = self._answers[0]
            self._record(store, result.job.ref, result)
            self._answers.pop(0)
            self._out.pop(result.job.target_key, None)
            done[result.job.ref.id] = result.verdict
        return done

    def shift(self, delta: float) -> None:
        """The notifier's frame moved with a step of the wall clock (the outbox's rows move with it,
        worker.py): so do the times held here; the step is not one to cope with below."""
        self._resting = {k: (until + delta, n) for k, (until, n) in self._resting.items()}
        self._accepted_at = {k: t + delta for k, t in self._accepted_at.items()}
        self._failed_at = {k: t + delta for k, t in self._failed_at.items()}
        self._refusals = {k: (n, first + delta) for k, (n, first) in self._refusals.items()}
        for key, row in list(self._targets.items()):  # (their store rows move with the outbox's)
            if row.hanging_since is not None:
                self._targets[key] = replace(row, hanging_since=row.hanging_since + delta)
        self._hanging_changed()
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
        for key, row in list(self._targets.items()):  # a hang began that long ago, on the new clock too
            if row.hanging_since is not None:
                self._targets[key] = replace(row, hanging_since=row.hanging_since - step)
                self._unsaved.add(key)
        self._hanging_changed()

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

    def _copies_spent(self, store: DeliveryStore, msg: OutboxMessage) -> None:
        """A message whose copies are all out without an answer in time, counting the sends its
        listeners left out when they stopped (sends_interrupted): another would be one too many,
        however many listeners came and went. Given up on as maybe delivered, without a send."""
        label = msg.target_label
        log.error("giving up on message %d to %s: maybe delivered (%d copies its host may have, the last out when "
                  "a listener stopped)", msg.id, label, msg.copies)
        store.give_up_maybe(msg, self.clock(), said=f"maybe delivered to {label}: {msg.copies} copies sent, none "
                                                    "answered in time (the last was out when a listener stopped); "
                                                    "not sent again")
        self._forget(msg.id)

    def _record(self, store: DeliveryStore, msg: OutboxMessage, result: Result) -> None:
        """The outcome of one send: sent, retried later, or given up on (expired, refused, maybe delivered)."""
        n, now, label = self.settings, self.clock(), msg.target_label
        if result.verdict is Verdict.SENT:
            self._forget(msg.id)
            self._resting.pop(msg.target_key, None)
            self._accepted_at[msg.target_key] = now
            earlier = (f"sent to {label} (after {msg.copies} unanswered cop{'y' if msg.copies == 1 else 'ies'}: "
                       f"it may have it {msg.copies + 1} times)") if msg.copies else ""
            store.record_attempt(msg, now, status="sent", said=earlier)
            log.info("message %d sent to %s: %s", msg.id, label, msg.title)
            return
        self._rest(msg.target_key)
        copy = result.verdict is Verdict.MAYBE
        copies = msg.copies + copy
        refused = result.verdict is Verdict.FAILED and self._refused(msg)
        # retry_for, but a few tries at least: one that waited behind another has its chance
        over = (now - msg.created_at >= n.retry_for and msg.attempts + 1 >= MIN_ATTEMPTS) or refused
        stats = STATS[result.verdict]
        if copies >= MAX_COPIES or (over and copies):
            log.error("giving up on message %d to %s: maybe delivered (%d copies its host took, none answered in "
                      "time; the last: %s)", msg.id, label, copies, result.error)
            store.record_attempt(msg, now, status="maybe", error=result.error, result=stats, copy=copy,
                                 said=f"maybe delivered to {label}: {copies} cop{'y' if copies == 1 else 'ies'} "
                                      "sent, none answered in time; not sent again")
            self._forget(msg.id)
            return
        if over:
            why = (f"{msg.attempts + 1} attempts" if not refused else
                   f"it refused it {REFUSED_AFTER} times in {REFUSED_FOR / 60:.0f}+ minutes while accepting others")
            log.error("giving up on message %d to %s after %s: %s", msg.id, label, why, result.error)
            store.record_attempt(msg, now, status="expired", error=result.error, result=stats)
            self._forget(msg.id)
            return
        delay = min(n.retry_max, n.retry_initial * (2 ** min(msg.attempts, 30)))
        said = ""
        if copy:
            said = (f"maybe delivered to {label} ({result.error}): sent again in {format_duration(delay)}, copy "
                    f"{copies} of at most {MAX_COPIES}")
            log.warning("message %d to %s: %s; maybe delivered, copy %d of at most %d, sent again in %s",
                        msg.id, label, result.error, copies, MAX_COPIES, format_duration(delay))
        else:
            log.warning("message %d to %s failed (%s); retry %d in %.0fs", msg.id, label, result.error,
                        msg.attempts + 1, delay)
        store.record_attempt(msg, now, status="pending", error=result.error, retry_at=now + delay, result=stats,
                             copy=copy, said=said)
