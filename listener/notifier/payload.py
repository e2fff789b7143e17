"""The one value every stage after rendering handles: what a target renders and sends."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Payload:
    """One message as a target sends it; kept in the outbox row by row, so a retry after a
    restart sends the same bytes. title and notify_type are apprise's (an integration that has no
    use for them ignores them)."""

    title: str
    body: str
    notify_type: str
