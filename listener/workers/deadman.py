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

import base64
import contextlib
import logging
import queue
import re
import ssl
import threading
import time
import urllib.parse
from collections.abc import Callable

from ...bounded import DeadlineConnection
from ...config import DeadmanSettings, format_duration
from ...redact import safe_url
from ...text import clean
from .thread import ErrorLog, WorkerThread

log = logging.getLogger("lookout.deadman")
RESULTS = ("ok", "fail_sent", "error")  # the healthy form reached it; the fail form did; it could not be reached


# A self-hosted healthchecks: /ping/<uuid>
_HC_PATH = re.compile(r"/ping/[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}/?$")


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
    if "hc-ping" in parts.netloc or "healthchecks" in parts.netloc or _HC_PATH.match(parts.path):
        return urllib.parse.urlunsplit(parts._replace(path=parts.path.rstrip("/") + "/fail"))
    return ""


class DeadmanSwitch:
    def __init__(self, settings: DeadmanSettings, clock: Callable[[], float],
                 on_death: Callable[[], None] = lambda: None) -> None:
        self.settings, self.clock = settings, clock
        self.fail_url = fail_form(settings.url, settings.fail_url) if settings.url else ""
        self.counts = dict.fromkeys(RESULTS, 0)
        self._count_lock = threading.Lock()  # the loop and the calling thread both count
        self._told = ""  # the degraded reason last told (logged once per change)
        self.next_at = 0.0
        self._calls: queue.Queue[tuple[str, str]] = queue.Queue()
        self._busy = False  # a call is handed over and not finished: the next interval's is skipped
        self.errors = ErrorLog(log)
        self.thread = WorkerThread("lookout-deadman", self._run, on_death)

    @property
    def enabled(self) -> bool:
        return bool(self.settings.url)

    def start(self) -> None:
        if self.enabled:
            self.thread.start()

    def due(self, now: float, degraded: str) -> None:
        """Called from the loop: one call per interval, the healthy form or (degraded: why) the fail form.
        `now` is monotonic: a step of the wall clock neither stops the calls nor hurries them."""
        if not self.enabled or now < self.next_at:
            return
        self.next_at = now + self.settings.interval
        if degraded and not self.fail_url:
            return  # no fail form known: silence is the signal
        if self._busy:  # the previous call is still out: this one is skipped, never queued behind it
            self._count("error")
            self.errors.report("busy", "dead man's switch %s: the previous call is still out after %s; this "
                               "interval's call is skipped", safe_url(self.settings.url),
                               format_duration(self.settings.interval), exc_info=False, level=logging.WARNING)
            return
        self._busy = True
        self._calls.put((self.fail_url if degraded else self.settings.url, degraded))

    def carry_over(self, stored: dict[str, str | None]) -> None:
        """Counters continue from the previous listener's (the store's meta): they never go back."""
        with self._count_lock:
            for k in RESULTS:
                with contextlib.suppress(TypeError, ValueError, OverflowError):
                    self.counts[k] += max(0, int(float(stored.get(f"deadman_{k}") or 0)))

    def stats(self) -> dict[str, object]:
        with self._count_lock:
            return {f"deadman_{k}": v for k, v in self.counts.items()}

    def _count(self, result: str) -> None:
        with self._count_lock:
            self.counts[result] += 1

    def _run(self) -> None:
        while True:
            url, degraded = self._calls.get()
            try:
                self._call(url, degraded)
            finally:
                self._busy = False

    def _call(self, url: str, degraded: str) -> None:
        if degraded and "/api/push/" in url:  # Uptime Kuma shows msg: say why
            url = url.replace("msg=degraded", "msg=" + urllib.parse.quote(degraded[:200]))
        try:
            status = call(url, self.settings.timeout)
            if status >= 400:
                raise OSError(f"HTTP {status}")
        except Exception as exc:  # noqa: BLE001 - whatever the far end answers (a bad status line, garbage,
            # a timeout) is one failed call, counted and logged; never the end of this thread
            self._count("error")
            self.errors.report("call", "dead man's switch %s not reached: %s", safe_url(url),
                               clean(str(getattr(exc, "reason", None) or exc) or type(exc).__name__)[:200],
                               exc_info=False, level=logging.WARNING)
            return
        self.errors.clear("call", "dead man's switch %s reached again", safe_url(url))
        self._count("fail_sent" if degraded else "ok")
        if degraded != self._told:  # once per change, not every interval
            if degraded:
                log.warning("told the dead man's switch %s that lookout is degraded: %s", safe_url(url), degraded)
            else:
                log.info("told the dead man's switch %s that lookout is healthy again", safe_url(url))
            self._told = degraded


def call(url: str, timeout: float) -> int:
    """GET `url` within `timeout` in all (connect, TLS, request, answer: one deadline, not one per
    read), basic auth from its user-info; the HTTP status. Redirects are not followed."""
    parts = urllib.parse.urlsplit(url)
    deadline = time.monotonic() + timeout
    context = ssl.create_default_context() if parts.scheme == "https" else None
    conn = DeadlineConnection(parts.hostname or "", parts.port, deadline, context)
    headers = {"User-Agent": "lookout-deadman", "Connection": "close"}
    if parts.username is not None:
        user = urllib.parse.unquote(parts.username) + ":" + urllib.parse.unquote(parts.password or "")
        headers["Authorization"] = "Basic " + base64.b64encode(user.encode()).decode("ascii")
    try:
        conn.request("GET", (parts.path or "/") + (f"?{parts.query}" if parts.query else ""), headers=headers)
        conn.phase = "answer"
        answer = conn.getresponse()
        answer.read(4096)
        return answer.status
    finally:
        conn.close_all()
