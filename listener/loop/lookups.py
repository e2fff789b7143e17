"""What the watcher's lookups tell the rules: the real start of a run (supervisord's `start`, or
the kernel's) and the exit status of a run (supervisord's log), each batch as one outcome, so a
storm's hundred lookups cost one commit."""

from __future__ import annotations

from ...clock import LookoutClock
from ..rules.engine import AlertEngine
from ..rules.models import Outcome
from ..workers.watcher import ExitsObserved, StartsObserved


def lookups_outcome(result: StartsObserved | ExitsObserved, engine: AlertEngine, clock: LookoutClock) -> Outcome:
    outcome = Outcome()
    if isinstance(result, StartsObserved):
        for ns, (start, pid) in result.starts.items():  # (the watcher's clock is monotonic)
            outcome.merge(engine.on_start_observed(ns, clock.from_mono(start), pid=pid))
        return outcome
    for (ns, pid), info in result.exits.items():
        if isinstance(info, str):  # not known, and why
            outcome.merge(engine.on_exit_observed(ns, None, info, pid=pid))
        else:
            outcome.merge(engine.on_exit_observed(ns, info.status, info.text, info.ran, pid=pid))
    return outcome
