"""[[probes]], [remediation] and [[alerts.groups]]: health checks and what lookout may do about them.

    [[probes]]
    match = "trading_system:order_executor"     # a process pattern (lookout/patterns.py): name, group:name, glob
    http = { url = "http://127.0.0.1:{port}/healthz", status = "200-399", body = "ok" }
    port_base = 8000                            # {port} = port_base + process_num
    initial_delay = "30s"                       # after every start of the process
    period = "10s"; timeout = "2s"; failure_threshold = 3; success_threshold = 1
    action = "restart"                          # alert (default), restart or stop
    evidence = ["py-spy", "dump", "--pid", "{pid}"]

Exactly one kind per entry: http, tcp, exec, heartbeat, log_silence, log_pattern, memory, cpu,
fds. Placeholders: {group} {name} {pid} {process_num} {port}; any other is an error here.
"""

from __future__ import annotations

import difflib
import re
import string
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from .values import SEVERITIES, ConfigError, Section, parse_duration, shown

KINDS = ("http", "tcp", "exec", "heartbeat", "log_silence", "log_pattern", "memory", "cpu", "fds")
ACTIONS = ("alert", "restart", "stop")
PLACEHOLDERS = ("group", "name", "pid", "process_num", "port")
# Time-based kinds judge a span already: one failing sample is enough by default.
_THRESHOLD_ONE = ("heartbeat", "log_silence", "log_pattern", "memory", "cpu", "fds")
MINUTE, HOUR, DAY = 60.0, 3600.0, 86400.0
LOG_PATTERN_KEPT = 10_000  # matching lines a log_pattern probe keeps: `count` cannot ask for more


@dataclass(frozen=True)
class ProbeSpec:
    name: str  # unique; the `probe` label of the metrics
    index: int  # position in [[probes]]
    match: str
    kind: str
    params: dict[str, Any] = field(hash=False, compare=False)  # the kind's own settings, validated
    port_base: int | None = None
    initial_delay: float = 0.0
    period: float = 10.0
    timeout: float = 2.0
    failure_threshold: int = 3
    success_threshold: int = 1
    sustain: float = 0.0  # `for` of memory and cpu: failing this long, not just N samples
    action: str = "alert"
    evidence: tuple[str, ...] = ()
    severity: str = "warning"


@dataclass(frozen=True)
class RemediationSettings:
    max_restarts: int = 3
    within: float = HOUR
    backoff: float = 10.0
    backoff_max: float = 300.0
    dry_run: bool = False
    evidence_timeout: float = 10.0
    protected: tuple[str, ...] = ("lookout", "lookout:*", "lookout-exporter", "lookout-exporter:*")


@dataclass(frozen=True)
class GroupRule:
    """[[alerts.groups]]: a numprocs pool (or [group:]) that needs min_running processes RUNNING."""

    match: str
    min_running: int
    sustain: float = 30.0  # below the minimum this long in all before alerting (a rolling restart is not an outage)
    severity: str = "critical"
    stable_after: float = 60.0  # at or above the minimum this long: the time below starts over (and resolves)


def placeholders_in(text: str, key: str) -> set[str]:
    """The {fields} of a template; ConfigError for a typo or a format spec."""
    try:
        fields = {f for _, f, spec, conv in string.Formatter().parse(text) if f is not None}
    except ValueError as exc:
        raise ConfigError(key, f"{shown(text)}: {exc}") from None
    unknown = sorted(f for f in fields if f not in PLACEHOLDERS)
    if unknown:
        raise ConfigError(key, f"unknown placeholder {{{unknown[0]}}} (known: "
                               f"{', '.join('{' + p + '}' for p in PLACEHOLDERS)})")
    return fields


