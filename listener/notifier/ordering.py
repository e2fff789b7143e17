"""The order messages go out in: each target hears of an alert's end after its beginning.

Messages to one target are sent in the order they were written. While the oldest one waits
for its retry, later ones to the same target wait with it, so a "RESOLVED" never overtakes the
alert it resolves when a target comes back. A message that has failed STUCK_AFTER times (one
the target rejects for its content, say) no longer holds the later ones back: when one of them
falls due, the target is tried again from its oldest message, stuck ones included, so after a
long outage the first message through is still the oldest; a stuck one that fails again is
passed over and the rest go on.
"""

from __future__ import annotations

from itertools import groupby

from ..store.delivery import OutboxMessage

STUCK_AFTER = 3


def is_stuck(msg: OutboxMessage) -> bool:
    return msg.attempts >= STUCK_AFTER


def delivery_queues(pending: list[OutboxMessage], now: float) -> tuple[list[list[OutboxMessage]], float | None]:
    """Per target, the messages to try now, oldest first, and when the next one not due falls due.

    A target's queue is its oldest messages up to the first one that is neither stuck nor due
    (it holds the later ones back until its retry). The queue is tried when any of it is due,
    stuck ones included ahead of their own retry time, so their order is kept. The sender walks
    each queue in order and stops at the first failure of a message that was not stuck."""
    queues: list[list[OutboxMessage]] = []
    wake: float | None = None
    for _, messages in groupby(sorted(pending, key=lambda m: (m.target_key, m.id)), key=lambda m: m.target_key):
        queue: list[OutboxMessage] = []
        for msg in messages:
            if msg.next_attempt_at > now and not is_stuck(msg):
                wake = msg.next_attempt_at if wake is None else min(wake, msg.next_attempt_at)
                break
            queue.append(msg)
        if any(msg.next_attempt_at <= now for msg in queue):
            queues.append(queue)
        elif queue:
            first_due = min(msg.next_attempt_at for msg in queue)
            wake = first_due if wake is None else min(wake, first_due)
    return queues, wake
