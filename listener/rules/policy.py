"""Per-program settings: the first [[alerts.programs]] entry whose pattern matches wins."""

from __future__ import annotations

from dataclasses import dataclass
from fnmatch import fnmatchcase
from functools import lru_cache

from ..config import AlertSettings, CrashLoop
from .models import DEFAULT_SEVERITY


@dataclass(frozen=True)
class ProgramPolicy:
    ignore: bool
    crash_loop: CrashLoop
    severity: str | None  # None: the default severity of each alert kind
    tags: tuple[str, ...]

    def severity_for(self, kind: str) -> str:
        return self.severity or DEFAULT_SEVERITY[kind]


class PolicyBook:
    def __init__(self, settings: AlertSettings) -> None:
        self.settings = settings
        self.lookup = lru_cache(maxsize=4096)(self._lookup)

    def _lookup(self, namespec: str) -> ProgramPolicy:
        group, _, name = namespec.partition(":")
        for rule in self.settings.programs:
            # 'name' alone also matches, for programs whose group is their own name.
            if fnmatchcase(namespec, rule.match) or (group == name and fnmatchcase(name, rule.match)):
                return ProgramPolicy(
                    ignore=rule.ignore,
                    crash_loop=rule.crash_loop or self.settings.crash_loop,
                    severity=rule.severity,
                    tags=rule.tags,
                )
        return ProgramPolicy(False, self.settings.crash_loop, None, ())