def _status_ranges(value: Any, key: str) -> tuple[tuple[int, int], ...]:
    text = str(value) if isinstance(value, (str, int)) and not isinstance(value, bool) else None
    ranges = []
    for part in (text or "").split(","):
        m = re.fullmatch(r"\s*(\d{3})(?:\s*-\s*(\d{3}))?\s*", part)
        if not m:
            raise ConfigError(key, f"{shown(value)} is not a status list such as \"200-399\" or \"200,204\"")
        lo, hi = int(m.group(1)), int(m.group(2) or m.group(1))
        if not 100 <= lo <= hi <= 599:
            raise ConfigError(key, f"{shown(value)}: statuses are between 100 and 599, low to high")
        ranges.append((lo, hi))
    return tuple(ranges)


def _regex(value: Any, key: str) -> str:
    if not isinstance(value, str) or not value:
        raise ConfigError(key, "expected a regular expression")
    try:
        re.compile(value)
    except re.error as exc:
        raise ConfigError(key, f"{shown(value)} is not a valid regular expression: {exc}") from None
    return value


def _check_url(url: str, key: str) -> None:
    """A URL that can only fail (no host, a port out of range) is a config error, not a probe that
    fails, or quietly asks 127.0.0.1, at run time. Not echoed: it may hold a password."""
    parts = urlsplit(re.sub(r"\{[a-z_]+\}", "1", url))
    try:
        parts.port  # noqa: B018  (raises for a port out of range)
    except ValueError:
        raise ConfigError(key, "its port is not a number from 1 to 65535") from None
    if not parts.hostname:
        raise ConfigError(key, "has no host (http://HOST[:PORT]/path)")


def _kind_params(kind: str, raw: Any, key: str, placeholders: set[str]) -> dict[str, Any]:
    """Validate the kind's own value; collects the placeholders it uses into `placeholders`."""
    if kind == "tcp":
        if not isinstance(raw, str) or ":" not in raw:
            raise ConfigError(key, "expected \"host:port\" (placeholders allowed, e.g. \"127.0.0.1:{port}\")")
        if "@" in raw or "/" in raw:  # (not echoed: it may hold a password)
            raise ConfigError(key, "expected \"host:port\" only: no user, password, scheme or path")
        placeholders |= placeholders_in(raw, key)
        return {"address": raw}
    if kind == "exec":
        if not isinstance(raw, list) or not raw or not all(isinstance(a, str) for a in raw):
            raise ConfigError(key, "expected a command as a list of strings, e.g. [\"/bin/check\", \"{pid}\"]")
        for i, arg in enumerate(raw):
            placeholders |= placeholders_in(arg, f"{key}[{i}]")
        return {"argv": tuple(raw)}
    if kind == "log_silence":
        seconds = parse_duration(raw, key)
        if not 1.0 <= seconds <= DAY:
            raise ConfigError(key, f"{shown(raw)} is out of bounds: must be between 1s and 1d")
        return {"silence": seconds}
    sub = Section(raw, key)
    if kind == "http":
        url = sub.get("url", str, "")
        if not url.startswith(("http://", "https://")):
            raise ConfigError(sub.key("url"), "required: an http:// or https:// URL")
        placeholders |= placeholders_in(url, sub.key("url"))
        _check_url(url, sub.key("url"))
        headers = sub.get("headers", dict, {})
        for name, value in headers.items():
            if not isinstance(value, str):
                raise ConfigError(f"{sub.key('headers')}.{name}", "expected a string")
        params = {"url": url, "method": sub.choice("method", "GET", ("GET", "HEAD", "POST")),
                  "status": _status_ranges(sub.get("status", (str, int), "200-399"), sub.key("status")),
                  "body": _regex(sub.table["body"], sub.key("body")) if sub.has("body") else "",
                  "headers": tuple(headers.items()), "insecure": sub.get("insecure", bool, False)}
        sub.used.add("body")
    elif kind == "heartbeat":
        path = sub.get("path", str, "")
        if not path:
            raise ConfigError(sub.key("path"), "required: the file the program touches")
        placeholders |= placeholders_in(path, sub.key("path"))
        params = {"path": path, "max_age": sub.duration("max_age", 30.0, 1.0, DAY)}
    elif kind == "log_pattern":
        if not sub.has("regex"):
            raise ConfigError(sub.key("regex"), "required: the pattern to look for")
        params = {"regex": _regex(sub.table["regex"], sub.key("regex")),
                  "count": sub.integer("count", 1, 1, LOG_PATTERN_KEPT),  # no more than the probe keeps
                  "within": sub.duration("within", MINUTE, 1.0, DAY)}
        sub.used.add("regex")
    elif kind == "memory":
        params = {"max_rss": sub.size("max_rss", 0, 1024 * 1024, 2**50), "for": sub.duration("for", 0.0, 1.0, DAY)}
        if not sub.has("max_rss"):
            raise ConfigError(sub.key("max_rss"), "required, e.g. \"2GB\"")
    elif kind == "cpu":
        params = {"max_percent": sub.number("max_percent", 90.0, 1.0, 100_000.0),
                  "for": sub.duration("for", 0.0, 1.0, DAY)}
    else:  # fds
        params = {"max": sub.integer("max", 10_000, 1, 100_000_000)}
    sub.done()
    return params


