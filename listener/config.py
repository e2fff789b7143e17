"""lookout.toml: one file for the listener and the exporter.

Every key is validated before anything touches supervisord. An error names the key and the
problem in one line (``ConfigError``); the CLI prints it and exits with status 2.
"""

from __future__ import annotations

import os
import re
import socket
import sys
from dataclasses import dataclass, field
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.9/3.10 only
    import tomli as tomllib

SEVERITIES = ("info", "warning", "critical")
DEFAULT_STATE_PATH = "/var/lib/lookout/lookout.db"
DEFAULT_SERVERURL = "unix:///var/run/supervisor.sock"


class ConfigError(ValueError):
    """A bad configuration value; str() is the one line shown to the user."""

    def __init__(self, key: str, problem: str) -> None:
        super().__init__(f"config error: {key}: {problem}")
        self.key = key


_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(value: Any, key: str) -> float:
    """'30s', '5m', '4h', '1d', '250ms' -> seconds. Bare numbers are refused: units matter."""
    if isinstance(value, str):
        total, pos, text = 0.0, 0, value.replace(" ", "")
        for m in re.finditer(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)", text):
            if m.start() != pos:
                break
            total += float(m.group(1)) * _UNIT_SECONDS[m.group(2)]
            pos = m.end()
        if text and pos == len(text):
            return total
    raise ConfigError(key, f"{value!r} is not a duration (write e.g. \"30s\", \"5m\", \"4h\", \"1h30m\")")


def format_duration(seconds: float) -> str:
    """Short human form used in alerts and --check-config: 95 -> '1m35s'."""
    if 0 < seconds < 10:
        return f"{seconds:.1f}s"
    seconds = max(0, int(round(seconds)))
    if seconds < 60:
        return f"{seconds}s"
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if seconds >= size:
            parts.append(f"{seconds // size}{unit}")
            seconds %= size
    return "".join(parts[:2])


@dataclass(frozen=True)
class CrashLoop:
    restarts: int = 5
    within: float = 600.0


@dataclass(frozen=True)
class ProgramRule:
    """A [[alerts.programs]] entry: overrides for processes whose 'group:name' fnmatches."""

    match: str
    severity: str | None = None
    ignore: bool = False
    crash_loop: CrashLoop | None = None
    tags: tuple[str, ...] = ()


@dataclass(frozen=True)
class SupervisorSettings:
    serverurl: str = DEFAULT_SERVERURL
    username: str = ""
    password: str = ""
    timeout: float = 5.0


@dataclass(frozen=True)
class NotifySettings:
    urls: tuple[str, ...] = ()
    config: str = ""  # an apprise config file (YAML/TEXT) with tags, for routing
    plugin_paths: tuple[str, ...] = ()
    timeout: float = 10.0
    retry_initial: float = 2.0
    retry_max: float = 300.0
    retry_for: float = 86400.0
    stderr_lines: int = 20
    max_detailed: int = 10  # alerts shown in full in one message; the rest get one line each


@dataclass(frozen=True)
class AlertmanagerSettings:
    urls: tuple[str, ...] = ()  # http(s)://host:9093; the v2 API path is added
    resend_interval: float = 60.0  # re-post open alerts this often so they do not time out
    timeout: float = 10.0


@dataclass(frozen=True)
class AlertSettings:
    group_wait: float = 10.0
    repeat_interval: float = 4 * 3600.0
    stable_after: float = 60.0
    crash_loop: CrashLoop = field(default_factory=CrashLoop)
    exit_grace: float = 3.0
    host: str = ""
    programs: tuple[ProgramRule, ...] = ()


@dataclass(frozen=True)
class ListenerSettings:
    reconcile_interval: float = 60.0
    tick_timeout: float = 180.0  # no event for this long after a TICK was seen: exit, get restarted
    log_level: str = "info"
    nudge: bool = True  # wake supervisord when a watched process dies (listener/nudge.py)


@dataclass(frozen=True)
class ExporterSettings:
    listen: str = "127.0.0.1:9876"
    heartbeat_stale: float = 150.0
    resource_metrics: bool = True
    tls_cert: str = ""
    tls_key: str = ""
    basic_auth_user: str = ""
    basic_auth_password_sha256: str = ""


