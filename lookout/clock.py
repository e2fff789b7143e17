"""The listener's clock: wall time for what people read and the store keeps, monotonic time for
every wait, and the two kept together across a step of the wall clock (NTP, a VM restored).

A LookoutClock reads the wall clock as it was at the start (or at the last step) plus the
monotonic time since, so no step can move a deadline between two looks. The loop looks once a
turn (`step()`): a wall clock further than STEP away has stepped; the clock follows it and the
loop moves every absolute time it holds by the same delta (rules/timeshift.py), so a backoff
keeps its length and a time shown reads right on the new wall clock.

Other threads read the clock through a ClockView whose frame changes only when that thread
calls sync(), between two of its passes: what it computed in one pass is in one frame, and it
moves its own stored times by the delta sync() returns. A view syncs only to a step the loop has
published, once its own rows moved in the store; moved() tells the thread that the loop has seen
a step it has not synced to (rows it is about to decide on may be in either frame): it drops that
pass and syncs.

Deltas are rounded to QUANTUM (2^-10 s): adding such a delta to an epoch time (a multiple of
2^-22 below 2^31) is exact, so a time shifted forth and converted to monotonic time gives the
same value as before (a probe's schedule is not disturbed by a step).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

STEP = 1.0  # the wall clock this far from ours has stepped (a slew stays far below it)
QUANTUM = 1.0 / 1024


def quantize(delta: float) -> float:
    return round(delta / QUANTUM) * QUANTUM


class LookoutClock:
    """Wall time anchored at the start, advanced by monotonic time; re-anchored by step()."""

    def __init__(self, wall: Callable[[], float] = time.time, mono: Callable[[], float] = time.monotonic) -> None:
        self._wall, self.monotonic = wall, mono
        self._lock = threading.Lock()
        self.offset = wall() - mono()  # wall minus monotonic: all our times are monotonic + offset
        self.generation = 0  # how many steps so far
        self._deltas: list[float] = []  # the delta of each step, by generation - 1
        self._published = (self.offset, 0)  # the frame views may sync to: the loop's rows are in it

    def __call__(self) -> float:
        return self.monotonic() + self.offset

    def to_mono(self, t: float) -> float:
        return t - self.offset

    def from_mono(self, m: float) -> float:
        return m + self.offset

    def step(self) -> float:
        """The loop's look at the wall clock: the step since the last look (0.0: none), which the
        clock has followed already; the loop then moves its times by it."""
        delta = self._wall() - self()
        if abs(delta) <= STEP:
            return 0.0
        delta = quantize(delta)
        with self._lock:
            self.offset += delta
            self.generation += 1
            self._deltas.append(delta)
        return delta

    def publish(self) -> None:
        """The loop committed what it moved with the steps so far: views may follow."""
        with self._lock:
            self._published = (self.offset, self.generation)

    def view(self) -> ClockView:
        """A frame for another thread, moved only when that thread syncs."""
        with self._lock:
            return ClockView(self, *self._published)

    def deltas_since(self, generation: int) -> tuple[float, float, int]:
        """(sum of the published steps after `generation`, their offset, their generation)."""
        with self._lock:
            offset, published = self._published
            return sum(self._deltas[generation:published]), offset, published


@dataclass
class ClockView:
    """One thread's frame of a LookoutClock."""

    clock: LookoutClock
    offset: float
    generation: int

    def __call__(self) -> float:
        return self.clock.monotonic() + self.offset

    def sync(self) -> float:
        """Take the steps the loop has published since the last sync: returns their sum, by which
        this thread moves the times it holds and writes (0.0: none)."""
        delta, self.offset, self.generation = self.clock.deltas_since(self.generation)
        return delta

    def moved(self) -> bool:
        """A step was seen that this view has not synced to: what the loop owns may be shifting."""
        return self.clock.generation != self.generation


class PlainFrame:
    """A plain callable as a frame that never moves (tests drive the notifier with a fake clock)."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock

    def __call__(self) -> float:
        return self._clock()

    def sync(self) -> float:
        return 0.0

    def moved(self) -> bool:
        return False


def frame_of(clock: Callable[[], float]) -> ClockView | PlainFrame:
    if isinstance(clock, ClockView):
        return clock
    return clock.view() if isinstance(clock, LookoutClock) else PlainFrame(clock)


# The store's meta keeps the frame its times were written in: a listener started on the same boot
# with another offset knows the wall clock stepped while none ran, and by how much.
META_OFFSET, META_BOOT = "clock_offset", "clock_boot"


def clock_meta(offset: float, boot: str) -> dict[str, object]:
    return {META_OFFSET: repr(offset), META_BOOT: boot}


def stepped_while_stopped(offset: float, stored_offset: str | None, stored_boot: str | None, boot: str) -> float:
    """How far the wall clock stepped since times were stored in the frame `stored_offset` (0.0 when
    it did not, or when that was another boot: monotonic time starts again at boot)."""
    if not stored_offset or not boot or stored_boot != boot:
        return 0.0
    try:
        delta = offset - float(stored_offset)
    except ValueError:
        return 0.0
    return quantize(delta) if abs(delta) > STEP else 0.0
