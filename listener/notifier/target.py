"""What the notifier knows of a notification target: it renders its own payload and sends it.

The pipeline (worker.py) never asks which integration a target is. It asks each target to
render the alerts it wants, or a system message, into a Payload; the outbox keeps the payload as
it is, and the target's lane (lanes.py) hands it back to the same target's send() under one
deadline for the whole request. A new integration is a class with these methods, built in
targets.py where the configuration names it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from .payload import Payload

if TYPE_CHECKING:
    from ..store.delivery import PendingNotice
    from ..workers.thread import ErrorLog
    from .render import Enrichment
    from .system import SystemMessage


@dataclass(frozen=True)
class Rendering:
    """The notifier's settings that every render reads (the same for all targets)."""

    host: str
    lines: int  # notify.stderr_lines: log lines per alert
    max_detailed: int  # notify.max_detailed: alerts shown in full in one message
    errors: ErrorLog | None = None  # where a render that fails is reported (once a minute)


class Target(Protocol):
    """A notification target, as the notifier, the lanes and the outbox use it."""

    key: str  # stable across restarts (a hash of its URL): outbox rows name it
    label: str  # its safe form ('slack://***'): the only form ever shown
    scheme: str
    reposts: bool  # it forgets an open alert it is not told again (Alertmanager's endsAt)

    def wants(self, tags: Iterable[str]) -> bool:
        """Whether an alert with these tags (and its severity) is for this target."""
        ...

    def render(self, notices: list[PendingNotice], now: float, extra: Enrichment, how: Rendering) -> Payload:
        """One message about these alerts, as this target takes it; never raises for one bad alert."""
        ...

    def render_system(self, msg: SystemMessage, host: str) -> Payload:
        """A message about lookout itself (its store, supervisord), as this target takes it."""
        ...

    def render_test(self, host: str) -> Payload:
        """`lookout test-alert`'s message."""
        ...

    def request_floor(self, body: str) -> int:
        """Bytes a whole request carries at least: what its host must have acknowledged for a
        send that got no answer to count as maybe delivered."""
        ...

    def send(self, title: str, body: str, notify_type: str) -> None:
        """Deliver one payload; raises DeliveryError with the reason when the target refused it.
        Its lane runs it under the deadline (deadline.py), so it takes none itself."""
        ...


class DeliveryError(Exception):
    """str(): why the service did not take the message, as it said it (secrets scrubbed)."""
