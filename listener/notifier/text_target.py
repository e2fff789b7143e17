"""The base of every target that takes the human message: a title, a text body and apprise's
notify type (success, info, warning, failure).

apprise's targets are built on it (apprise_target.py); so are the stand-in targets of tests. It
renders with render.py, which holds the wording; what it does not do is send: that is the
integration's own.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from .payload import Payload
from .render import render_safely
from .system import SystemMessage, notify_type, system_title, words_of_test_alert
from .target import Rendering

if TYPE_CHECKING:
    from ..store.delivery import PendingNotice
    from .render import Enrichment


class TextTarget:
    """Renders human messages; a subclass has key, label, scheme and tags, and sends them. Plain
    text, never re-posted, unless the subclass says otherwise."""

    key: str
    label: str
    scheme: str
    tags: frozenset[str]  # (no default here: a dataclass subclass would take it as its field's)
    markdown = False  # chat services that render markdown get log tails as code blocks
    reposts = False  # a message is a message: nothing expires on the other side

    def wants(self, tags: Iterable[str]) -> bool:
        """Untagged: every alert; tagged: those that carry one of its tags (or `all`)."""
        return not self.tags or "all" in self.tags or bool(self.tags & set(tags))

    def render(self, notices: list[PendingNotice], now: float, extra: Enrichment, how: Rendering) -> Payload:
        return render_safely(notices, how.host, now, extra, lines=how.lines, max_detailed=how.max_detailed,
                             markdown=self.markdown, errors=how.errors)

    def render_system(self, msg: SystemMessage, host: str) -> Payload:
        return Payload(system_title(msg, host), msg.text, notify_type(msg))

    def render_test(self, host: str) -> Payload:
        title, text = words_of_test_alert(host)
        return Payload(title, text, "info")

    def request_floor(self, body: str) -> int:
        """The body: what a plain request carries at least."""
        return len(body.encode("utf-8", "replace"))

    def send(self, title: str, body: str, notify_type: str) -> None:
        raise NotImplementedError(f"{type(self).__name__} does not say how it sends")