def _probe(entry: Any, index: int, prefix: str = "probes") -> ProbeSpec:
    sub = Section(entry, f"{prefix}[{index}]")
    match = sub.get("match", str, "")
    if not match:
        raise ConfigError(sub.key("match"), "required: a process pattern: 'name', 'group:name' or a glob")
    kinds = [k for k in KINDS if sub.has(k)]
    if len(kinds) != 1:
        known = [k for k in sub.table if k not in _COMMON]
        listed = "http, tcp, exec" if prefix == "checks" else ", ".join(KINDS)  # (a check: dependencies.py)
        if not kinds and known:
            typo = difflib.get_close_matches(str(known[0]), sorted(_COMMON), n=1, cutoff=0.7)
            raise ConfigError(sub.key(known[0]), f"unknown key (did you mean {typo[0]!r}?)" if typo
                              else f"unknown probe kind (one of: {listed})")
        problem = "no probe kind" if not kinds else f"two probe kinds ({kinds[0]} and {kinds[1]})"
        where = sub.key(kinds[1]) if len(kinds) > 1 else sub.key("match") if prefix == "probes" else sub.prefix
        raise ConfigError(where, f"{problem}: exactly one of {listed} per [[{prefix}]] entry")
    kind = kinds[0]
    sub.used.add(kind)
    placeholders: set[str] = set()
    params = _kind_params(kind, sub.table[kind], sub.key(kind), placeholders)
    port_base = sub.integer("port_base", -1, 0, 65535) if sub.has("port_base") else None
    evidence = sub.strings("evidence")
    for i, arg in enumerate(evidence):
        placeholders |= placeholders_in(arg, f"{sub.key('evidence')}[{i}]")
    if "port" in placeholders and port_base is None:
        raise ConfigError(sub.key("port_base"), "required when {port} is used ({port} = port_base + process_num)")
    period = sub.duration("period", 10.0, 1.0, DAY)
    timeout = sub.duration("timeout", min(2.0, period), 0.1, HOUR)
    if timeout > period:
        raise ConfigError(sub.key("timeout"), "must not be longer than period (one probe in flight at a time)")
    action = sub.choice("action", "alert", ACTIONS)
    if kind == "log_pattern" and action != "alert":
        raise ConfigError(sub.key("action"), "log_pattern only alerts: a log line is no reason to restart")
    name = sub.get("name", str, "") or kind
    if not re.fullmatch(r"[A-Za-z0-9_.:-]{1,64}", name):
        raise ConfigError(sub.key("name"), f"{shown(name)}: letters, digits and _.:- only (it is a metric label)")
    spec = ProbeSpec(
        name=name, index=index, match=match, kind=kind, params=params, port_base=port_base,
        initial_delay=sub.duration("initial_delay", 0.0, 0.0, DAY),
        period=period, timeout=timeout,
        failure_threshold=sub.integer("failure_threshold", 1 if kind in _THRESHOLD_ONE else 3, 1, 1000),
        success_threshold=sub.integer("success_threshold", 1, 1, 1000),
        sustain=float(params.get("for", 0.0)),
        action=action, evidence=evidence,
        severity=sub.choice("severity", "warning", SEVERITIES),
    )
    sub.done()
    return spec


