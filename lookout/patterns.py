r"""The one answer to "does this pattern name this process?", for all three programs.

Every command and key that takes a process pattern asks here: `lookout silence|hold|release|
status|history|alerts|probe`, `lookout-listener silence|probe`, `[[alerts.programs]]`,
`[[probes]]`, `[[alerts.groups]]` and `remediation.protected` in lookout.toml, and the exporter
through the same PolicyBook. Before, four matchers disagreed (`silence pool` muted the pool,
`hold pool` found nothing); one module makes them agree by construction.

The meaning is supervisorctl's wherever supervisorctl accepts the pattern, so that what an
operator types for `supervisorctl stop` names the same processes here:

    group:name     that process
    group:*        every process of the group (supervisorctl's own spelling)
    group:         the same
    name           every process of the group `name` (`supervisorctl stop pool` stops the pool),
                   and every process whose own name is `name` (`reconciler` is
                   `reconciler:reconciler`, `pool_01` is `pool:pool_01`, as configs already used)

Globs (`*`, `?`, `[...]`, case-sensitive, as fnmatchcase) are lookout's extension, in either part:
`pool*`, `pool:pool_0[12]`, `*:feed`. A glob without a colon is tried against the group name, the
process name and the whole `group:name`, which is what `[[alerts.programs]]` always did, so
existing configs keep their meaning.

A pattern with whitespace or any non-printable character (a control or format character) is
taken literally: it names the process, the group or the `group:name` it equals, and nothing in it
is read as a glob or a colon. Such names come from supervisord as its own cleaning left them, and
a pattern that holds one must not become a wildcard by accident. lookout keeps a name with a
control character in its visible form (ESC as U+241B, lookout/text.py's clean_name), so the name
typed as it is (`$'esc\e[31m'`) and as lookout shows it both name it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from fnmatch import fnmatchcase
from functools import lru_cache

from .text import clean_name

GLOB_CHARS = frozenset("*?[")


def _literal_text(text: str) -> bool:
    """Whitespace or an unprintable character: a name to compare, never a pattern to interpret."""
    return any(c.isspace() or not c.isprintable() for c in text)


@dataclass(frozen=True)
class ProcessPattern:
    """A parsed pattern. `text` is what the operator or the config wrote (and what is stored, e.g.
    as a silence's matcher); the other fields say how it is read."""

    text: str
    group: str  # the part before the colon; the whole text when there is no colon
    name: str  # the part after the colon; "" for `group:` and for a pattern without a colon
    has_colon: bool
    literal: bool  # whitespace or a control character: compared as it is, no glob, no colon
    glob: bool  # uses *, ? or [...]

    @classmethod
    def parse(cls, text: str) -> ProcessPattern:
        """Read `text` once; ValueError for an empty pattern (it would name nothing, or everything)."""
        if not isinstance(text, str) or text == "":
            raise ValueError("an empty process pattern names no process: give a name, 'group:name', "
                             "'group:*' or a glob such as 'pool*'")
        return _parse(text)

    def matches(self, namespec: str) -> bool:
        """Whether this pattern names the process `namespec` ('group:name', as the store keeps it).
        A namespec without a colon is a group as the subject of a group alert (quorum): it is
        named when the pattern names the whole group (see names_group)."""
        group, colon, name = namespec.partition(":")
        if not colon:
            return self.names_group(namespec)
        if self.literal:
            return bool({self.text, clean_name(self.text)}.intersection((namespec, name, group)))
        if self.has_colon:
            return _part(self.group, group) and (self.name in ("", "*") or _part(self.name, name))
        if self.text in (group, name):  # a name is always named by itself, '[' and all
            return True
        return self.glob and any(fnmatchcase(s, self.text) for s in (group, name, namespec))

    def names_group(self, group: str) -> bool:
        """Whether this pattern names the group `group` as a whole: `pool`, `pool:`, `pool:*`,
        `pool*`. For `[[alerts.groups]]` (whose `match` has always been on the group name) and
        for a group's own alerts; `pool:pool_01` and `pool_01` name a member, not the group."""
        if self.literal:
            return group in (self.text, clean_name(self.text))
        if self.has_colon:
            return self.name in ("", "*") and _part(self.group, group)
        return _part(self.text, group)

    def __str__(self) -> str:
        return self.text


def _part(pattern: str, value: str) -> bool:
    return pattern == value or (bool(GLOB_CHARS.intersection(pattern)) and fnmatchcase(value, pattern))


@lru_cache(maxsize=4096)
def _parse(text: str) -> ProcessPattern:
    """Cached: the listener asks about the same few config patterns for every event."""
    if _literal_text(text):
        return ProcessPattern(text, text, "", False, True, False)
    group, colon, name = text.partition(":")
    return ProcessPattern(text, group, name, bool(colon), False, bool(GLOB_CHARS.intersection(text)))


def matches(pattern: str, namespec: str) -> bool:
    """`ProcessPattern.parse(pattern).matches(namespec)`, for callers holding the text."""
    return ProcessPattern.parse(pattern).matches(namespec)


def select(pattern: str | ProcessPattern, namespecs: Iterable[str]) -> list[str]:
    """The namespecs `pattern` names, in the order given (duplicates kept out)."""
    p = pattern if isinstance(pattern, ProcessPattern) else ProcessPattern.parse(pattern)
    out: list[str] = []
    seen: set[str] = set()
    for ns in namespecs:
        if ns not in seen and p.matches(ns):
            seen.add(ns)
            out.append(ns)
    return out


def no_match(pattern: str, where: str = "supervisorctl status lists them") -> str:
    """The one line a command prints when its pattern names nothing (it then exits 2)."""
    return f"lookout: no process matches {pattern!r} ({where})"
