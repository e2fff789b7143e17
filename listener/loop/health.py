"""The loop's side of health: which probes run, what lookout does, and what comes back.

ProbeScheduler runs probes on worker threads; RemediationExecutor runs lookout's own stops and
starts. Both post their results to the loop's inbox; the loop hands them here (received), and
they are turned into rule inputs in batches, so 200 probe results a second cost a handful of
commits, not 200.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace

from ...clock import LookoutClock
from ...config import Config
from ...rpc import SupervisorClient
from ..probes.checks import Check
from ..probes.scheduler import ProbeScheduler
from ..probes.target import ProbeTarget
from ..rules.engine import AlertEngine
from ..rules.models import Action, ActionResult, Outcome, ProbeResult, ProbeState, ProcessRecord
from ..rules.policy import PolicyBook
from ..workers.executor import RemediationExecutor
from ..workers.inbox import Inbox, Posted
from ..workers.log_reader import ProcessLogs

SAVE_INTERVAL = 1.0  # probe counts that change nothing else are persisted this often
STATS_INTERVAL = 10.0  # the scheduler's own numbers (runs, skipped, lateness) go to the store's meta


class HealthRunner:
    def __init__(self, config: Config, client: SupervisorClient, logs: ProcessLogs, inbox: Inbox[Posted],
                 clock: LookoutClock, on_death: Callable[[], None]) -> None:
        self.config, self.clock = config, clock  # the loop's: probes run and report on the monotonic clock
        self.scheduler = ProbeScheduler(Check(logs), inbox, on_death=on_death)
        self.executor = RemediationExecutor(client, config.remediation, inbox, on_death=on_death)
        self.received: list[ProbeResult | ActionResult] = []  # from the inbox, not yet applied
        self.unsaved: dict[tuple[str, str], ProbeState] = {}
        self.saved_at = self.stats_at = float("-inf")  # (monotonic)

    def start(self) -> None:
        if self.config.probes or self.config.checks:
            self.scheduler.start()
        for spec in self.config.checks:  # [[checks]]: needs outside supervisord, probed all the time
            group, name = spec.match.split(":", 1)
            self.scheduler.set_process(spec.match, ProbeTarget(group, name, 0, time.monotonic()), (spec,))

    def sync(self, rec: ProcessRecord, policies: PolicyBook) -> None:
        """Tell the scheduler whether this process's probes should run (only while RUNNING)."""
        specs = policies.probes(rec.namespec)
        if not specs:
            return
        running = rec.present and rec.state == "RUNNING" and rec.pid and rec.running_since is not None
        target = ProbeTarget(rec.group, rec.name, rec.pid, self.clock.to_mono(rec.running_since)) if running else None
        self.scheduler.set_process(rec.namespec, target, specs)

    def act(self, action: Action, engine: AlertEngine) -> None:
        """Hand a committed step of lookout's action to the executor, with what its evidence command needs."""
        rec = engine.records.get(action.namespec)
        spec = engine.policies.probe(action.namespec, action.source[6:]) if action.source.startswith("probe:") \
            else None
        target = ProbeTarget(rec.group, rec.name, rec.pid or 0, 0.0) if rec else None  # (for its placeholders)
        fill = (lambda text: target.fill(text, spec)) if target is not None and spec is not None else None
        self.executor.submit(action, fill)

    def cancel(self, action_ids: list[str]) -> None:
        """The rules called these actions off: their calls not yet made are skipped."""
        self.executor.cancel(action_ids)

    def results(self, engine: AlertEngine) -> Outcome:
        """The probe results and action results received since the last call, as one outcome; probe
        counts alone (nothing turned healthy or unhealthy) ride along at most once a second."""
        now, out = self.clock(), Outcome()
        received, self.received = self.received, []
        for result in received:
            if isinstance(result, ProbeResult):  # started on the monotonic clock: onto the loop's now
                result = replace(result, started_at=self.clock.from_mono(result.started_at))
                out.merge(engine.on_probe_result(result, now))
        for result in received:
            if isinstance(result, ActionResult):
                out.merge(engine.on_action_result(result, now))
        self.unsaved.update(out.probe_states)
        out.probe_states = {}
        if self.unsaved and (out or time.monotonic() - self.saved_at >= SAVE_INTERVAL):
            out.probe_states, self.unsaved, self.saved_at = self.unsaved, {}, time.monotonic()
        return out

    def stats_due(self) -> dict[str, object] | None:
        """The scheduler's numbers, every STATS_INTERVAL while probes run (for the exporter and bench)."""
        now = time.monotonic()
        if not self.config.probes or now - self.stats_at < STATS_INTERVAL:
            return None
        self.stats_at = now
        return self.scheduler.stats()
