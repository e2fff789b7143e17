"""What the listener commits when the wall clock steps (lookout/clock.py), while it runs or while
none ran. The engine moves what it holds (rules/timeshift.py), the store the rest in the same
transaction (store/clockshift.py); the meta then says which frame the stored times are in.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from ...clock import META_BOOT, META_OFFSET, LookoutClock, clock_meta, stepped_while_stopped
from ..rules.engine import AlertEngine
from ..rules.models import Outcome
from ..store.clockshift import META_OUTBOX_OFFSET, ClockStep
from ..store.state import StateStore

log = logging.getLogger("lookout.listener")


@dataclass
class StepCommit:
    outcome: Outcome
    kwargs: dict[str, object] = field(default_factory=dict)  # for StateStore.commit: meta, shift, outbox_frame


def commit_for_step(engine: AlertEngine, delta: float, now: float, meta: dict[str, object]) -> StepCommit:
    """A step seen while running: `now` on the new clock; meta says the new frame."""
    return StepCommit(engine.shift(delta), {"meta": meta, "shift": ClockStep(delta, now)})


def commit_for_stored_frame(clock: LookoutClock, state: StateStore, engine: AlertEngine,
                            boot: str) -> StepCommit | None:
    """At start, before anything is decided: what an earlier listener stored (in the frame the meta
    names) is brought onto this clock; None when nothing needs to move or be written."""
    delta = stepped_while_stopped(clock.offset, state.meta(META_OFFSET), state.meta(META_BOOT), boot)
    outbox = state.meta(META_OUTBOX_OFFSET)
    outbox_moves = outbox is None or stepped_while_stopped(clock.offset, outbox, state.meta(META_BOOT), boot)
    if not delta and not outbox_moves:
        return None
    kwargs: dict[str, object] = {"meta": clock_meta(clock.offset, boot), "outbox_frame": (clock.offset, boot)}
    if not delta:
        return StepCommit(Outcome(), kwargs)
    log.warning("the wall clock stepped %+.3fs while no listener ran: stored deadlines, backoffs and graces move "
                "with it", delta)
    return StepCommit(engine.shift(delta), {**kwargs, "shift": ClockStep(delta, clock())})
