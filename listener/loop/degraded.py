"""Degraded mode: the store cannot be written, so the listener holds instead of crashing.

A crash would not help: supervisord restarts the listener, which fails the same way at start
until it goes FATAL, and nobody is told. Instead the event in hand stays unacknowledged (so
supervisord buffers the following ones), the commit is retried with backoff, the log says so
once a minute, and people get one best-effort message straight from memory, because the
outbox lives in the very store that cannot be written.

An episode outlives its listener: the sidecar file (store/sidecar.py) says the store was
unwritable since when, so a listener that starts after one that ended degraded (supervisord died,
or it was killed) either carries the episode on or, once it has written the store, says that the
store can be written again: "cannot write its store" always gets its end.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from ...config import format_duration
from ..rules.models import Outcome
from ..store.sidecar import Sidecar, SidecarState

log = logging.getLogger("lookout.listener")

RETRY_FIRST, RETRY_MAX = 0.5, 15.0
SAY_AGAIN_EVERY = 60.0


@dataclass
class HeldCommit:
    """A decision that could not be committed yet, with what was to follow it."""

    outcome: Outcome
    kwargs: dict[str, Any] = field(default_factory=dict)
    ack: bool = False  # an event waits for this commit to be acknowledged

    def absorb(self, outcome: Outcome, kwargs: dict[str, Any]) -> None:
        """A wall-clock step seen while this waits (clock_steps.py): committed with it, the step
        last, so what this held from before the step moves too."""
        self.outcome.merge(outcome)
        self.kwargs["meta"] = {**(self.kwargs.get("meta") or {}), **kwargs.get("meta", {})}
        step, earlier = kwargs["shift"], self.kwargs.get("shift")
        self.kwargs["shift"] = step if earlier is None else replace(step, delta=earlier.delta + step.delta)


class StoreTrouble:
    """One episode of an unwritable store: when to retry, what to say, and when."""

    def __init__(self, notifier: Any, clock: Callable[[], float], path: str = "",
                 sidecar: Sidecar | None = None) -> None:
        self.notifier, self.clock, self.path = notifier, clock, path  # clock: the loop's (since: shown, stored)
        self.sidecar = sidecar
        self.inherited: SidecarState | None = None  # the previous listener's episode, not seen ended
        self.since: float | None = None
        self.retry_at = 0.0  # (monotonic, as the wait for it)
        self.delay = RETRY_FIRST
        self.said_at = 0.0  # (monotonic)
        self.reason = ""

    @property
    def active(self) -> bool:
        return self.since is not None

    def inherit(self, previous: SidecarState) -> None:
        """The previous listener ended while it could not write the store."""
        self.inherited = previous

    def failed(self, exc: BaseException, doing: str) -> None:
        now, mono = self.clock(), time.monotonic()
        reason = str(exc) or type(exc).__name__
        if self.since is None:
            inherited, self.inherited = self.inherited, None
            self.since = inherited.degraded_since if inherited is not None else now
            self.said_at, self.delay, self.reason = mono, RETRY_FIRST, reason
            log.error("cannot write the store (%s) while %s: holding the event in hand unacknowledged "
                      "(supervisord buffers the next ones) and retrying", reason, doing)
            still = (f" It has not been writable since {_clock(self.since)}: the previous listener (pid "
                     f"{inherited.listener_pid}) could not write it either." if inherited is not None else "")
            self.notifier.direct(
                "LookoutStoreUnwritable",
                "lookout cannot write its store: alerts are held",
                f"lookout cannot write its store{f' {self.path}' if self.path else ''} ({reason}): alerts are held. "
                "supervisord keeps the following events in its buffer; they are processed and alerted as soon as "
                f"the store can be written again. Free the disk, or release the lock, on this host.{still}",
                "critical",
            )
            if self.sidecar is not None:
                self.sidecar.degraded(self.since, reason)
        elif mono - self.said_at >= SAY_AGAIN_EVERY:
            self.said_at = mono
            log.error("the store is still unwritable after %s (%s); retrying", format_duration(now - self.since),
                      reason)
        self.reason = reason
        self.retry_at = mono + self.delay
        self.delay = min(RETRY_MAX, self.delay * 2)

    def resolved(self) -> None:
        if self.since is None:
            return
        took = format_duration(self.clock() - self.since)
        log.warning("the store can be written again after %s: resuming with the held event", took)
        self.notifier.direct(
            "LookoutStoreUnwritable",
            "lookout can write its store again",
            f"lookout can write its store again after {took} ({self.reason}); the held alerts follow.",
            "critical",
            resolved=True,
        )
        self.since, self.retry_at, self.delay = None, 0.0, RETRY_FIRST
        if self.sidecar is not None:
            self.sidecar.writable()

    def wrote(self) -> None:
        """This listener has written the store: the end of an episode its predecessor did not see
        end (it was killed, or supervisord died, while the store could not be written)."""
        inherited, self.inherited = self.inherited, None
        if inherited is None or self.since is not None:
            return
        took = format_duration(max(0.0, self.clock() - inherited.degraded_since))
        log.warning("the store can be written again: the previous listener (pid %d) could not write it from %s (%s)",
                    inherited.listener_pid, _clock(inherited.degraded_since), inherited.reason)
        self.notifier.announce(
            "LookoutStoreUnwritable",
            "lookout can write its store again",
            f"lookout can write its store{f' {self.path}' if self.path else ''} again. The previous listener (pid "
            f"{inherited.listener_pid}) could not write it from {_clock(inherited.degraded_since)} "
            f"({inherited.reason or 'unknown'}) until it ended; this listener could, when it started {took} after "
            "that began.",
            "critical",
            resolved=True,
        )
        if self.sidecar is not None:
            self.sidecar.writable()


def _clock(at: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(at))
