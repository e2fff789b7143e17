"""[[dependencies]] and [[checks]]: what depends on what, declared once for alerting, recovery and
start-up.

    [[checks]]                        # a need outside supervisord: any probe kind of http, tcp, exec
    name = "vpn"
    tcp = "10.8.0.1:443"
    period = "5s"

    [[dependencies]]
    program = "execution:*"           # the one process pattern (lookout/patterns.py)
    needs = ["risk_manager", "check:vpn"]
    ready = "running"                 # or "healthy" (its probes pass), or "exited" (a one-shot need)
    start = true                      # lookout starts it (supervisord autostart=false) once every need is ready
    grace = "5s"                      # a dependant failing this close to its need joins the need's incident
    start_timeout = "2m"              # still waiting at start-up after this: one alert naming the need

Every need counts (all, not any): a dependant waits until each is ready, and any need down is
reason enough to leave it alone. A cycle is an error here (it names the cycle); patterns are
checked against each other, the processes they name only at run time (dependency_graph.py).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from .probes import ProbeSpec, parse_probe
from .values import ConfigError, Section, shown

READY = ("running", "healthy", "exited")
CHECK_KINDS = ("http", "tcp", "exec")
CHECK_PREFIX = "check:"
DAY = 86400.0
MAX_ENTRIES = 500  # [[dependencies]] entries (each is checked against every other for cycles)


@dataclass(frozen=True)
class Need:
    pattern: str  # a process pattern, or "check:<name>"
    ready: str = "running"

    @property
    def check(self) -> str:
        """The check's name, or "" for a need that is a program."""
        return self.pattern[len(CHECK_PREFIX):] if self.pattern.startswith(CHECK_PREFIX) else ""


@dataclass(frozen=True)
class Dependency:
    program: str
    needs: tuple[Need, ...]
    start: bool = False
    grace: float = 5.0
    start_timeout: float = 120.0
    source: str = ""  # where it was declared: "dependencies[0]", or "supervisord.conf [program:x]"


def parse_checks(raw: Any) -> tuple[ProbeSpec, ...]:
    """[[checks]]: probes of something outside supervisord, named "check:<name>" where a need names them."""
    if not isinstance(raw, list):
        raise ConfigError("checks", "must be an array of tables: [[checks]]")
    specs, names = [], set()
    for i, entry in enumerate(raw):
        sub = Section(entry, f"checks[{i}]")
        name = sub.get("name", str, "")
        if not name:
            raise ConfigError(sub.key("name"), "required: letters, digits and _.- (a need names it check:<name>)")
        if not re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", name):
            raise ConfigError(sub.key("name"), f"{shown(name)}: letters, digits and _.- only, at most 64 "
                                               "(a need names it check:<name>)")
        if name in names:
            raise ConfigError(sub.key("name"), f"{name!r} is already used by another check")
        names.add(name)
        if "match" in entry or "action" in entry:
            key = "match" if "match" in entry else "action"
            raise ConfigError(sub.key(key), "a check watches something outside supervisord: it has no program "
                                            "and lookout acts on nothing for it")
        kinds = [k for k in entry if k in ("heartbeat", "log_silence", "log_pattern", "memory", "cpu", "fds")]
        if kinds:
            raise ConfigError(sub.key(kinds[0]), f"a check is one of {', '.join(CHECK_KINDS)}")
        spec = parse_probe({**entry, "match": CHECK_PREFIX + name}, i, "checks")
        specs.append(spec)
    return tuple(specs)


def parse_dependencies(raw: Any, checks: tuple[ProbeSpec, ...]) -> tuple[Dependency, ...]:
    if not isinstance(raw, list):
        raise ConfigError("dependencies", "must be an array of tables: [[dependencies]]")
    if len(raw) > MAX_ENTRIES:
        raise ConfigError("dependencies", f"{len(raw)} entries: at most {MAX_ENTRIES} (a pattern names many programs)")
    known_checks = {c.match[len(CHECK_PREFIX):] for c in checks}
    deps = []
    for i, entry in enumerate(raw):
        sub = Section(entry, f"dependencies[{i}]")
        sub.only("program", "needs", "ready", "start", "grace", "start_timeout")
        program = sub.get("program", str, "")
        if not program:
            raise ConfigError(sub.key("program"), "required: a process pattern: 'name', 'group:name' or a glob")
        if program.startswith(CHECK_PREFIX):
            raise ConfigError(sub.key("program"), "a check has no needs: name a program")
        ready = sub.choice("ready", "running", READY)
        patterns = sub.strings("needs")
        if not patterns:
            raise ConfigError(sub.key("needs"), "required: what it needs, e.g. [\"database\", \"check:vpn\"]")
        needs = []
        for j, pattern in enumerate(patterns):
            need = Need(pattern, ready)
            if not pattern:
                raise ConfigError(f"{sub.key('needs')}[{j}]", "an empty pattern names nothing")
            if need.check and need.check not in known_checks:
                raise ConfigError(f"{sub.key('needs')}[{j}]", f"no [[checks]] entry is named {need.check!r}")
            if need.check and ready == "exited":
                raise ConfigError(sub.key("ready"), "a check never exits: \"running\" (it passes) or \"healthy\"")
            needs.append(need)
        deps.append(Dependency(
            program=program, needs=tuple(needs), start=sub.get("start", bool, False),
            grace=sub.duration("grace", 5.0, 0.0, 3600.0),
            start_timeout=sub.duration("start_timeout", 120.0, 1.0, DAY), source=sub.key("")[:-1]))
        sub.done()
    check_cycles(deps)
    return tuple(deps)


def check_cycles(deps: list[Dependency]) -> None:
    """A cycle among the declared patterns is an error naming it: "a -> b -> a". Patterns are compared
    as supervisorctl would read them (a need names a program when either pattern takes the other)."""
    from ..patterns import matches

    def names(need: str, program: str) -> bool:
        return need == program or matches(need, program) or matches(program, need)

    edges = {i: [j for j, other in enumerate(deps) if any(names(n.pattern, other.program) for n in dep.needs)]
             for i, dep in enumerate(deps)}
    done: set[int] = set()
    for root in range(len(deps)):  # depth first, without recursion (a chain of hundreds is no stack overflow)
        stack, path = [(root, 0)], [root]
        while stack:
            i, k = stack[-1]
            if i in done or k >= len(edges[i]):
                stack.pop()
                path.pop()
                done.add(i)
                continue
            stack[-1] = (i, k + 1)
            j = edges[i][k]
            if j in path:
                cycle = [deps[n].program for n in path[path.index(j):]] + [deps[j].program]
                raise ConfigError(f"{deps[i].source}.needs", f"a cycle: {' -> '.join(cycle)}")
            if j not in done:
                stack.append((j, 0))
                path.append(j)
