"""The order messages go out in: each target hears of an alert's end after its beginning.

Every outbox row says what it is about (the alerts it reports, "system" for lookout's own
messages). A message waits while an older message to the same target about any of the same
things is still pending, whatever the reason that one failed (a target coming back, a 503, a
timeout, a content it refuses): a "RESOLVED" is never heard before its alert, nor an escalation
before the crash. Messages about other things go on; only a target that is down holds all of its
own back. A message the target keeps refusing holds back only those about the same alerts, until
it is given up on (sender.py: refused 5 times over 30 minutes while the target accepted others, or
notify.retry_for). A row from an older store (about nothing) orders with all.

Within one pass, targets whose messages all went out so far come first, a target's messages
tried fewest attempts first (independent of each other by then: a fresh one tells whether the
target is up before one it may keep refusing), and the sender stops at a target's first failure,
which rests the whole target for a backoff of its own: a target that is down or hangs costs one
attempt per backoff, not one per message, and never keeps a working target waiting.
"""

from __future__ import annotations

from itertools import groupby

from ..store.delivery import EVERYTHING, OutboxMessage


def delivery_queues(pending: list[OutboxMessage], now: float, resting: dict[str, float] | None = None,
                    latest: float | None = None) -> tuple[list[list[OutboxMessage]], float | None]:
    """Per target, the messages to try now, and when a waiting one falls due.

    `pending` is each target's oldest messages in the order written. A message is ready when it
    is due and no older pending message to its target is about the same things. `resting`:
    targets in a backoff of their own, until when. `latest`: no backoff ends later than this;
    one that does was set before the clock stepped back, and is over."""
    ready: list[tuple[bool, str, list[OutboxMessage]]] = []
    wake: float | None = None
    for key, group in groupby(sorted(pending, key=lambda m: (m.target_key, m.id)), key=lambda m: m.target_key):
        messages = list(group)
        rest_until = (resting or {}).get(key, float("-inf"))
        earlier: set[int | str] = set()
        queue = []
        for msg in messages:
            topics = msg.about.topics()
            waits = bool(EVERYTHING & earlier) or (bool(earlier) and topics is EVERYTHING) or bool(topics & earlier)
            earlier |= topics
            if waits:
                continue  # it goes out after the older one: looked at again when that one is done
            due = max(rest_until, msg.next_attempt_at)
            if latest is not None and due > latest:  # no backoff is that long: the clock stepped back
                due = now
            if due <= now:
                queue.append(msg)
            else:
                wake = due if wake is None else min(wake, due)
        if queue:
            queue.sort(key=lambda m: (m.attempts, m.id))
            ready.append((any(m.attempts for m in messages), key, queue))
    ready.sort(key=lambda r: (r[0], r[1]))  # targets that are not failing first
    return [queue for _, _, queue in ready], wake
