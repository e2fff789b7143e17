"""The listener's core loop: one event from stdin to a committed decision and an ack.

    stdin bytes --protocol--> Envelope --decode--> Event --rules--> Outcome --store--> COMMIT
    --> "RESULT 2\\nOK" --> notifier.wake()   (the notifier sends later, on its own thread)

Everything that may be slow (XML-RPC, HTTP, SMTP) happens on other threads; this loop only
parses, decides, commits to SQLite and acknowledges. It wakes for stdin, for results of the
watcher's RPC calls (a byte on the wakeup pipe) and for the rules' own deadlines (group
resolution after stable_after, the exit grace, reminders).

When the store cannot be written (disk full, locked, removed), the loop holds the commit and
the event's acknowledgement, retries with backoff and tells people once (degraded.py); supervisord
buffers the following events meanwhile, so nothing it still holds is lost. A worker thread
that dies makes the listener exit 1, so supervisord restarts it rather than leave it half-alive.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import time
from collections import deque
from collections.abc import Callable

from ...clock import LookoutClock, clock_meta
from ...config import Config
from ...procfs import pid_gone, spawn_age
from ...rpc import SupervisorClient
from ..notifier.target import Target
from ..notifier.worker import Notifier
from ..protocol.channel import ProtocolChannel
from ..protocol.events import MalformedEvent, ProcessStateEvent, TickEvent, decode, decode_delivery
from ..protocol.parser import Envelope, Garbage
from ..rules.engine import AlertEngine
from ..rules.models import ActionResult, Outcome, ProbeResult
from ..rules.sequence import StreamPosition, check_continuity, is_redelivery
from ..store.files import StoreCorrupt, StoreUnavailable
from ..store.keeper import StoreKeeper
from ..store.sidecar import Sidecar
from ..workers.inbox import Inbox, Posted
from ..workers.log_reader import ProcessLogs
from ..workers.nudge import ExitNudger
from ..workers.watcher import ExitsObserved, Sighting, Snapshot, StartsObserved, SupervisorWatcher
from .clock_steps import commit_for_step, commit_for_stored_frame
from .commits import Commits, Effects
from .degraded import StoreTrouble
from .health import HealthRunner
from .lookups import lookups_outcome
from .supervisord_end import SupervisordEnd
from .supervisord_life import boot_id

log = logging.getLogger("lookout.listener")

MAX_IDLE_WAIT = 1.0
STORE_CHECK_INTERVAL = 10.0  # how often the store file's identity is checked (deleted, replaced)


class Listener:
    def __init__(
        self,
        config: Config,
        targets: list[Target],
        *,
        channel_factory: Callable[[int], ProtocolChannel] = ProtocolChannel.isolate_stdio,
        clock: LookoutClock | None = None,
    ) -> None:
        self.config = config
        self.clock = clock = clock or LookoutClock()  # the rules' time; waits below are monotonic
        self.wakeup_r, self.wakeup_w = os.pipe()
        for fd in (self.wakeup_r, self.wakeup_w):
            os.set_blocking(fd, False)
        self.channel = channel_factory(self.wakeup_r)
        self.ppid = os.getppid()  # supervisord's pid: part of the dedup key
        self.own_namespec = (f"{os.environ.get('SUPERVISOR_GROUP_NAME', '')}:"
                             f"{os.environ.get('SUPERVISOR_PROCESS_NAME', '')}")
        client = SupervisorClient(config.supervisor)
        self.logs = ProcessLogs(client, self.ppid)
        self.keeper = StoreKeeper(config.state_path, config.history)
        self.inbox: Inbox[Posted] = Inbox(self.wakeup_w, b"w")  # every worker's results, in the order they came
        self.watcher = SupervisorWatcher(client, self.logs, self.inbox)
        self.notifier = Notifier(config, targets, self.logs, clock.view(),
                                 store_generation=lambda: self.keeper.generation, on_death=self._wake)
        self.nudger = ExitNudger(client, enabled=config.listener.nudge, on_death=self._wake)
        self.health = HealthRunner(config, client, self.logs, self.inbox, clock, on_death=self._wake)
        self.sidecar = Sidecar(config.state_path)
        self.trouble = StoreTrouble(self.notifier, clock, config.state_path, self.sidecar)
        self.effects = Effects(self.health, self.nudger, self.notifier, self.watcher, self.own_namespec)
        self.commits = Commits(self.keeper, self.channel, self.trouble, self.effects)
        self.backlog: deque[Envelope | Garbage] = deque()  # read while a commit was held
        self.results: deque[Posted] = deque()  # drained from the inbox, not yet applied
        self.end = SupervisordEnd(config, clock, self.own_namespec, self.ppid, sidecar=self.sidecar,
                                  trouble=self.trouble, notifier=self.notifier, keeper=self.keeper,
                                  commits=self.commits, watcher=self.watcher, health=self.health,
                                  inbox=self.inbox, backlog=self.backlog, results=self.results, wake=self._wake)
        self.engine: AlertEngine | None = None
        self.position: StreamPosition | None = None
        self.signalled = False
        self.failed = False  # exit 1: a worker died, or no TICK came
        self.saw_tick = False
        self.last_event_at = time.monotonic()  # (these two: intervals, on the monotonic clock)
        self.last_store_check = time.monotonic()
        try:
            self._open_store()
        except StoreUnavailable as exc:  # run() keeps trying; supervisord buffers events meanwhile
            self.trouble.failed(exc, "opening it")

    # ---- lifecycle ----------------------------------------------------------------------

    def run(self) -> int:
        signal.set_wakeup_fd(self.wakeup_w)
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, self._on_signal)
        self.notifier.start()
        self.watcher.start()
        self.nudger.start()
        self.health.start()
        self.end.deadman.start()
        ready = False
        while not self.stop_requested:
            dead = self._dead_worker()
            if dead:
                log.critical("%s: exiting (status 1) so that supervisord restarts the listener", dead)
                self.failed = True
                break
            items, _ = self.channel.poll(self._wait_time())
            if self.channel.eof:
                log.info("stdin closed: supervisord is gone")
                self.end.supervisord_gone(self.engine)
                break
            self.end.deadman_due(self.engine)
            self.backlog.extend(items)
            if not self._store_usable():
                self.end.look_while_held()
                continue
            if not ready:
                ready = self._get_ready()
                continue
            if delta := self.clock.step():
                self._clock_stepped(delta)
            self._step()
            silent = time.monotonic() - self.last_event_at
            if self.saw_tick and self.commits.held is None and silent > self.config.listener.tick_timeout:
                log.error("no event for %.0fs although TICK is subscribed: exiting to be restarted", silent)
                self.failed = True
                break
        if self.stop_requested and not self.channel.eof:
            self.end.stopped_by_signal(self.engine)
        self.notifier.stop(timeout=3.0)
        self.keeper.close(truncate_wal=True)
        return 1 if self.failed or self.commits.corrupt else 0

    @property
    def stop_requested(self) -> bool:
        return self.signalled or self.commits.corrupt is not None

    def _get_ready(self) -> bool:
        """Once the store is open: record who we are, reconcile, and tell supervisord READY."""
        engine = self.engine
        assert engine is not None
        meta = {"listener_pid": os.getpid(), "listener_started_at": self.clock(), "supervisord_pid": self.ppid,
                **self.end.previous_life(engine), **clock_meta(self.clock.offset, boot_id())}
        if not self.commits.commit(Outcome(), engine, meta=meta, orphans=self.end.lifecycle.take_unsaved()):
            return False
        self.end.after_ready()
        for rec in engine.records.values():
            self.effects.track(rec)
            self.health.sync(rec, engine.policies)
        self._poll_holds(engine)  # before supervisord's view settles an interrupted action: a hold is respected
        self.effects.reconcile("listener started")
        self.channel.ready()
        log.info("lookout-listener ready (pid %d, state %s)", os.getpid(), self.config.state_path)
        return True

    def _step(self) -> None:
        """One loop turn with a usable store: events in order, then the workers' answers, then time."""
        engine, commits = self.engine, self.commits
        assert engine is not None
        while self.backlog and commits.held is None:
            self.handle(self.backlog.popleft())
        self.results.extend(self.inbox.drain())
        while self.results and commits.held is None:
            result = self.results.popleft()
            if isinstance(result, (ProbeResult, ActionResult)):
                self.health.received.append(result)  # applied below, in one batch
            else:
                self._apply_result(result, engine)
        if commits.held is None:
            commits.apply(self.health.results(engine), engine, meta=self.health.stats_due())
        if commits.held is None:
            self._poll_holds(engine)
        if commits.held is None:
            commits.apply(engine.on_time(self.clock()), engine)
        if commits.held is None:
            self.end.orphans_due(self.clock(), engine)

    def _poll_holds(self, engine: AlertEngine) -> None:
        """`lookout hold` / `release` are written by another process: picked up within a second."""
        holds = self.keeper.changed_holds(time.monotonic())
        if holds is not None:
            self.commits.apply(engine.on_holds(holds, self.clock()), engine)

    def _wait_time(self) -> float:
        if self.engine is None or self.commits.held is not None:
            return max(0.0, min(MAX_IDLE_WAIT, self.trouble.retry_at - time.monotonic()))
        if self.backlog or self.results:
            return 0.0
        deadline = self.engine.next_deadline()
        return MAX_IDLE_WAIT if deadline is None else min(MAX_IDLE_WAIT, max(0.0, deadline - self.clock()))

    def _on_signal(self, signum: int, frame: object) -> None:
        log.info("signal %d: stopping", signum)
        self.signalled = True

    def _wake(self) -> None:
        with contextlib.suppress(OSError):
            os.write(self.wakeup_w, b"d")

    def _dead_worker(self) -> str:
        """Every worker thread and pool: one that died leaves work never done (lanes: the notifier's own check)."""
        workers = (self.notifier.thread, self.watcher.thread, self.nudger.thread, self.health.scheduler.thread,
                   self.health.scheduler.pool, self.health.executor.pool, self.end.deadman.thread)
        for worker in workers:
            if worker.died:
                return f"worker {worker.kind} {worker.name} died ({worker.died})"
        return ""

    # ---- the store: open, held commits, replaced files ------------------------------------

    def _open_store(self) -> None:
        note = self.keeper.open(self.clock())
        if self.engine is None:
            state = self.keeper.state
            assert state is not None
            records = state.load_records()  # an action in flight is settled by the engine (interrupted)
            self.engine = AlertEngine(self.config.alerts, records, state.load_open_alerts(),
                                      stopping=state.stopping(), own_namespec=self.own_namespec,
                                      probes=self.config.probes, remediation=self.config.remediation,
                                      probe_states=state.load_probe_states(),
                                      dependencies=self.config.dependencies, checks=self.config.checks)
            self.position = state.position()
            adopt = commit_for_stored_frame(self.clock, state, self.engine, boot_id())  # (a step while none ran)
            try:
                if adopt is not None:
                    self.keeper.commit(adopt.outcome, stopping=self.engine.stopping, **adopt.kwargs)
            except StoreUnavailable:
                self.engine = None  # loaded again (and moved again) at the next try
                raise
        else:  # deleted or replaced under us: what we hold in memory is the truth
            try:
                self.keeper.rewrite(list(self.engine.records.values()), list(self.engine.alerts.values()),
                                    self.position, self.engine.stopping, self.clock(), self.engine.holds.active(),
                                    self.end.lifecycle.orphans)
            except StoreUnavailable:
                self.keeper.close()  # half-filled: the retry opens and rewrites it again
                raise
        if note:
            self.notifier.announce("LookoutStoreReplaced", "lookout replaced a corrupt store", note, "critical")
        self.trouble.resolved()

    def _store_usable(self) -> bool:
        """False while the store cannot be opened or a held commit cannot be written yet."""
        if self.engine is not None and self.commits.held is None:
            self._check_store_file()
            return self.commits.held is None and not self.stop_requested
        if time.monotonic() < self.trouble.retry_at:
            return False
        try:
            if self.engine is None:
                self._open_store()
            else:
                self._retry_held(self.engine)
        except StoreCorrupt as exc:
            self.commits.corrupted(exc)
            return False
        except StoreUnavailable as exc:
            self.trouble.failed(exc, "committing" if self.engine else "opening it")
            return False
        return self.commits.held is None

    def _retry_held(self, engine: AlertEngine) -> None:
        if self.keeper.state is None:  # it was deleted and could not be recreated yet
            self._open_store()
        held = self.commits.retry_held()
        self.clock.publish()  # (a step it held is in the store now: the notifier may follow)
        self.trouble.resolved()
        self.last_event_at = time.monotonic()  # events were held back by us, not by supervisord
        self.commits.finish(held, engine)

    def _check_store_file(self) -> None:
        """A store deleted or replaced under us is recreated from memory within STORE_CHECK_INTERVAL."""
        if time.monotonic() - self.last_store_check < STORE_CHECK_INTERVAL:
            return
        self.last_store_check = time.monotonic()
        if not self.keeper.replaced():
            return
        log.warning("the store %s was deleted or replaced: recreating it from memory and reconciling",
                    self.config.state_path)
        try:
            self._open_store()
        except StoreUnavailable as exc:
            self.trouble.failed(exc, "recreating it")  # the next commit is held and retries
            return
        self.effects.reconcile("store replaced")

    # ---- one event ----------------------------------------------------------------------

    def handle(self, item: Envelope | Garbage) -> None:
        if isinstance(item, Garbage):
            log.error("protocol: skipped %s: %r", item.reason, item.data[:120])
            return
        engine = self.engine
        if self.commits.held is not None or engine is None:
            self.backlog.append(item)  # the store is not writable: keep the order
            return
        now = self.clock()
        try:
            delivery = decode_delivery(item)
        except MalformedEvent as exc:
            log.error("malformed event header acknowledged and ignored: %s", exc)
            self.channel.ack()
            return
        run = f"{delivery.server}:{self.ppid}"
        if is_redelivery(self.position, run, delivery.serial):
            log.info("redelivered event serial %d (%s) ignored", delivery.serial, delivery.eventname)
            self.channel.ack()
            return
        position = StreamPosition(run, delivery.pool, delivery.poolserial, delivery.serial)
        problem = check_continuity(self.position, position)
        if problem and self.position is not None:
            level = logging.WARNING if "lost" in problem else logging.INFO  # a reload is no news
            log.log(level, "%s: reconciling with supervisord", problem)
            self.effects.reconcile(problem)
        self.position = position
        event = None
        try:
            event = decode(item, delivery)
            outcome = engine.on_event(event, now)
            if isinstance(event, ProcessStateEvent) and event.state == "RUNNING" and event.pid:
                age = spawn_age(event.pid)  # the STARTING event may have waited in supervisord
                if age is not None:
                    outcome.merge(engine.on_start_observed(event.namespec, now - age, exact=True))
                elif pid_gone(event.pid):  # so late that it already died: its run time is unknown
                    outcome.merge(engine.on_start_unknown(event.namespec))
        except MalformedEvent as exc:  # its place in the stream still counts: no false "lost" later
            log.error("malformed event acknowledged and ignored: %s (%s serial %d)", exc, delivery.eventname,
                      delivery.serial)
            outcome = Outcome()
        except Exception:  # a rules bug must not stop the stream or make supervisord resend
            log.exception("rules failed on %s serial %d; acknowledged", delivery.eventname, delivery.serial)
            outcome = Outcome()
        if outcome.flags_changed and engine.stopping:
            log.info("supervisord is stopping or reloading: lookout raises no alert and takes no action until "
                     "it runs again")
        meta = {"last_tick_at": now} if isinstance(event, TickEvent) else None
        self.last_event_at = time.monotonic()
        if not self.commits.commit(outcome, engine, ack=True, position=position, event_at=now, meta=meta):
            return
        if isinstance(event, TickEvent):
            self.saw_tick = True
            if time.monotonic() - self.effects.last_reconcile_at >= self.config.listener.reconcile_interval:
                self.effects.reconcile("periodic")
                self.keeper.prune(now)

    # ---- other inputs -------------------------------------------------------------------

    def _apply_result(self, result: Snapshot | ExitsObserved | StartsObserved | Sighting,
                      engine: AlertEngine) -> None:
        """One of the watcher's answers (a reconcile, exit statuses, real start times)."""
        if isinstance(result, Sighting):
            return  # a look while the store could not be written: for memory only (supervisord_end.py)
        if isinstance(result, Snapshot):
            taken_at = self.clock.from_mono(result.taken_mono)  # (the watcher's clock is monotonic)
            meta = {"last_reconcile_at": taken_at}
            meta.update({f"supervisord_{k}": v for k, v in result.daemon.items()})
            self.commits.apply(engine.on_snapshot(result.infos, taken_at, self.clock()), engine, meta=meta)
            self.end.after_reconcile(result.infos, self.clock(), engine)
            return
        self.commits.apply(lookups_outcome(result, engine, self.clock), engine)

    # ---- the wall clock stepped -------------------------------------------------------------

    def _clock_stepped(self, delta: float) -> None:
        """The clock followed the wall clock: every time the loop holds moves with it, and the store's
        copies in one commit (behind a held commit, with it)."""
        log.warning("the wall clock stepped %+.3fs (NTP, a VM restored): deadlines, backoffs and graces keep their "
                    "length", delta)
        engine = self.engine
        assert engine is not None
        self.end.lifecycle.shift(delta)
        meta = clock_meta(self.clock.offset, boot_id())
        commit = commit_for_step(engine, delta, self.clock(), meta)
        if self.commits.held is not None:
            self.commits.held.absorb(commit.outcome, commit.kwargs)
        elif self.commits.commit(commit.outcome, engine, **commit.kwargs):
            self.clock.publish()  # the notifier follows once the loop's rows have moved
