"""Per-program settings, by the one process pattern of lookout/patterns.py (supervisorctl's meaning,
globs as an extension): 'backtest_worker', 'backtest_worker:*' and 'backtest_worker_*' all reach a
numprocs pool, and 'reconciler' reaches 'reconciler:reconciler'.

- [[alerts.programs]]: the first matching entry wins (severity, ignore, crash_loop, tags, must_run, oneshot)
- [[probes]]: every matching entry applies
- [[alerts.groups]]: the first entry matching the group name
- remediation.protected: lookout never acts on these (its own listener and exporter)
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from ...config import AlertSettings, CrashLoop, GroupRule, ProbeSpec
from ...patterns import ProcessPattern, matches
from .kinds import KINDS


@dataclass(frozen=True)
class ProgramPolicy:
    ignore: bool
    crash_loop: CrashLoop
    severity: str | None  # None: the default severity of each alert kind
    tags: tuple[str, ...]
    must_run: bool = False  # down (any state but RUNNING) past `grace` is an alert, whatever the exit code
    grace: float = 10.0
    oneshot: bool = False

    def severity_for(self, kind: str) -> str:
        return self.severity or KINDS[kind].severity


class PolicyBook:
    def __init__(self, settings: AlertSettings, probes: tuple[ProbeSpec, ...] = (),
                 protected: tuple[str, ...] = (), own_namespec: str = "") -> None:
        self.settings, self.probe_specs, self.protected_patterns = settings, probes, protected
        self.own_namespec = own_namespec
        self.lookup = lru_cache(maxsize=4096)(self._lookup)
        self.probes = lru_cache(maxsize=4096)(self._probes)
        self.group_rule = lru_cache(maxsize=1024)(self._group_rule)

    def _lookup(self, namespec: str) -> ProgramPolicy:
        for rule in self.settings.programs:
            if matches(rule.match, namespec):
                return ProgramPolicy(rule.ignore, rule.crash_loop or self.settings.crash_loop, rule.severity,
                                     rule.tags, rule.must_run, rule.grace, rule.oneshot)
        return ProgramPolicy(False, self.settings.crash_loop, None, ())

    def _probes(self, namespec: str) -> tuple[ProbeSpec, ...]:
        return tuple(p for p in self.probe_specs if matches(p.match, namespec))

    def probe(self, namespec: str, name: str) -> ProbeSpec | None:
        return next((p for p in self.probes(namespec) if p.name == name), None)

    def _group_rule(self, group: str) -> GroupRule | None:
        return next((g for g in self.settings.groups if ProcessPattern.parse(g.match).names_group(group)), None)

    def protected(self, namespec: str) -> bool:
        """lookout never stops or restarts these: its own listener and exporter."""
        return namespec == self.own_namespec or any(matches(p, namespec) for p in self.protected_patterns)
