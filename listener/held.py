"""Degraded mode: the store cannot be written, so the listener holds instead of crashing.

A crash would not help: supervisord restarts the listener, which fails the same way at start
until it goes FATAL, and nobody is told. Instead the event in hand stays unacknowledged (so
supervisord buffers the following ones), the commit is retried with backoff, the log says so
once a minute, and people get one best-effort message straight from memory, because the
outbox lives in the very store that cannot be written.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from .config import format_duration
from .rules.models import Outcome

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

    def __init__(self, notifier: Any, clock: Callable[[], float], path: str = "") -> None:
        self.notifier, self.clock, self.path = notifier, clock, path
        self.since: float | None = None
        self.retry_at = 0.0
        self.delay = RETRY_FIRST
        self.said_at = 0.0
        self.reason = ""

    @property
    def active(self) -> bool:
        return self.since is not None

    def failed(self, exc: BaseException, doing: str) -> None:
        now = self.clock()
        reason = str(exc) or type(exc).__name__
        if self.since is None:
            self.since, self.said_at, self.delay, self.reason = now, now, RETRY_FIRST, reason
            log.error("cannot write the store (%s) while %s: holding the event in hand unacknowledged "
                      "(supervisord buffers the next ones) and retrying", reason, doing)
            self.notifier.direct(
                "LookoutStoreUnwritable",
                "lookout cannot write its store: alerts are held",
                f"lookout cannot write its store{f' {self.path}' if self.path else ''} ({reason}): alerts are held. "
                "supervisord keeps the following events in its buffer; they are processed and alerted as soon as "
                "the store can be written again. Free the disk, or release the lock, on this host.",
                "critical",
            )
        elif now - self.said_at >= SAY_AGAIN_EVERY:
            self.said_at = now
            log.error("the store is still unwritable after %s (%s); retrying", format_duration(now - self.since),
                      reason)
        self.reason = reason
        self.retry_at = now + self.delay
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
