"""Messages about lookout and supervisord themselves, not about one process: the store is
unwritable, supervisord died or came back, the host rebooted. They bypass grouping; their apprise
type follows their severity, so Slack's colour and an email's subject say how bad it is."""

from __future__ import annotations

from dataclasses import dataclass

NOTIFY_TYPES = {"critical": "failure", "warning": "warning", "info": "info"}


@dataclass
class SystemMessage:
    """About lookout itself, not a process: the store is unwritable, a corrupt store was replaced."""

    alertname: str  # for Alertmanager, e.g. LookoutStoreUnwritable
    title: str
    text: str
    severity: str
    resolved: bool = False
    attempts: int = 0
    next_at: float = 0.0
    ticket: int = 0  # a direct message's: whose outcome direct_outcome() reports
    targets: tuple[str, ...] = ()  # target keys it is for; empty: every target


def notify_type(msg: SystemMessage) -> str:
    """apprise's type: success for an end, else by severity (failure, warning, info)."""
    return "success" if msg.resolved else NOTIFY_TYPES.get(msg.severity, "failure")


def system_title(msg: SystemMessage, host: str) -> str:
    """'[CRITICAL] lookout cannot write its store on vm', '[RESOLVED] ...': every target's title."""
    state = "RESOLVED" if msg.resolved else msg.severity.upper()
    return f"[{state}] {msg.title} on {host}"


def words_of_test_alert(host: str) -> tuple[str, str]:
    """`lookout test-alert`'s title and text, which every target says in its own form."""
    return (f"[TEST] lookout on {host}",
            f"This is a test message from lookout-listener on {host}.\n"
            "If you can read it, alerts will reach you here.\n")
