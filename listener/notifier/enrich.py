"""The notifier's enrich stage: what supervisord can add to an alert just before it is rendered
(its log tail, its exit status from the main log, FATAL's spawnerr), and the paths of its http
probes (their requests are lookout's own noise in that tail).

Best effort, alert by alert: what cannot be fetched is named in that alert (Enrichment.unavailable,
exit_unknown) and nowhere else, so one process whose log cannot be read holds up no message.
"""

from __future__ import annotations

import logging
import xmlrpc.client
from urllib.parse import urlsplit

from ...config import Config
from ...config.dependencies import CHECK_PREFIX
from ...rpc import SupervisorUnavailable, snapshot_from_info
from ...text import clean
from ..rules.models import FATAL, RESOLVED
from ..rules.policy import PolicyBook
from ..store.delivery import PendingNotice
from ..workers.log_reader import ProcessLogs
from ..workers.thread import ErrorLog
from .render import Enrichment


class Enricher:
    """Runs in the notifier's thread; reads supervisord through ``logs`` (None: nothing to add
    but the dashboard link and the probe paths)."""

    def __init__(self, config: Config, logs: ProcessLogs | None, errors: ErrorLog) -> None:
        self.config, self.logs, self.errors = config, logs, errors
        self.policies = PolicyBook(config.alerts, config.probes)

    def enrich(self, notices: list[PendingNotice]) -> Enrichment:
        """Best effort, alert by alert: what fails is named in that alert and nowhere else."""
        extra = Enrichment(dashboard_url=self.config.notify.dashboard_url)
        for n in notices:  # the paths lookout's http probes request: their access-log lines are its own noise
            paths = {urlsplit(spec.params["url"]).path or "/" for spec in self.policies.probes(n.alert.namespec)
                     if spec.kind == "http"}
            if paths:
                extra.probe_paths[n.alert.namespec] = tuple(paths)
        if self.logs is None:
            return extra
        firing = [n for n in notices if n.kind != RESOLVED and not n.alert.namespec.startswith(CHECK_PREFIX)
                  ][: self.config.notify.max_detailed]  # (a [[checks]] need is no process: no log, no exit)
        missing = {n.alert.namespec for n in firing if not (n.process and n.process.last_exit_text)}
        if missing:
            try:
                extra.exits.update(self.logs.recent_exits(missing))
                why = "not in the tail of supervisord's main log"
            except Exception as exc:
                self.errors.report("enrich exits", "could not read exit statuses: %s", exc, exc_info=False,
                                   level=logging.WARNING)
                why = clean(str(exc))[:200]
            extra.exit_unknown.update((ns, why) for ns in missing if ns not in extra.exits)
        for n in firing:
            ns = n.alert.namespec
            try:
                if self.config.notify.stderr_lines > 0:
                    extra.tails[ns], problem = self.logs.tail(ns)
                    if problem:
                        extra.unavailable[ns] = clean(problem)[:200]
                if n.alert.kind == FATAL:
                    snap = snapshot_from_info(self.logs.client.call("supervisor.getProcessInfo", ns))
                    if snap is not None:
                        extra.spawnerr[ns] = clean(snap.spawnerr)[:500]
            except (SupervisorUnavailable, xmlrpc.client.Fault) as exc:
                extra.unavailable[ns] = clean(str(exc))[:200]
            except Exception as exc:
                extra.unavailable[ns] = f"{type(exc).__name__} while reading it"
                self.errors.report("enrich", "could not enrich the alert of %s", ns)
        return extra
