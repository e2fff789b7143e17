"""`lookout-listener probe [PATTERN]`: run the matching probes once, now, and print each result.

The way to test a probe before trusting it with restarts: same checks, same placeholders, same
processes as the listener, against the live supervisord. Exit status 1 if any probe fails, 2 if
supervisord cannot be asked; "?" marks a probe that cannot read its evidence (a log file deleted
under supervisord), which is no failure. Stateful kinds get a one-shot reading: cpu samples twice half a
second apart, log_pattern reads the last 64 KB of the logs. `probe check:NAME` (a shell pattern of
names) runs [[checks]], the needs outside supervisord; the default, every process, runs them too.
"""

from __future__ import annotations

import fnmatch
import os
import sys
import time
import xmlrpc.client

from ...config import Config, UserError, format_duration
from ...config.dependencies import CHECK_PREFIX
from ...config.probes import ProbeSpec
from ...patterns import ProcessPattern, no_match
from ...rpc import SupervisorClient, SupervisorUnavailable
from ...text import last_lines
from ..rules.models import ProbeResult, display_name
from ..rules.policy import PolicyBook
from ..workers.log_reader import ProcessLogs
from .checks import Check
from .target import ProbeTarget

TAIL = 65536


def list_processes(config: Config):  # noqa: ANN201
    client = SupervisorClient(config.supervisor)
    try:
        return client, client.all_process_info()
    except (SupervisorUnavailable, xmlrpc.client.Fault) as exc:
        raise UserError(f"cannot list supervisord's processes: {exc}") from None


def describe_probes(config: Config) -> list[str]:
    """For --check-config: which probes apply to which process, and probes that match nothing."""
    if not config.probes:
        return []
    _, infos = list_processes(config)
    book = PolicyBook(config.alerts, config.probes)
    lines, used = [], set()
    for info in infos:
        specs = book.probes(info.namespec)
        if specs:
            used.update(s.name for s in specs)
            lines.append(f"probes for {display_name(info.namespec)}: "
                         + ", ".join(f"{s.name} ({s.action})" for s in specs))
    lines += [f"warning: probes[{s.index}] ({s.name}, match {s.match!r}) matches no process"
              for s in config.probes if s.name not in used]
    return lines


def run_once(config: Config, pattern: str = "*") -> int:
    """Exit 0 all ok, 1 a probe failed (or none applies), 2 supervisord unreachable or PATTERN names
    no process (patterns.py, the same answer as every other command) or no check."""
    if pattern.startswith(CHECK_PREFIX):
        checks = [s for s in config.checks if fnmatch.fnmatchcase(s.match, pattern)]
        if not checks:
            print(f"no [[checks]] named {pattern[len(CHECK_PREFIX):]!r} (lookout check-config lists them)",
                  file=sys.stderr)
            return 2
        return 1 if _run_checks(checks) else 0
    try:
        wanted = ProcessPattern.parse(pattern)
    except ValueError as exc:
        raise UserError(f"PATTERN: {exc}") from None
    checks = list(config.checks) if pattern == "*" else []
    if not config.probes and not checks:
        if config.checks:  # (a check's name without its prefix: say how to name it)
            print("no [[probes]] in the config; a [[checks]] entry runs as `lookout probe check:NAME`",
                  file=sys.stderr)
            return 2
        print("no [[probes]] in the config")
        return 1
    try:
        client, infos = list_processes(config)
    except UserError:
        if not checks:
            raise
        _run_checks(checks)  # (they need no supervisord: run them, then say it could not be asked)
        raise
    infos = [info for info in infos if wanted.matches(info.namespec)] if config.probes else []
    if not infos and not checks:
        print(no_match(pattern), file=sys.stderr)
        return 2
    try:
        pid = client.call("supervisor.getPID")
    except (SupervisorUnavailable, xmlrpc.client.Fault):
        pid = None
    check = Check(ProcessLogs(client, pid if isinstance(pid, int) else None))
    book = PolicyBook(config.alerts, config.probes)
    failed = ran = 0
    for info in infos:
        for spec in book.probes(info.namespec):
            shown = display_name(info.namespec)
            if info.state != "RUNNING" or not info.pid:
                print(f"skip  {shown:<28} {spec.name:<14} ({info.state}: probes run only while RUNNING)")
                continue
            target = ProbeTarget(info.group, info.name, info.pid, time.monotonic() - max(0, info.now - info.start))
            memory = _one_shot_memory(spec.kind, check, target)
            ran += 1
            failed += not _report(shown, spec.name, check.run(spec, target, memory))
    failed += _run_checks(checks, check)
    if not ran and not checks:
        print(f"no RUNNING process matching {pattern!r} has probes")
        return 1
    return 1 if failed else 0


def _run_checks(checks: list[ProbeSpec], check: Check | None = None) -> int:
    """Run [[checks]] once, as the listener does (no process behind them); the count that failed."""
    check = check or Check(None)
    failed = 0
    for spec in checks:
        group, name = spec.match.split(":", 1)
        failed += not _report(spec.match, spec.name, check.run(spec, ProbeTarget(group, name, 0, time.monotonic()), {}))
    return failed


def _report(shown: str, probe: str, result: ProbeResult) -> bool:
    """Print one result; False when it failed (a probe that cannot judge is no failure)."""
    verdict = "?" if not result.judged else "ok" if result.ok else "FAIL"
    print(f"{verdict:<5} {shown:<28} {probe:<14} {format_duration(result.duration):>7}  "
          f"{'' if result.judged else 'cannot judge: '}{result.detail}")
    if not result.ok and result.evidence:
        print("\n".join(f"      | {line}" for line in last_lines(result.evidence, 20)))
    return not (result.judged and not result.ok)


def _one_shot_memory(kind: str, check: Check, target: ProbeTarget) -> dict:
    memory: dict = {}
    if kind == "cpu":
        usage = check.table.usage([target.pid]).get(target.pid)
        if usage is not None:
            memory["cpu"] = (time.monotonic(), usage.cpu_seconds, target.pid)
        time.sleep(0.5)
        check.table.max_age = 0.0
    elif kind == "log_pattern" and check.logs is not None:
        positions = memory["positions"] = {}
        for path in check.logs.paths(target.namespec):
            try:
                st = os.stat(path)
            except OSError:
                continue
            positions[path] = (st.st_ino, max(0, st.st_size - TAIL))
    return memory
