"""Acceptance 4: the crash-loop alert also arrives by email, through a real SMTP server."""

from __future__ import annotations

import email
import threading

from aiosmtpd.controller import Controller

from .conftest import fast_alerts
from .harness import free_port, wait_for
from .test_crash_loop import CRASHER


class Inbox:
    def __init__(self) -> None:
        self.mails: list[email.message.Message] = []
        self.lock = threading.Lock()

    async def handle_DATA(self, server, session, envelope):  # noqa: N802
        with self.lock:
            self.mails.append(email.message_from_bytes(envelope.content))
        return "250 OK"

    def texts(self) -> list[str]:
        with self.lock:
            out = []
            for m in self.mails:
                parts = [p.get_payload(decode=True) or b"" for p in m.walk() if not p.is_multipart()]
                out.append(str(m["Subject"]) + "\n" + b"\n".join(parts).decode("utf-8", "replace"))
            return out


def test_crash_loop_alert_by_email(supervisor_factory, webhook):
    inbox = Inbox()
    smtp = Controller(inbox, hostname="127.0.0.1", port=free_port())
    smtp.start()
    try:
        settings = fast_alerts(webhook, crash_loop={"restarts": 3, "within": "1m"})
        settings["notify"]["urls"] = [
            f"mailto://127.0.0.1:{smtp.port}?from=lookout@example.com&to=ops@example.com",
        ]
        supervisor_factory(CRASHER, settings).start()
        mail = wait_for(
            lambda: [t for t in inbox.texts() if "flaky is crash-looping" in t],
            20,
            "crash-looping mail",
        )
        assert len(mail) == 1
        assert "exit status 3" in mail[0] and "flaky: cannot bind port 7001" in mail[0]
    finally:
        smtp.stop()