@dataclass(frozen=True)
class Config:
    supervisor: SupervisorSettings = field(default_factory=SupervisorSettings)
    state_path: str = DEFAULT_STATE_PATH
    notify: NotifySettings = field(default_factory=NotifySettings)
    alerts: AlertSettings = field(default_factory=AlertSettings)
    listener: ListenerSettings = field(default_factory=ListenerSettings)
    exporter: ExporterSettings = field(default_factory=ExporterSettings)
    alertmanager: AlertmanagerSettings = field(default_factory=AlertmanagerSettings)
    source: str = "<defaults>"

    @property
    def hostname(self) -> str:
        return self.alerts.host or socket.gethostname()


class _Section:
    """Reads one TOML table, refusing keys it does not know and values of the wrong type."""

    def __init__(self, table: Any, prefix: str) -> None:
        if not isinstance(table, dict):
            raise ConfigError(prefix, "must be a table")
        self.table, self.prefix, self.used = table, prefix, set()

    def key(self, name: str) -> str:
        return f"{self.prefix}.{name}" if self.prefix else name

    def get(self, name: str, kind: type | tuple[type, ...], default: Any) -> Any:
        self.used.add(name)
        if name not in self.table:
            return default
        value = self.table[name]
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            names = kind.__name__ if isinstance(kind, type) else "/".join(k.__name__ for k in kind)
            raise ConfigError(self.key(name), f"expected {names}, got {type(value).__name__}")
        return value

    def duration(self, name: str, default: float) -> float:
        raw = self.get(name, str, None)
        return default if raw is None else parse_duration(raw, self.key(name))

    def positive_int(self, name: str, default: int) -> int:
        value = self.get(name, int, default)
        if value < 1:
            raise ConfigError(self.key(name), f"must be at least 1, got {value}")
        return value

    def strings(self, name: str) -> tuple[str, ...]:
        value = self.get(name, list, [])
        for i, item in enumerate(value):
            if not isinstance(item, str):
                raise ConfigError(f"{self.key(name)}[{i}]", "expected a string")
        return tuple(value)

    def sub(self, name: str) -> _Section:
        self.used.add(name)
        return _Section(self.table.get(name, {}), self.key(name))

    def done(self) -> None:
        for name in self.table:
            if name not in self.used:
                raise ConfigError(self.key(name), "unknown key")


def _crash_loop(section: _Section, name: str, default: CrashLoop | None) -> CrashLoop | None:
    if name not in section.table:
        section.used.add(name)
        return default
    sub = section.sub(name)
    base = default or CrashLoop()
    loop = CrashLoop(
        restarts=sub.positive_int("restarts", base.restarts),
        within=sub.duration("within", base.within),
    )
    sub.done()
    if loop.within <= 0:
        raise ConfigError(sub.key("within"), "must be longer than 0s")
    return loop


def _severity(section: _Section, name: str) -> str | None:
    value = section.get(name, str, None)
    if value is not None and value not in SEVERITIES:
        raise ConfigError(section.key(name), f"{value!r} is not one of {', '.join(SEVERITIES)}")
    return value


def _program_rules(section: _Section, default_loop: CrashLoop) -> tuple[ProgramRule, ...]:
    raw = section.get("programs", list, [])
    rules = []
    for i, entry in enumerate(raw):
        sub = _Section(entry, f"{section.key('programs')}[{i}]")
        match = sub.get("match", str, None)
        if not match:
            raise ConfigError(sub.key("match"), "required: an fnmatch pattern on 'group:name'")
        rule = ProgramRule(
            match=match,
            severity=_severity(sub, "severity"),
            ignore=sub.get("ignore", bool, False),
            crash_loop=_crash_loop(sub, "crash_loop", None),
            tags=sub.strings("tags"),
        )
        sub.done()
        rules.append(rule)
    return tuple(rules)


