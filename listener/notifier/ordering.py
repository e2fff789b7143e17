"""The order messages go out in: each target hears of an alert's end after its beginning.

Every outbox row says what it is about (the alerts it reports, "system" for lookout's own
messages). A message waits while an older message to the same target about any of the same
things is still pending, whatever the reason that one failed (a target coming back, a 503, a
timeout, a content it refuses): a "RESOLVED" is never heard before its alert, nor an escalation
before the crash. Messages about other things go on; only a target that is down holds all of its
own back. A message the target keeps refusing holds back only those about the same alerts, until
it is given up on (notify.retry_for). A row from an older store (about nothing) orders with all.

Within one pass, targets whose messages all went out so far come first, and the sender stops at
a target's first failure: a target that hangs costs one timeout per pass, not one per message,
and never keeps a working target waiting behind it.
"""

from __future__ import annotations

from itertools import groupby

from ..store.delivery import OutboxMessage

EVERYTHING = frozenset({"*"})


def about(msg: OutboxMessage) -> frozenset[str]:
    """What the message is about; a re-post marker orders nothing."""
    topics = frozenset(msg.about.split()) - {"repost"}
    return EVERYTHING if not msg.about.strip() or "*" in topics else topics


def delivery_queues(pending: list[OutboxMessage], now: float) -> tuple[list[list[OutboxMessage]], float | None]:
    """Per target, the messages to try now, oldest first, and when a waiting one falls due.

    `pending` is each target's oldest messages in the order written. A message is ready when it
    is due and no older pending message to its target is about the same things."""
    ready: list[tuple[bool, str, list[OutboxMessage]]] = []
    wake: float | None = None
    for key, group in groupby(sorted(pending, key=lambda m: (m.target_key, m.id)), key=lambda m: m.target_key):
        messages = list(group)
        earlier: set[str] = set()
        queue = []
        for msg in messages:
            topics = about(msg)
            waits = "*" in earlier or (bool(earlier) and topics is EVERYTHING) or bool(topics & earlier)
            earlier |= topics
            if waits:
                continue  # it goes out after the older one: looked at again when that one is done
            if msg.next_attempt_at <= now:
                queue.append(msg)
            else:
                wake = msg.next_attempt_at if wake is None else min(wake, msg.next_attempt_at)
        if queue:
            ready.append((any(m.attempts for m in messages), key, queue))
    ready.sort(key=lambda r: (r[0], r[1]))  # targets that are not failing first
    return [queue for _, _, queue in ready], wake
