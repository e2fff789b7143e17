"""The order messages go out in: each target hears of an alert's end after its beginning.

Messages to one target are sent in the order they were written. While the oldest one waits
for its retry, later ones to the same target wait with it, so a "RESOLVED" never overtakes the
alert it resolves when a target comes back. A message that has failed STUCK_AFTER times (one
the target rejects for its content, say) no longer holds the later ones back: the target is
tried with them, and the stuck one keeps its own retries.
"""

from __future__ import annotations

from itertools import groupby

from ..store.delivery import OutboxMessage

STUCK_AFTER = 3


def is_stuck(msg: OutboxMessage) -> bool:
    return msg.attempts >= STUCK_AFTER


def delivery_queues(pending: list[OutboxMessage], now: float) -> tuple[list[list[OutboxMessage]], float | None]:
    """Per target, the messages to try now, oldest first, and when the next one not due falls due.

    The sender walks each queue in order and stops at the first failure of a message that was
    not stuck (the target is down: the rest wait for its retry)."""
    queues: list[list[OutboxMessage]] = []
    wake: float | None = None
    for _, messages in groupby(sorted(pending, key=lambda m: (m.target_key, m.id)), key=lambda m: m.target_key):
        queue = []
        for msg in messages:
            if msg.next_attempt_at <= now:
                queue.append(msg)
                continue
            wake = msg.next_attempt_at if wake is None else min(wake, msg.next_attempt_at)
            if not is_stuck(msg):
                break  # it holds the later ones back until its retry
        if queue:
            queues.append(queue)
    return queues, wake
