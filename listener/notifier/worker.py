"""The notifier: a background thread that turns pending notices into delivered messages.

Stages, in the order an alert goes through them (modelled on Alertmanager's pipeline):
  1. group_wait  - wait from the first pending notice, so a burst goes out as one message; and
                   group_interval after the last message, so what follows a message joins the next
  2. silence     - notices of silenced processes stay pending until the silence ends
  3. enrich      - enrich.py: log tails, exit statuses, spawnerr (best effort, per alert: one
                   that cannot be enriched is sent without the extra, saying why)
  4. render      - one message per target, holding the alerts that target's tags want, rendered
                   by the target itself (target.py); an alert that cannot be rendered in full is
                   sent as one plain line
  5. outbox      - messages are written to SQLite with the notices marked dispatched, atomically
  6. send        - sender.py: each outbox row on its own, handed to its target's lane (lanes.py:
                   a thread per target, one deadline for the whole request); failures retry with
                   exponential backoff for notify.retry_for; an accepted message is never resent
A pass runs the thread's stages (Notifier.stages, one ordered list: direct, send, announce,
dispatch = 1-5, repost), each independently: sending what is due never waits on dispatching, and
a stage that fails is logged (once a minute, ErrorLog) and tried again, alone. No stage waits on
a send: this thread hands sends to the lanes and takes their answers from one queue, so a target
that hangs slows only itself, and system messages reach every other target meanwhile. The
protocol loop only ever calls wake(), direct() and announce(): it never waits for any of this.

Its clock is a frame of the loop's (lookout/clock.py), moved only between passes: when the wall
clock stepped, the worker moves its own times (in memory, and the outbox's rows) by the step, and
a pass that read the loop's rows while the loop was moving them is dropped and run again.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from ...clock import frame_of
from ...config import Config
from ..rules.models import RESOLVED
from ..store.delivery import SYSTEM_NEWS, About, DeliveryStore, PendingNotice, Silence
from ..store.files import StoreUnavailable
from ..store.schema import connect
from ..workers.log_reader import ProcessLogs
from ..workers.thread import ErrorLog, WorkerThread
from .direct import DirectSends
from .enrich import Enricher
from .lanes import Lanes
from .render import Enrichment
from .sender import OutboxSender
from .settle import held_back, held_until
from .system import SystemMessage
from .target import Rendering, Target

log = logging.getLogger("lookout.notifier")

POLL_SECONDS = 1.0  # silences are written by another process: look at least this often
STAGE_RETRY_FIRST, STAGE_RETRY_MAX = 2.0, 60.0
STOP_WAIT = 2.0  # seconds a stopping notifier waits for the answers of the sends still out


@dataclass(frozen=True)
class Stage:
    """One stage of a pass: run(now) does its work and says when it next has some (None: only
    when woken). A stage that raises is retried alone, with a backoff of its own (_stage)."""

    name: str
    run: Callable[[float], float | None]
    while_stopping: bool = False  # runs in the passes of a stopping notifier (their answers are recorded)


class Notifier:
    def __init__(
        self,
        config: Config,
        targets: list[Target],
        logs: ProcessLogs | None,
        clock: Callable[[], float] = time.time,
        *,
        store_generation: Callable[[], int] = lambda: 0,
        on_death: Callable[[], None] = lambda: None,
    ) -> None:
        self.config, self.targets, self.logs = config, targets, logs
        self.clock = frame_of(clock)  # (a plain callable: a frame that never moves)
        self._outbox_frame_due = False  # the outbox's rows are still to move with a step (retried)
        self.by_key = {t.key: t for t in targets}
        self.store_generation = store_generation
        self._wake = threading.Event()
        self._stop = threading.Event()
        self.thread = WorkerThread("lookout-notifier", self._run, on_death)
        self.errors = ErrorLog(log)
        self.store: DeliveryStore | None = None
        self._generation = -1
        self._last_repost = clock()  # the first re-post is one resend_interval after start
        self._dispatched_at: float | None = None  # the last message of alerts: group_interval counts from it
        self._lock = threading.Lock()
        self.directs = DirectSends(targets, config.hostname, self._stop)  # best effort, from memory
        self._announce: list[SystemMessage] = []  # durable: through the outbox
        self.lanes = Lanes(targets, config.notify.timeout, self._wake)
        self.sender = OutboxSender(config.notify, self.by_key, clock, self._stop, self.lanes)
        self._stage_at: dict[str, float] = {}  # a failed stage's next try
        self._stage_delay: dict[str, float] = {}
        self._retrying_since: float | None = None  # the oldest message still being retried was written then
        self.enricher = Enricher(config, logs, self.errors)
        self._rendering = Rendering(config.hostname, config.notify.stderr_lines, config.notify.max_detailed,
                                    self.errors)
        self.quiet = threading.Event()  # set after a pass that left nothing announced and nothing due
        self.stages = (  # one pass, in this order
            Stage("direct", self._send_direct, while_stopping=True),  # system messages from memory
            Stage("send", self._send_due, while_stopping=True),  # the outbox to the lanes; answers recorded
            Stage("announce", self._write_announcements),  # system messages into the outbox
            Stage("dispatch", self._dispatch),  # group_wait, silence, enrich, render, outbox
            Stage("repost", self._repost),  # open alerts again, to the targets that forget them
        )

    # ---- called from the protocol loop --------------------------------------------------

    @property
    def failing_since(self) -> float | None:
        """Since when notifications fail: a message is being retried, or a target hangs."""
        since = [t for t in (self._retrying_since, self.sender.hanging_since) if t is not None]
        return min(since, default=None)

    def start(self) -> None:
        self.lanes.start()
        self.thread.start()

    def wake(self) -> None:
        self._wake.set()

    def stop(self, timeout: float = 5.0) -> None:
        """Record the answers of the sends out, within timeout; the lanes are left to what they send."""
        self._stop.set()
        self._wake.set()
        if self.thread.is_alive():
            self.thread.join(timeout)
        self.lanes.stop()

    def direct(self, alertname: str, title: str, text: str, severity: str, resolved: bool = False) -> int:
        """Send now, from memory, to every target: for when the store itself cannot be written.
        Returns a ticket for direct_outcome()."""
        ticket = self.directs.add(alertname, title, text, severity, resolved)
        self.wake()
        return ticket

    def direct_outcome(self, ticket: int) -> dict[str, bool]:
        """Target key -> whether the direct message reached it, for the targets tried so far (the
        last attempt's result: False may still become True on a retry)."""
        return self.directs.outcome(ticket)

    def settle(self, timeout: float) -> bool:
        """Let the worker write and send what was announced (the listener's last words, before it
        exits); True when everything due went out within timeout. What did not stays in the outbox
        for the next listener."""
        deadline = time.monotonic() + timeout
        self.quiet.clear()
        while time.monotonic() < deadline:
            self.wake()
            if self.quiet.wait(min(0.2, max(0.0, deadline - time.monotonic()))):
                return True
        return False

    def announce(self, alertname: str, title: str, text: str, severity: str, resolved: bool = False,
                 targets: tuple[str, ...] = ()) -> None:
        """Send through the outbox like an alert (retried, durable); to the targets of these keys
        only, when given."""
        with self._lock:
            self._announce.append(SystemMessage(alertname, title, text, severity, resolved, targets=targets))
        self.wake()

    # ---- the worker ---------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            self._wake.clear()  # before the pass: an answer that comes during it wakes the next one
            self._follow_clock()
            next_at = self.step(self.clock())
            if self._stop.is_set():
                self._last_answers(time.monotonic() + STOP_WAIT)
                return
            died = self.lanes.died()
            if died:
                raise RuntimeError(f"a notification lane died ({died})")
            wait = POLL_SECONDS if next_at is None else min(POLL_SECONDS, max(0.0, next_at - self.clock()))
            self._wake.wait(wait)

    def _last_answers(self, deadline: float) -> None:
        """Stopping: the answers of the sends still out are recorded while there is time."""
        while self.lanes.waiting() and time.monotonic() < deadline:
            self._wake.wait(min(0.1, max(0.0, deadline - time.monotonic())))
            self._wake.clear()
            self.step(self.clock())

    def _follow_clock(self) -> None:
        """Between passes: a step of the wall clock the loop has seen moves this thread's times."""
        delta = self.clock.sync()
        if delta:
            self._last_repost += delta
            if self._dispatched_at is not None:
                self._dispatched_at += delta
            self._stage_at = {k: t + delta for k, t in self._stage_at.items()}
            if self._retrying_since is not None:
                self._retrying_since += delta
            self.directs.shift(delta)
            self.sender.shift(delta)
            self._outbox_frame_due = True
        if self._outbox_frame_due:
            try:
                self._db().reframe_outbox(self.clock.offset)  # (idempotent: retried until it is written)
                self._outbox_frame_due = False
            except Exception as exc:
                self.store = None
                self.errors.report("reframe", "notifier: moving the outbox with the clock failed (%s); retrying",
                                   exc, exc_info=False, level=logging.WARNING)

    def step(self, now: float) -> float | None:
        """One pass through the stages, each on its own; returns when it next has work."""
        self.sender.collect()
        times = []
        for stage in self.stages:
            if self._stop.is_set() and not stage.while_stopping:
                break
            times.append(self._stage(stage.name, stage.run, now))
        due = [t for t in times if t is not None]
        with self._lock:
            announced = bool(self._announce)
        if not announced and all(t > now for t in due) and not self.lanes.waiting() and not self.sender.unrecorded:
            self.quiet.set()
        return min(due) if due else None

    def _stage(self, name: str, stage: Callable[[float], float | None], now: float) -> float | None:
        at = self._stage_at.get(name)
        if at is not None and now < at <= now + STAGE_RETRY_MAX:  # (a clock stepped back ends the wait)
            return at
        try:
            result = stage(now)
        except Exception as exc:
            if isinstance(exc, StoreUnavailable):
                self.store = None  # reconnect next time
                self.errors.report(f"stage {name}", "notifier: %s stage cannot use the store (%s); retrying", name,
                                   exc, exc_info=False, level=logging.WARNING)
            else:
                self.errors.report(f"stage {name}", "notifier: %s stage failed; retrying it alone", name)
            delay = self._stage_delay.get(name, STAGE_RETRY_FIRST)
            self._stage_delay[name] = min(STAGE_RETRY_MAX, delay * 2)
            self._stage_at[name] = now + delay
            return now + delay
        self._stage_at.pop(name, None)
        if self._stage_delay.pop(name, None) is not None:
            self.errors.clear(f"stage {name}", "notifier: %s stage works again", name)
        return result

    def _db(self) -> DeliveryStore:
        """This thread's connection, following the listener when it recreated the store."""
        generation = self.store_generation()
        if self.store is None or generation != self._generation:
            if self.store is not None:
                self.store.conn.close()
                self.store = None
            self.store = DeliveryStore(connect(self.config.state_path))
            self._generation = generation
        return self.store

    # ---- system messages --------------------------------------------------------------------

    def _send_direct(self, now: float) -> float | None:
        return self.directs.send(now, self.lanes, self.sender)

    def _write_announcements(self, now: float) -> None:
        with self._lock:
            items = list(self._announce)
        if not items:
            return None
        messages = []
        for msg in items:
            for target in [t for t in self.targets if not msg.targets or t.key in msg.targets]:
                payload = target.render_system(msg, self.config.hostname)
                messages.append({"target_key": target.key, "target_label": target.label, "scheme": target.scheme,
                                 "title": payload.title, "body": payload.body, "notify_type": payload.notify_type,
                                 "about": SYSTEM_NEWS})
        self._db().dispatch([], messages, now)
        with self._lock:
            del self._announce[: len(items)]
        return now if messages else None

    # ---- alerts -------------------------------------------------------------------------

    def _dispatch(self, now: float) -> float | None:
        store = self._db()
        notices = store.pending_notices()
        if not notices:
            return None
        silences = store.silences(now)
        if self.clock.moved():
            return now  # read while the loop moved its rows with a step of the clock: again, in the new frame
        active = self._silence_stage(store, notices, silences, now)
        settling = [n for n in active if held_back(n, now)]
        if settling:  # they wait (with their alert's firing: one message says both), the others go on
            held = {n.alert.id for n in settling}
            active = [n for n in active if n.alert.id not in held]
            if not active:
                return min(held_until(n, now) for n in settling)
        if not active:
            return None
        first = min(n.created_at for n in active)
        due = first + self.config.alerts.group_wait if first <= now else now  # (after now: the clock stepped back)
        if self._dispatched_at is not None and self._dispatched_at <= now:  # a message just went: the rest joins
            due = max(due, self._dispatched_at + self.config.alerts.group_interval)  # the next, one per interval
        if now < due:
            return due
        extra = self.enricher.enrich(active)
        messages = []
        for target in self.targets:
            mine = [n for n in active if target.wants((*n.alert.tags, n.alert.severity))]
            if mine:
                messages.append(self._message(target, mine, now, extra))
        if not self.targets:
            log.warning("no notification targets configured: set notify.urls to be told of this")
        history = [(n.alert.namespec, f"{n.kind} {n.alert.kind} queued for {len(messages)} target(s)") for n in active]
        if not store.dispatch([n.id for n in active], messages, now, history, rendered=active):
            log.info("an alert changed while its message was rendered: rendering again")
            return now
        self._dispatched_at = now
        for n in active:
            if n.kind == RESOLVED:
                log.info("alert resolved: %s (%s)", n.alert.namespec, n.alert.kind)
            else:
                log.warning("alert %s %s: %s (%s)", n.kind, n.alert.kind, n.alert.namespec, n.alert.severity)
        return now if messages else None  # the send stage takes them at once, in the next pass

    def _message(self, target: Target, notices: list[PendingNotice], now: float, extra: Enrichment,
                 repost: bool = False) -> dict:
        payload = target.render(notices, now, extra, self._rendering)
        about = About.alerts((n.alert for n in notices), repost)
        return {"target_key": target.key, "target_label": target.label, "scheme": target.scheme,
                "title": payload.title, "body": payload.body, "notify_type": payload.notify_type, "about": about}

    def _repost(self, now: float) -> float | None:
        """Alertmanager forgets an alert at its endsAt: tell the targets that forget what is still open."""
        targets = [t for t in self.targets if t.reposts]
        if not targets:
            return None
        every = self.config.alertmanager.resend_interval
        if now < self._last_repost:  # the clock stepped back: re-post on the new clock, not after the step
            self._last_repost = now - every
        if now - self._last_repost < every:
            return self._last_repost + every
        store = self._db()
        silences = store.silences(now)
        still = [n for n in store.announced_open_alerts()
                 if not any(s.covers(n.alert.namespec, now) for s in silences)]
        if self.clock.moved():
            return now  # (as in _dispatch)
        self._last_repost = now
        if still:
            extra = Enrichment(dashboard_url=self.config.notify.dashboard_url)
            store.dispatch([], [self._message(t, still, now, extra, repost=True) for t in targets], now)
            return now
        return now + every

    def _silence_stage(self, store: DeliveryStore, notices: list[PendingNotice], silences: list[Silence],
                       now: float) -> list[PendingNotice]:
        """Hold back silenced notices; drop those of alerts that resolved while held unheard."""
        covered = [n for n in notices if any(s.covers(n.alert.namespec, now) for s in silences)]
        newly_held = [n.id for n in covered if not n.held]
        if newly_held:
            store.mark_held(newly_held)
        active = [n for n in notices if n not in covered]
        resolved = {n.alert.id for n in active if n.kind == RESOLVED}
        secret = {n.alert.id for n in active if n.alert.id in resolved and n.held and not n.heard}
        if secret:
            dropped = [n for n in active if n.alert.id in secret]
            for n in dropped:
                log.info("not sending %s %s: it resolved while a silence held it", n.kind, n.alert.namespec)
            store.discard([n.id for n in dropped], now)
            active = [n for n in active if n.alert.id not in secret]
        return active

    # ---- the outbox ---------------------------------------------------------------------

    def _send_due(self, now: float) -> float | None:
        store = self._db()
        wake = self.sender.send_due(store)
        self._retrying_since = store.failing_since()  # ends when the message goes out or is given up on
        return wake

