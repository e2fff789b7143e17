"""`lookout status`'s DELIVERY lines: the notification targets that are failing, from the store.

A target is failing while its messages are being retried (the outbox), while its sends get no
answer within their deadline (it hangs: the targets table), or while a send has been out for
longer than half its deadline. One line each: how much waits, for how long, why, and how many
messages were maybe delivered (sent in full, not answered in time: retried, 3 copies at most).
Only 'scheme://host' of a target is ever shown; errors are scrubbed of secrets.
"""

from __future__ import annotations

import contextlib
import sqlite3
import time
from dataclasses import dataclass

from ..config import Config, format_duration
from ..listener.store.files import StoreUnavailable, store_errors
from ..listener.store.reads import StoreReader
from ..redact import scrub
from ..text import clean

SLOW_SEND = 5.0  # a send out this long (or half the deadline, if less) is shown


@dataclass
class TargetTrouble:
    label: str
    waiting: int = 0  # messages pending, when some failed
    failing_since: float | None = None  # the oldest failed message still retried was written then
    error: str = ""
    hanging_since: float | None = None
    maybe: int = 0  # messages that were maybe delivered in this episode
    out_since: float | None = None  # a send out since then, no answer yet

    def line(self, now: float) -> str:
        def since(at: float) -> str:
            return format_duration(max(0.0, now - at))

        parts = []
        error = scrub(clean(self.error or "?"))[:200]
        if self.failing_since is not None:
            parts.append(f"{self.waiting} message(s) waiting, failing for {since(self.failing_since)}: {error}")
        elif self.hanging_since is not None:
            parts.append(f"failing for {since(self.hanging_since)}: {error}")
        if self.hanging_since is not None:
            at = time.strftime("%H:%M:%S", time.localtime(self.hanging_since))
            parts.append(f"it hangs: no answer within its deadline since {at}")
        if self.maybe:
            parts.append(f"{self.maybe} message(s) maybe delivered (sent in full, not answered in time; "
                         "3 copies at most)")
        if self.out_since is not None:
            parts.append(f"a send out for {since(self.out_since)} without an answer")
        return f"DELIVERY {clean(self.label)}: " + "; ".join(parts)


def delivery_lines(config: Config, now: float) -> list[str]:
    """The failing targets, one line each, by label."""
    try:
        with store_errors(), StoreReader.open(config.state_path) as store:
            found = _troubles(store, now - min(SLOW_SEND, config.notify.timeout / 2))
    except (StoreUnavailable, sqlite3.Error):
        return []  # the table above said what it could; a store too old or busy has nothing to add
    return [t.line(now) for t in sorted(found.values(), key=lambda t: t.label)]


def _troubles(store: StoreReader, slow_since: float) -> dict[str, TargetTrouble]:
    found = {t.key: TargetTrouble(t.label, t.waiting, t.failing_since, t.error) for t in store.retried_targets()}
    with contextlib.suppress(sqlite3.Error):  # a store older than schema 5 knows only the retries
        _hangs(store, slow_since, found)
    return found


def _hangs(store: StoreReader, slow_since: float, found: dict[str, TargetTrouble]) -> None:
    """Sends out too long, targets that hang, and what was maybe delivered meanwhile."""
    for t in store.slow_sends(slow_since):
        found.setdefault(t.key, TargetTrouble(t.label)).out_since = t.since
    for t in store.hanging_targets():
        trouble = found.setdefault(t.key, TargetTrouble(t.label))
        trouble.hanging_since, trouble.error = t.since, trouble.error or t.error
    for key, n in store.maybe_delivered().items():
        if key in found:
            found[key].maybe = n
