"""What a page may wait for before it goes out (the dispatch stage asks, worker.py): a resolution
"stopped by an operator" for `supervisorctl update`'s removal, the page of an alert lookout acts on
for the action's result, a need's first page for its dependants ([[dependencies]] grace)."""

from __future__ import annotations

from ..rules.models import FIRING, RESOLVED, STOPPED_BY_OPERATOR
from ..store.delivery import PendingNotice

# An operator's stop may be `supervisorctl update`'s, which removes the group right after: its resolution
# waits this long, so the removal's reason ("removed from supervisord's configuration") can take its place.
STOP_SETTLE = 3.0
# An alert whose page says lookout acts on it ("is unhealthy, lookout is restarting it") waits up to this
# long for the result: one message says both (a restart that takes longer: its result follows as an update).
ACTION_SETTLE = 10.0
GATHER_MAX = 3600.0  # (a gather_until further ahead than [[dependencies]] grace allows: a clock stepped back)


def held_back(n: PendingNotice, now: float) -> bool:
    """A resolution "stopped by an operator" younger than STOP_SETTLE, a need's first page before its
    gather_until, or the page of an alert lookout acts on, younger than ACTION_SETTLE (never held by a
    clock stepped back)."""
    if n.kind == RESOLVED:
        return (n.alert.resolution == STOPPED_BY_OPERATOR and n.alert.resolved_at is not None
                and 0 <= now - n.alert.resolved_at < STOP_SETTLE)
    if n.kind == FIRING and n.alert.gather_until is not None and n.alert.gather_until - GATHER_MAX <= now \
            < n.alert.gather_until:
        return True  # a need's first page: its dependants failing with it join it (dependencies.py)
    return n.alert.acting_since is not None and 0 <= now - n.alert.acting_since < ACTION_SETTLE


def held_until(n: PendingNotice, now: float) -> float:
    """When held_back(n) ends."""
    if n.kind == RESOLVED:
        return (n.alert.resolved_at or now) + STOP_SETTLE
    if n.kind == FIRING and n.alert.gather_until is not None and now < n.alert.gather_until:
        return n.alert.gather_until
    return (n.alert.acting_since or now) + ACTION_SETTLE