def parse_config(data: dict[str, Any], source: str = "<memory>", env: dict | None = None) -> Config:
    env = os.environ if env is None else env
    root = _Section(data, "")

    sup = root.sub("supervisor")
    supervisor = SupervisorSettings(
        serverurl=sup.get("serverurl", str, "")
        or env.get("SUPERVISOR_SERVER_URL", "")
        or DEFAULT_SERVERURL,
        username=sup.get("username", str, ""),
        password=sup.get("password", str, ""),
        timeout=sup.duration("timeout", 5.0),
    )
    sup.done()
    if not supervisor.serverurl.startswith(("unix://", "http://", "https://")):
        raise ConfigError("supervisor.serverurl", "must start with unix://, http:// or https://")

    st = root.sub("state")
    state_path = st.get("path", str, DEFAULT_STATE_PATH)
    st.done()

    no = root.sub("notify")
    urls = no.strings("urls")
    if not urls and env.get("LOOKOUT_NOTIFY_URLS"):
        urls = tuple(u for u in re.split(r"[\s,]+", env["LOOKOUT_NOTIFY_URLS"]) if u)
    notify = NotifySettings(
        urls=urls,
        config=no.get("config", str, ""),
        plugin_paths=no.strings("plugin_paths"),
        timeout=no.duration("timeout", 10.0),
        retry_initial=no.duration("retry_initial", 2.0),
        retry_max=no.duration("retry_max", 300.0),
        retry_for=no.duration("retry_for", 86400.0),
        stderr_lines=no.get("stderr_lines", int, 20),
        max_detailed=no.positive_int("max_detailed", 10),
    )
    no.done()

    al = root.sub("alerts")
    default_loop = _crash_loop(al, "crash_loop", CrashLoop())
    assert default_loop is not None
    alerts = AlertSettings(
        group_wait=al.duration("group_wait", 10.0),
        repeat_interval=al.duration("repeat_interval", 4 * 3600.0),
        stable_after=al.duration("stable_after", 60.0),
        crash_loop=default_loop,
        exit_grace=al.duration("exit_grace", 3.0),
        host=al.get("host", str, ""),
        programs=_program_rules(al, default_loop),
    )
    al.done()
    if alerts.repeat_interval <= 0:
        raise ConfigError("alerts.repeat_interval", "must be longer than 0s")

    li = root.sub("listener")
    listener = ListenerSettings(
        reconcile_interval=li.duration("reconcile_interval", 60.0),
        tick_timeout=li.duration("tick_timeout", 180.0),
        log_level=li.get("log_level", str, "info").lower(),
        nudge=li.get("nudge", bool, True),
    )
    li.done()
    if listener.log_level not in ("debug", "info", "warning", "error"):
        raise ConfigError("listener.log_level", "must be debug, info, warning or error")

    ex = root.sub("exporter")
    exporter = ExporterSettings(
        listen=ex.get("listen", str, "127.0.0.1:9876"),
        heartbeat_stale=ex.duration("heartbeat_stale", 150.0),
        resource_metrics=ex.get("resource_metrics", bool, True),
        tls_cert=ex.get("tls_cert", str, ""),
        tls_key=ex.get("tls_key", str, ""),
        basic_auth_user=ex.get("basic_auth_user", str, ""),
        basic_auth_password_sha256=ex.get("basic_auth_password_sha256", str, ""),
    )
    ex.done()
    if bool(exporter.tls_cert) != bool(exporter.tls_key):
        raise ConfigError("exporter.tls_key", "tls_cert and tls_key go together")

    am = root.sub("alertmanager")
    alertmanager = AlertmanagerSettings(
        urls=am.strings("urls"),
        resend_interval=am.duration("resend_interval", 60.0),
        timeout=am.duration("timeout", 10.0),
    )
    am.done()
    for i, url in enumerate(alertmanager.urls):
        if not url.startswith(("http://", "https://")):
            raise ConfigError(f"alertmanager.urls[{i}]", "must start with http:// or https://")
    if alertmanager.resend_interval <= 0:
        raise ConfigError("alertmanager.resend_interval", "must be longer than 0s")

    root.done()
    return Config(supervisor, state_path, notify, alerts, listener, exporter, alertmanager, source)


def load_config(path: str | None, env: dict | None = None) -> Config:
    """Load -c PATH, else $LOOKOUT_CONFIG, else defaults (plus environment)."""
    env = os.environ if env is None else env
    path = path or env.get("LOOKOUT_CONFIG") or None
    if path is None:
        return parse_config({}, "<defaults>", env)
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError("-c", f"{path}: no such file") from None
    except OSError as exc:
        raise ConfigError("-c", f"{path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(path, f"not valid TOML: {exc}") from None
    return parse_config(data, path, env)
