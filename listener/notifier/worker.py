"""The notifier: a background thread that turns pending notices into delivered messages.

Stages, in the order an alert goes through them (modelled on Alertmanager's pipeline):
  1. group_wait  - wait from the first pending notice, so a burst goes out as one message
  2. silence     - notices of silenced processes stay pending until the silence ends
  3. enrich      - ask supervisord for log tails, exit statuses, spawnerr (best effort)
  4. render      - one message per target, holding the alerts that target's tags want
  5. outbox      - messages are written to SQLite with the notices marked dispatched, atomically
  6. send        - each outbox row is sent on its own, with a timeout; failures retry with
                   exponential backoff for notify.retry_for; an accepted message is never resent
The protocol loop only ever calls wake(): it never waits for any of this.
"""

from __future__ import annotations

import logging
import threading
import time
import xmlrpc.client
from collections.abc import Callable

from ..config import Config
from ..rpc import SupervisorClient, SupervisorUnavailable
from ..rules.models import FATAL, RESOLVED
from ..store.delivery import DeliveryStore, OutboxMessage, PendingNotice
from ..store.schema import connect
from .alertmanager import FORMAT as AM_FORMAT
from .alertmanager import render_alertmanager
from .render import Enrichment, render
from .targets import DeliveryError, Target

log = logging.getLogger("lookout.notifier")

POLL_SECONDS = 1.0  # silences are written by another process: look at least this often


