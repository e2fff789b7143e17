"""The listener's core loop: one event from stdin to a committed decision and an ack.

    stdin bytes --protocol--> Envelope --decode--> Event --rules--> Outcome --store--> COMMIT
    --> "RESULT 2\\nOK" --> notifier.wake()   (the notifier sends later, on its own thread)

Everything that may be slow (XML-RPC, HTTP, SMTP) happens on other threads; this loop only
parses, decides, commits to SQLite and acknowledges. It wakes for stdin, for results of the
watcher's RPC calls (a byte on the wakeup pipe) and for the rules' own deadlines (group
resolution after stable_after, the exit grace, reminders).
"""

from __future__ import annotations

import logging
import os
import signal
import time
from collections.abc import Callable

from .config import Config
from .notifier.targets import Target
from .notifier.worker import Notifier
from .nudge import ExitNudger
from .procfs import spawn_time
from .protocol.channel import ProtocolChannel
from .protocol.events import MalformedEvent, ProcessStateEvent, TickEvent, decode
from .protocol.parser import Envelope, Garbage
from .rpc import SupervisorClient
from .rules.engine import LIVE_STATES, AlertEngine
from .rules.models import Outcome
from .rules.sequence import StreamPosition, check_continuity, is_redelivery
from .store.schema import connect
from .store.state import StateStore
from .watcher import ExitsObserved, Snapshot, StartsObserved, SupervisorWatcher

log = logging.getLogger("lookout.listener")

MAX_IDLE_WAIT = 1.0