_COMMON = {"match", "name", "port_base", "initial_delay", "period", "timeout", "failure_threshold",
           "success_threshold", "action", "evidence", "severity"}


def parse_probe(entry: Any, index: int, prefix: str) -> ProbeSpec:
    """One entry of the probe shape under another key ([[checks]]: errors name checks[i].key)."""
    return _probe(entry, index, prefix)


def parse_probes(raw: Any) -> tuple[ProbeSpec, ...]:
    if not isinstance(raw, list):
        raise ConfigError("probes", "must be an array of tables: [[probes]]")
    specs = [_probe(entry, i) for i, entry in enumerate(raw)]
    # Names must be unique among entries that could match the same program: simplest, unique overall.
    seen: dict[str, int] = {}
    unique = []
    for spec in specs:
        count = seen.get(spec.name, 0)
        seen[spec.name] = count + 1
        if count:
            explicit = isinstance(raw[spec.index], dict) and "name" in raw[spec.index]
            if explicit:
                raise ConfigError(f"probes[{spec.index}].name", f"{spec.name!r} is already used by another probe")
            spec = ProbeSpec(**{**spec.__dict__, "name": f"{spec.name}-{count + 1}"})
        unique.append(spec)
    return tuple(unique)


def parse_remediation(sec: Section) -> RemediationSettings:
    r = RemediationSettings(
        max_restarts=sec.integer("max_restarts", 3, 1, 1000),
        within=sec.duration("within", HOUR, MINUTE, 30 * DAY),
        backoff=sec.duration("backoff", 10.0, 1.0, DAY),
        backoff_max=sec.duration("backoff_max", 300.0, 1.0, DAY),
        dry_run=sec.get("dry_run", bool, False),
        evidence_timeout=sec.duration("evidence_timeout", 10.0, 0.1, HOUR),
        protected=sec.strings("protected") if sec.has("protected") else RemediationSettings.protected,
    )
    sec.done()
    empty = [i for i, pattern in enumerate(r.protected) if not pattern]
    if empty:  # patterns.py: an empty pattern names nothing, which is not what a protection means
        raise ConfigError(f"{sec.key('protected')}[{empty[0]}]", "an empty pattern names no process")
    if r.backoff_max < r.backoff:
        raise ConfigError(sec.key("backoff_max"), "must not be shorter than backoff")
    return r


def parse_groups(raw: Any, key: str, stable_after: float = 60.0) -> tuple[GroupRule, ...]:
    """stable_after: [alerts] stable_after, the default of each group's own."""
    if not isinstance(raw, list):
        raise ConfigError(key, "must be an array of tables: [[alerts.groups]]")
    rules = []
    for i, entry in enumerate(raw):
        sub = Section(entry, f"{key}[{i}]")
        match = sub.get("match", str, "")
        if not match:
            raise ConfigError(sub.key("match"), "required: a group pattern: 'pool' or a glob such as 'pool*'")
        if not sub.has("min_running"):
            raise ConfigError(sub.key("min_running"), "required: how many processes must be RUNNING")
        rules.append(GroupRule(match=match, min_running=sub.integer("min_running", 1, 1, 100_000),
                               sustain=sub.duration("for", 30.0, 1.0, DAY),
                               severity=sub.choice("severity", "critical", SEVERITIES),
                               stable_after=sub.duration("stable_after", stable_after, 1.0, DAY)))
        sub.done()
    return tuple(rules)