class Notifier:
    def __init__(
        self,
        config: Config,
        targets: list[Target],
        client: SupervisorClient | None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config, self.targets, self.client, self.clock = config, targets, client, clock
        self.by_key = {t.key: t for t in targets}
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="lookout-notifier", daemon=True)
        self.store: DeliveryStore | None = None
        self._last_repost = clock()  # the first re-post is one resend_interval after start
        self._am_annotations: dict[int, dict] = {}  # alert id -> last annotations posted

    # ---- called from the protocol loop --------------------------------------------------

    def start(self) -> None:
        self._thread.start()

    def wake(self) -> None:
        self._wake.set()

    def stop(self, timeout: float = 5.0) -> None:
        """Finish the send in progress and one last round of due sends, within timeout."""
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout)

    # ---- the worker ---------------------------------------------------------------------

    def _run(self) -> None:
        self.store = DeliveryStore(connect(self.config.state_path))
        while True:
            try:
                next_at = self.step(self.clock())
            except Exception:
                log.exception("notifier step failed; retrying")
                next_at = None
            if self._stop.is_set():
                return
            wait = POLL_SECONDS if next_at is None else min(POLL_SECONDS, max(0.0, next_at - self.clock()))
            self._wake.wait(wait)
            self._wake.clear()

    def step(self, now: float) -> float | None:
        """One pass through the pipeline; returns when it next has something to do."""
        assert self.store is not None
        group_at = self._dispatch(now)
        repost_at = self._repost(now)
        retry_at = self._send_due()
        times = [t for t in (group_at, repost_at, retry_at) if t is not None]
        return min(times) if times else None

    def _dispatch(self, now: float) -> float | None:
        assert self.store is not None
        notices = self.store.pending_notices()
        if not notices:
            return None
        active = self._silence_stage(notices, now)
        if not active:
            return None
        due = min(n.created_at for n in active) + self.config.alerts.group_wait
        if now < due:
            return due
        extra = self._enrich(active)
        messages = []
        for n in active:
            what = "resolved" if n.kind == RESOLVED else f"{n.kind} {n.alert.kind}"
            log.warning("alert %s: %s (%s)", what, n.alert.namespec, n.alert.severity)
        for target in self.targets:
            mine = [n for n in active if target.wants((*n.alert.tags, n.alert.severity))]
            if mine:
                messages.append(self._message(target, mine, now, extra))
        if not self.targets:
            log.warning("no notification targets configured: set notify.urls to be told of this")
        self.store.dispatch([n.id for n in active], messages, now)
        return None

    def _message(self, target: Target, notices: list[PendingNotice], now: float, extra: Enrichment) -> dict:
        host, lines = self.config.hostname, self.config.notify.stderr_lines
        if target.format == AM_FORMAT:
            body = render_alertmanager(notices, host, now, extra, lines=lines, annotations=self._am_annotations)
            title, kind = "alertmanager", ""
        else:
            msg = render(notices, host, now, extra, lines=lines, max_detailed=self.config.notify.max_detailed)
            title, body, kind = msg.title, msg.body, msg.notify_type
        return {"target_key": target.key, "target_label": target.label, "scheme": target.scheme,
                "title": title, "body": body, "notify_type": kind}

    def _repost(self, now: float) -> float | None:
        """Alertmanager forgets an alert at its endsAt: tell it again what is still open."""
        assert self.store is not None
        targets = [t for t in self.targets if t.format == AM_FORMAT]
        if not targets:
            return None
        every = self.config.alertmanager.resend_interval
        if now - self._last_repost < every:
            return self._last_repost + every
        self._last_repost = now
        silences = self.store.silences(now)
        still = [n for n in self.store.announced_open_alerts()
                 if not any(s.covers(n.alert.namespec, now) for s in silences)]
        if still:
            extra = Enrichment()
            self.store.dispatch([], [self._message(t, still, now, extra) for t in targets], now)
        return now + every

    def _silence_stage(self, notices: list[PendingNotice], now: float) -> list[PendingNotice]:
        """Hold back silenced notices; drop those of alerts that resolved while held unheard."""
        assert self.store is not None
        silences = self.store.silences(now)
        covered = [n for n in notices if any(s.covers(n.alert.namespec, now) for s in silences)]
        newly_held = [n.id for n in covered if not n.held]
        if newly_held:
            self.store.mark_held(newly_held)
        active = [n for n in notices if n not in covered]
        resolved = {n.alert.id for n in active if n.kind == RESOLVED}
        secret = {
            n.alert.id for n in active if n.alert.id in resolved and n.held and not n.heard
        }
        if secret:
            dropped = [n for n in active if n.alert.id in secret]
            for n in dropped:
                log.info("not sending %s %s: it resolved while a silence held it", n.kind, n.alert.namespec)
            self.store.discard([n.id for n in dropped], now)
            active = [n for n in active if n.alert.id not in secret]
        return active

    def _enrich(self, notices: list[PendingNotice]) -> Enrichment:
        extra = Enrichment()
        if self.client is None:
            return extra
        firing = [n for n in notices if n.kind != RESOLVED][: self.config.notify.max_detailed]
        try:
            missing = {n.alert.namespec for n in firing if not (n.process and n.process.last_exit_text)}
            if missing:
                extra.exits.update(self.client.recent_exits(missing))
            for n in firing:
                if self.config.notify.stderr_lines > 0:
                    extra.tails[n.alert.namespec] = self.client.log_tail(n.alert.namespec)
                if n.alert.kind == FATAL:
                    info = self.client.call("supervisor.getProcessInfo", n.alert.namespec)
                    extra.spawnerr[n.alert.namespec] = info.get("spawnerr", "")
        except (SupervisorUnavailable, xmlrpc.client.Fault) as exc:
            extra.unavailable = str(exc)
            log.warning("could not enrich alerts from supervisord: %s", exc)
        return extra

    def _send_due(self) -> float | None:
        assert self.store is not None
        for msg in self.store.due_messages(self.clock()):
            self._send_one(msg)
            if self._stop.is_set():
                break
        return self.store.next_attempt_at()

    def _send_one(self, msg: OutboxMessage) -> None:
        assert self.store is not None
        n = self.config.notify
        target = self.by_key.get(msg.target_key)
        if target is None:
            log.error("dropping message %d: target %s is no longer configured", msg.id, msg.target_label)
            self.store.record_attempt(msg, self.clock(), status="dropped", error="target removed")
            return
        try:
            target.send(msg.title, msg.body, msg.notify_type)
        except DeliveryError as exc:
            now = self.clock()
            if now - msg.created_at >= n.retry_for:
                log.error("giving up on message %d to %s after %d attempts: %s",
                          msg.id, target.label, msg.attempts + 1, exc)
                self.store.record_attempt(msg, now, status="expired", error=str(exc))
                return
            delay = min(n.retry_max, n.retry_initial * (2 ** min(msg.attempts, 30)))
            log.warning("message %d to %s failed (%s); retry %d in %.0fs",
                        msg.id, target.label, exc, msg.attempts + 1, delay)
            self.store.record_attempt(msg, now, status="pending", error=str(exc), retry_at=now + delay)
            return
        self.store.record_attempt(msg, self.clock(), status="sent")
        log.info("message %d sent to %s: %s", msg.id, target.label, msg.title)