class Listener:
    def __init__(
        self,
        config: Config,
        targets: list[Target],
        *,
        channel_factory: Callable[[int], ProtocolChannel] = ProtocolChannel.isolate_stdio,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config, self.clock = config, clock
        self.wakeup_r, self.wakeup_w = os.pipe()
        for fd in (self.wakeup_r, self.wakeup_w):
            os.set_blocking(fd, False)
        self.channel = channel_factory(self.wakeup_r)
        self.state = StateStore(connect(config.state_path))
        own = f"{os.environ.get('SUPERVISOR_GROUP_NAME', '')}:{os.environ.get('SUPERVISOR_PROCESS_NAME', '')}"
        self.engine = AlertEngine(
            config.alerts,
            self.state.load_records(),
            self.state.load_open_alerts(),
            stopping=self.state.stopping(),
            own_namespec=own,
        )
        self.position = self.state.position()
        self.ppid = os.getppid()  # supervisord's pid: part of the dedup key
        client = SupervisorClient(config.supervisor)
        self.watcher = SupervisorWatcher(client, self.wakeup_w, clock)
        self.notifier = Notifier(config, targets, client, clock)
        self.nudger = ExitNudger(client, enabled=config.listener.nudge)
        self.stop_requested = False
        self.saw_tick = False
        self.last_event_at = clock()
        self.last_reconcile_at = 0.0

    # ---- lifecycle ----------------------------------------------------------------------

    def run(self) -> int:
        signal.set_wakeup_fd(self.wakeup_w)
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, self._on_signal)
        self.state.commit(Outcome(), stopping=self.engine.stopping, meta={
            "listener_pid": os.getpid(), "listener_started_at": self.clock(), "supervisord_pid": self.ppid,
        })
        self.notifier.start()
        self.watcher.start()
        self.nudger.start()
        for rec in self.engine.records.values():
            self._track(rec)
        self._reconcile("listener started")
        self.channel.ready()
        log.info("lookout-listener ready (pid %d, state %s)", os.getpid(), self.config.state_path)
        status = 0
        while not self.stop_requested:
            deadline = self.engine.next_deadline()
            now = self.clock()
            timeout = MAX_IDLE_WAIT if deadline is None else min(MAX_IDLE_WAIT, max(0.0, deadline - now))
            items, _ = self.channel.poll(timeout)
            if self.channel.eof:
                log.info("stdin closed: supervisord is gone")
                break
            for item in items:
                self.handle(item)
            for result in self.watcher.drain():
                self._apply_result(result)
            self._apply(self.engine.on_time(self.clock()))
            if self.saw_tick and self.clock() - self.last_event_at > self.config.listener.tick_timeout:
                log.error("no event for %.0fs although TICK is subscribed: exiting to be restarted",
                          self.clock() - self.last_event_at)
                status = 1
                break
        self.notifier.stop(timeout=3.0)
        return status

    def _on_signal(self, signum: int, frame: object) -> None:
        log.info("signal %d: stopping", signum)
        self.stop_requested = True

    # ---- one event ----------------------------------------------------------------------

    def handle(self, item: Envelope | Garbage) -> None:
        if isinstance(item, Garbage):
            log.error("protocol: skipped %s: %r", item.reason, item.data[:120])
            return
        now = self.clock()
        try:
            event = decode(item)
        except MalformedEvent as exc:
            log.error("malformed event acknowledged and ignored: %s (%s)", exc, item.eventname or "?")
            self.channel.ack()
            return
        d = event.delivery
        run = f"{d.server}:{self.ppid}"
        if is_redelivery(self.position, run, d.serial):
            log.info("redelivered event serial %d (%s) ignored", d.serial, d.eventname)
            self.channel.ack()
            return
        position = StreamPosition(run, d.pool, d.poolserial, d.serial)
        problem = check_continuity(self.position, position)
        if problem and self.position is not None:
            log.warning("%s: reconciling with supervisord", problem)
            self._reconcile(problem)
        self.position = position
        try:
            outcome = self.engine.on_event(event, now)
            if isinstance(event, ProcessStateEvent) and event.state == "RUNNING" and event.pid:
                exact = spawn_time(event.pid)  # the STARTING event may have waited in supervisord
                if exact is not None:
                    outcome.records.update(self.engine.on_start_observed(event.namespec, exact, exact=True).records)
        except Exception:  # a rules bug must not stop the stream or make supervisord resend
            log.exception("rules failed on %s serial %d; acknowledged", d.eventname, d.serial)
            outcome = Outcome()
        meta = {"last_tick_at": now} if isinstance(event, TickEvent) else None
        self.state.commit(outcome, stopping=self.engine.stopping, position=position, event_at=now, meta=meta)
        self.channel.ack()
        self.last_event_at = now
        self._after_commit(outcome)
        if isinstance(event, TickEvent):
            self.saw_tick = True
            if now - self.last_reconcile_at >= self.config.listener.reconcile_interval:
                self._reconcile("periodic")
                self.state.prune(now)

    # ---- other inputs -------------------------------------------------------------------

    def _apply_result(self, result: Snapshot | ExitsObserved | StartsObserved) -> None:
        if isinstance(result, Snapshot):
            meta = {"last_reconcile_at": result.taken_at}
            meta.update({f"supervisord_{k}": v for k, v in result.daemon.items()})
            self._apply(self.engine.on_snapshot(result.infos, result.taken_at, self.clock()), meta=meta)
            return
        outcome = Outcome()  # one commit for the whole batch of lookups
        if isinstance(result, StartsObserved):
            for ns, start in result.starts.items():
                outcome.records.update(self.engine.on_start_observed(ns, start).records)
        else:
            for ns, info in result.exits.items():
                outcome.records.update(self.engine.on_exit_observed(ns, info.status, info.text).records)
        self._apply(outcome)

    def _apply(self, outcome: Outcome, meta: dict[str, object] | None = None) -> None:
        if outcome or meta:  # something to persist; requests (reconcile, lookups) need no commit
            self.state.commit(outcome, stopping=self.engine.stopping, meta=meta)
        self._after_commit(outcome)

    def _track(self, rec) -> None:  # noqa: ANN001
        if rec.namespec != self.engine.own_namespec:
            self.nudger.track(rec.namespec, rec.pid if rec.state in LIVE_STATES else None)

    def _after_commit(self, outcome: Outcome) -> None:
        for rec in outcome.records.values():
            self._track(rec)
        if outcome.reconcile:
            self._reconcile(outcome.reconcile)
        if outcome.notices:
            self.notifier.wake()
        if outcome.exit_lookups:
            self.watcher.lookup_exits(outcome.exit_lookups)
        if outcome.start_lookups:
            self.watcher.lookup_starts(outcome.start_lookups)

    def _reconcile(self, why: str) -> None:
        self.last_reconcile_at = self.clock()
        self.watcher.reconcile(why)
