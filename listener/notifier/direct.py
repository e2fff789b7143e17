"""System messages sent from memory, not through the outbox: for when the store itself cannot be
written (a full disk, a store that went away), so the outbox is the one thing that cannot carry
them.

Each goes to every target, in the order they came for that target, on the target's lane like
any send; it is tried DIRECT_ATTEMPTS times at most (or sent as that many copies), DIRECT_RETRY
apart. Nothing is kept across a restart: best effort. Whether each target took it is kept by
ticket for a while, so the listener can say in its last words who heard them.
"""

from __future__ import annotations

import logging
import threading

from .lanes import Job, Lanes, Verdict
from .sender import OutboxSender
from .system import SystemMessage
from .target import Target

log = logging.getLogger("lookout.notifier")

DIRECT_ATTEMPTS, DIRECT_RETRY = 3, 10.0
KEEP_OUTCOMES = 64  # a listener sends a few in its life: the outcomes of the recent ones are kept


class DirectSends:
    """add() and outcome() are called from any thread; send() and shift() from the notifier's."""

    def __init__(self, targets: list[Target], host: str, stop: threading.Event) -> None:
        self.targets, self.host, self._stop = targets, host, stop
        self.by_key = {t.key: t for t in targets}
        self._lock = threading.Lock()
        self._queue: list[tuple[SystemMessage, Target]] = []
        self._tickets = 0
        self._outcome: dict[int, dict[str, bool]] = {}  # ticket -> target key -> delivered (when decided)
        self._out: set[str] = set()  # targets with a message from memory out, until its answer is taken

    def add(self, alertname: str, title: str, text: str, severity: str, resolved: bool) -> int:
        """Queue one message for every target; returns its ticket for outcome()."""
        with self._lock:
            self._tickets += 1
            ticket = self._tickets
            self._outcome[ticket] = {}
            if len(self._outcome) > KEEP_OUTCOMES:
                del self._outcome[min(self._outcome)]
            self._queue.extend((SystemMessage(alertname, title, text, severity, resolved, ticket=ticket), t)
                               for t in self.targets)
        return ticket

    def outcome(self, ticket: int) -> dict[str, bool]:
        with self._lock:
            return dict(self._outcome.get(ticket, {}))

    def shift(self, delta: float) -> None:
        """The notifier's frame moved with a step of the wall clock: retries keep their wait."""
        with self._lock:
            for msg, _ in self._queue:
                msg.next_at = msg.next_at + delta if msg.next_at else 0.0

    def send(self, now: float, lanes: Lanes, sender: OutboxSender) -> float | None:
        """The notifier's direct stage: from memory, each target's in order, on its lane; 3 tries
        (or copies) at most. Returns when a retry falls due."""
        self._answered(now, sender)
        with self._lock:
            items = list(self._queue)
        waits: set[str] = set()  # targets whose next message is not due or whose lane is busy
        for msg, target in items:
            if target.key in waits or target.key in self._out or msg.next_at > now \
                    or not lanes.idle(target.key) or self._stop.is_set():
                waits.add(target.key)
                continue
            with self._lock:
                self._queue.remove((msg, target))
            payload = target.render_system(msg, self.host)
            self._out.add(target.key)
            lanes.submit(Job(target.key, payload.title, payload.body, payload.notify_type, msg))
            sender.collect()  # a lane without a thread of its own has answered already
            self._answered(now, sender)
        with self._lock:
            return min((m.next_at for m, _ in self._queue), default=None)

    def _answered(self, now: float, sender: OutboxSender) -> None:
        answers, sender.system_answers = sender.system_answers, []
        for result in answers:
            msg, target = result.job.ref, self.by_key[result.job.target_key]
            self._out.discard(target.key)
            self._decided(msg, target, result.verdict is Verdict.SENT)
            if result.verdict is Verdict.SENT:
                log.info("direct message sent to %s: %s", target.label, msg.title)
                continue
            msg.attempts += 1
            if msg.attempts < DIRECT_ATTEMPTS:
                msg.next_at = now + DIRECT_RETRY
                with self._lock:
                    self._queue.insert(0, (msg, target))  # before the target's later ones: they stay in order
            else:
                maybe = " (maybe delivered: none answered in time)" if result.verdict is Verdict.MAYBE else ""
                log.error("direct message to %s not delivered (%s)%s: %s", target.label, result.error, maybe,
                          msg.title)

    def _decided(self, msg: SystemMessage, target: Target, delivered: bool) -> None:
        with self._lock:
            outcome = self._outcome.get(msg.ticket)
            if outcome is not None:
                outcome[target.key] = delivered
