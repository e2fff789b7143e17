"""DeadmanSwitch: a URL outside the host, called every `interval` while lookout is healthy.

Everything lookout says depends on supervisord, the listener and the host being alive; when one
of them dies, nobody on the host is left to say so. A dead man's switch turns silence into the
alarm: an outside service (healthchecks.io, an Uptime Kuma push monitor, Cronitor, your own
checker) expects a call every interval and raises its own alert when the calls stop. While
lookout itself is degraded (its store cannot be written, notifications have failed for longer
than fail_after), it calls the service's fail form instead, so the alarm comes sooner and says why.

Calls run on their own thread (never on the protocol loop), one at a time: a call that fails is
logged and counted (lookout_deadman_pings_total{result}), never retried into a backlog: the next
interval's call is the retry. URLs hold tokens: logs show only scheme and host.
"""

from __future__ import annotations

import logging
import queue
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable

from .config import DeadmanSettings
from .redact import safe_url
from .workers import ErrorLog, WorkerThread

log = logging.getLogger("lookout.deadman")
RESULTS = ("ok", "fail_sent", "error")  # the healthy form reached it; the fail form did; it could not be reached


def fail_form(url: str, explicit: str = "") -> str:
    """The URL that tells the service lookout is degraded: deadman.fail_url, else the known form of
    healthchecks.io (/fail), Uptime Kuma (status=down) or Cronitor (state=fail); '' when unknown
    (then a degraded lookout simply stops calling, which the service notices after its grace)."""
    if explicit:
        return explicit
    parts = urllib.parse.urlsplit(url)
    query = urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
    if "/api/push/" in parts.path:  # Uptime Kuma push monitor
        query = [(k, v) for k, v in query if k not in ("status", "msg")] + [("status", "down"), ("msg", "degraded")]
        return urllib.parse.urlunsplit(parts._replace(query=urllib.parse.urlencode(query)))
    if "cronitor" in parts.netloc:
        query = [(k, v) for k, v in query if k != "state"] + [("state", "fail")]
        return urllib.parse.urlunsplit(parts._replace(query=urllib.parse.urlencode(query)))
    if "hc-ping" in parts.netloc or "healthchecks" in parts.netloc or "/ping/" in parts.path:
        return urllib.parse.urlunsplit(parts._replace(path=parts.path.rstrip("/") + "/fail"))
    return ""


class DeadmanSwitch:
    def __init__(self, settings: DeadmanSettings, clock: Callable[[], float],
                 on_death: Callable[[], None] = lambda: None) -> None:
        self.settings, self.clock = settings, clock
        self.fail_url = fail_form(settings.url, settings.fail_url) if settings.url else ""
        self.counts = dict.fromkeys(RESULTS, 0)
        self.next_at = 0.0
        self._calls: queue.Queue[tuple[str, str]] = queue.Queue(maxsize=1)  # at most one waiting: no backlog
        self.errors = ErrorLog(log)
        self.thread = WorkerThread("lookout-deadman", self._run, on_death)

    @property
    def enabled(self) -> bool:
        return bool(self.settings.url)

    def start(self) -> None:
        if self.enabled:
            self.thread.start()

    def due(self, now: float, degraded: str) -> None:
        """Called from the loop: one call per interval, the healthy form or (degraded: why) the fail form."""
        if not self.enabled or now < self.next_at:
            return
        self.next_at = now + self.settings.interval
        if degraded and not self.fail_url:
            return  # no fail form known: silence is the signal
        url = self.fail_url if degraded else self.settings.url
        try:
            self._calls.put_nowait((url, degraded))
        except queue.Full:  # the previous call is still out: this one is skipped, not queued
            self.counts["error"] += 1

    def stats(self) -> dict[str, object]:
        return {f"deadman_{k}": v for k, v in self.counts.items()}

    def _run(self) -> None:
        while True:
            url, degraded = self._calls.get()
            self._call(url, degraded)

    def _call(self, url: str, degraded: str) -> None:
        if degraded and "/api/push/" in url:  # Uptime Kuma shows msg: say why
            url = url.replace("msg=degraded", "msg=" + urllib.parse.quote(degraded[:200]))
        request = urllib.request.Request(url, headers={"User-Agent": "lookout-deadman"})
        try:
            with urllib.request.urlopen(request, timeout=self.settings.timeout) as answer:
                answer.read(4096)
        except (OSError, ValueError) as exc:
            self.counts["error"] += 1
            self.errors.report("call", "dead man's switch %s not reached: %s", safe_url(url),
                               getattr(exc, "reason", None) or exc, exc_info=False, level=logging.WARNING)
            return
        self.errors.clear("call", "dead man's switch %s reached again", safe_url(url))
        self.counts["fail_sent" if degraded else "ok"] += 1
        if degraded:
            log.warning("told the dead man's switch %s that lookout is degraded: %s", safe_url(url), degraded)
