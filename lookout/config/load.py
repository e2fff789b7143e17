"""lookout.toml -> Config. Every key is validated before anything touches supervisord.

Bounds (minimum..maximum) are part of each key's documentation in conf.d/lookout.toml.
"""

from __future__ import annotations

import os
import re
import sys
from dataclasses import replace
from typing import Any
from urllib.parse import urlsplit

from .dependencies import parse_checks, parse_dependencies
from .dependent_startup import dependent_startup
from .model import (
    CRASH_LOOP_ACTIONS,
    DEFAULT_SERVERURL,
    DEFAULT_STATE_PATH,
    SEVERITIES,
    AlertmanagerSettings,
    AlertSettings,
    Config,
    CrashLoop,
    DeadmanSettings,
    ExporterSettings,
    HistorySettings,
    ListenerSettings,
    NotifySettings,
    ProgramRule,
    SupervisorSettings,
)
from .probes import parse_groups, parse_probes, parse_remediation
from .values import ConfigError, Section

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.9/3.10 only
    import tomli as tomllib

MINUTE, HOUR, DAY = 60.0, 3600.0, 86400.0


def crash_loop_settings(section: Section, name: str, default: CrashLoop | None) -> CrashLoop | None:
    if not section.has(name):
        section.used.add(name)
        return default
    sub = section.sub(name)
    base = default or CrashLoop()
    loop = CrashLoop(
        restarts=sub.integer("restarts", base.restarts, 1, 10_000),
        within=sub.duration("within", base.within, 1.0, 7 * DAY),
        action=sub.choice("action", base.action, CRASH_LOOP_ACTIONS),
        backoff=sub.duration("backoff", base.backoff, 1.0, DAY),
        backoff_max=sub.duration("backoff_max", base.backoff_max, 1.0, DAY),
        reset_after=sub.duration("reset_after", base.reset_after, 1.0, 7 * DAY),
    )
    sub.done()
    if loop.backoff_max < loop.backoff:
        raise ConfigError(sub.key("backoff_max"), "must not be shorter than backoff")
    return loop


def _severity(section: Section, name: str) -> str | None:
    value = section.get(name, str, None)
    if value is not None and value not in SEVERITIES:
        raise ConfigError(section.key(name), f"{value!r} is not one of {', '.join(SEVERITIES)}")
    return value


def _program_rules(section: Section) -> tuple[ProgramRule, ...]:
    rules = []
    for i, entry in enumerate(section.get("programs", list, [])):
        sub = Section(entry, f"{section.key('programs')}[{i}]")
        match = sub.get("match", str, None)
        if not match:
            raise ConfigError(sub.key("match"), "required: a process pattern: 'name', 'group:name' or a glob")
        rule = ProgramRule(
            match=match,
            severity=_severity(sub, "severity"),
            ignore=sub.get("ignore", bool, False),
            crash_loop=crash_loop_settings(sub, "crash_loop", None),
            tags=sub.strings("tags"),
            must_run=sub.get("must_run", bool, False),
            grace=sub.duration("grace", 10.0, 0.1, DAY),
            oneshot=sub.get("oneshot", bool, False),
        )
        sub.done()
        if rule.must_run and rule.oneshot:
            raise ConfigError(sub.key("oneshot"), "a one-shot program exits by design: not with must_run = true")
        rules.append(rule)
    return tuple(rules)


def _supervisor(root: Section, env: Any) -> SupervisorSettings:
    sup = root.sub("supervisor")
    supervisor = SupervisorSettings(
        serverurl=sup.get("serverurl", str, "") or env.get("SUPERVISOR_SERVER_URL", "") or DEFAULT_SERVERURL,
        username=sup.get("username", str, ""),
        password=sup.get("password", str, ""),
        timeout=sup.duration("timeout", 5.0, 0.1, 10 * MINUTE),
        config=sup.get("config", str, ""),
    )
    sup.done()
    if not supervisor.serverurl.startswith(("unix://", "http://", "https://")):
        raise ConfigError("supervisor.serverurl", "must start with unix://, http:// or https://")
    return supervisor


def _state(root: Section) -> tuple[str, HistorySettings]:
    st = root.sub("state")
    path = st.get("path", str, DEFAULT_STATE_PATH)
    history = HistorySettings(
        max_age=st.duration("history_max_age", 30 * DAY, HOUR, 3650 * DAY),
        max_rows=st.integer("history_max_rows", 50_000, 1000, 10_000_000),
        per_process=st.integer("history_per_process", 500, 10, 1_000_000),
    )
    st.done()
    if not path.strip():
        raise ConfigError("state.path", "must not be empty: the store keeps alerts, history and the outbox")
    if "\0" in path:
        raise ConfigError("state.path", "must not contain a NUL character")
    return path, history


def _notify(root: Section, env: Any) -> NotifySettings:
    no = root.sub("notify")
    urls = no.strings("urls")
    if not urls and env.get("LOOKOUT_NOTIFY_URLS"):
        urls = tuple(u for u in re.split(r"[\s,]+", env["LOOKOUT_NOTIFY_URLS"]) if u)
    notify = NotifySettings(
        urls=urls,
        config=no.get("config", str, ""),
        plugin_paths=no.strings("plugin_paths"),
        timeout=no.duration("timeout", 10.0, 1.0, 10 * MINUTE),
        retry_initial=no.duration("retry_initial", 2.0, 0.1, HOUR),
        retry_max=no.duration("retry_max", 300.0, 1.0, DAY),
        retry_for=no.duration("retry_for", DAY, MINUTE, 30 * DAY),
        stderr_lines=no.integer("stderr_lines", 20, 0, 1000),
        max_detailed=no.integer("max_detailed", 10, 1, 1000),
        dashboard_url=no.get("dashboard_url", str, ""),
    )
    no.done()
    if notify.dashboard_url:
        if not notify.dashboard_url.startswith(("http://", "https://")):
            raise ConfigError("notify.dashboard_url", "must start with http:// or https://")
        try:
            notify.dashboard_url.format(host="h", group="g", name="n")
        except (KeyError, IndexError, ValueError) as exc:
            raise ConfigError("notify.dashboard_url", f"unknown placeholder {exc} (known: {{host}}, {{group}}, "
                                                      "{name})") from None
    if notify.retry_max < notify.retry_initial:
        raise ConfigError("notify.retry_max", "must not be shorter than notify.retry_initial")
    return notify


def _alerts(root: Section) -> AlertSettings:
    al = root.sub("alerts")
    default_loop = crash_loop_settings(al, "crash_loop", CrashLoop())
    assert default_loop is not None
    stable_after = al.duration("stable_after", 60.0, 1.0, DAY)
    alerts = AlertSettings(
        group_wait=al.duration("group_wait", 1.0, 0.1, HOUR),
        group_interval=al.duration("group_interval", 10.0, 0.0, HOUR),
        repeat_interval=al.duration("repeat_interval", 4 * HOUR, MINUTE, 30 * DAY),
        stable_after=stable_after,
        crash_loop=default_loop,
        exit_grace=al.duration("exit_grace", 3.0, 0.1, 10 * MINUTE),
        host=al.get("host", str, ""),
        programs=_program_rules(al),
        groups=parse_groups(al.get("groups", list, []), al.key("groups"), stable_after),
    )
    al.done()
    return alerts


def _listener(root: Section) -> ListenerSettings:
    li = root.sub("listener")
    listener = ListenerSettings(
        reconcile_interval=li.duration("reconcile_interval", 60.0, 10.0, DAY),
        tick_timeout=li.duration("tick_timeout", 180.0, 2 * MINUTE, DAY),
        log_level=li.choice("log_level", "info", ("debug", "info", "warning", "error")),
        nudge=li.get("nudge", bool, True),
        clean_reboot=li.choice("clean_reboot", "silent", ("silent", "info")),
    )
    li.done()
    return listener


def _deadman(root: Section) -> DeadmanSettings:
    dm = root.sub("deadman")
    deadman = DeadmanSettings(
        url=dm.get("url", str, ""),
        fail_url=dm.get("fail_url", str, ""),
        interval=dm.duration("interval", 60.0, 1.0, HOUR),
        fail_after=dm.duration("fail_after", 300.0, 10.0, DAY),
        timeout=dm.duration("timeout", 10.0, 1.0, MINUTE),
    )
    dm.done()
    for key in ("url", "fail_url"):
        value = getattr(deadman, key)
        if value:
            _check_call_url(f"deadman.{key}", value)
    if deadman.fail_url and not deadman.url:
        raise ConfigError("deadman.fail_url", "needs deadman.url")
    return deadman


def _check_call_url(key: str, value: str) -> None:
    """A URL lookout will call: http(s), a host, a valid port, no spaces or control characters.
    (The message shows no part of it: it may hold a token.)"""
    if not value.startswith(("http://", "https://")):
        raise ConfigError(key, "expected an http:// or https:// URL")
    if any(c.isspace() or ord(c) < 32 or ord(c) == 127 for c in value):
        raise ConfigError(key, "must not contain spaces or control characters (percent-encode them: %20)")
    try:
        parts = urlsplit(value)
        port = parts.port
    except ValueError:
        raise ConfigError(key, "has an invalid port") from None
    if not parts.hostname:
        raise ConfigError(key, "names no host")
    del port


def _exporter(root: Section) -> ExporterSettings:
    ex = root.sub("exporter")
    exporter = ExporterSettings(
        listen=ex.get("listen", str, "127.0.0.1:9876"),
        heartbeat_stale=ex.duration("heartbeat_stale", 150.0, 10.0, DAY),
        resource_metrics=ex.get("resource_metrics", bool, True),
        web_config=ex.get("web_config", str, ""),
        telemetry_path=ex.get("telemetry_path", str, "/metrics"),
        head_timeout=ex.duration("head_timeout", 5.0, 0.5, 60.0),
        per_client=ex.integer("per_client", 64, 1, 10_000),
        tls_cert=ex.get("tls_cert", str, ""),
        tls_key=ex.get("tls_key", str, ""),
        basic_auth_user=ex.get("basic_auth_user", str, ""),
        basic_auth_password_sha256=ex.get("basic_auth_password_sha256", str, ""),
    )
    ex.done()
    if bool(exporter.tls_cert) != bool(exporter.tls_key):
        raise ConfigError("exporter.tls_key", "tls_cert and tls_key go together")
    if not exporter.telemetry_path.startswith("/") or exporter.telemetry_path == "/":
        raise ConfigError("exporter.telemetry_path", "must be a path below / such as /metrics")
    return exporter


def _alertmanager(root: Section) -> AlertmanagerSettings:
    am = root.sub("alertmanager")
    alertmanager = AlertmanagerSettings(
        urls=am.strings("urls"),
        resend_interval=am.duration("resend_interval", 60.0, 1.0, HOUR),
        timeout=am.duration("timeout", 10.0, 1.0, 10 * MINUTE),
    )
    am.done()
    for i, url in enumerate(alertmanager.urls):
        if not url.startswith(("http://", "https://")):
            raise ConfigError(f"alertmanager.urls[{i}]", "must start with http:// or https://")
    return alertmanager


TOP_LEVEL = ("supervisor", "state", "notify", "alerts", "listener", "exporter", "alertmanager", "probes",
             "remediation", "deadman", "checks", "dependencies")


def parse_config(data: dict[str, Any], source: str = "<memory>", env: Any = None) -> Config:
    env = os.environ if env is None else env
    root = Section(data, "")
    root.only(*TOP_LEVEL)
    supervisor = _supervisor(root, env)
    state_path, history = _state(root)
    config = Config(
        supervisor=supervisor,
        state_path=state_path,
        history=history,
        notify=_notify(root, env),
        alerts=_alerts(root),
        listener=_listener(root),
        exporter=_exporter(root),
        alertmanager=_alertmanager(root),
        probes=parse_probes(root.get("probes", list, [])),
        remediation=parse_remediation(root.sub("remediation")),
        deadman=_deadman(root),
        source=source,
    )
    checks = parse_checks(root.get("checks", list, []))
    declared = parse_dependencies(root.get("dependencies", list, []), checks)
    read = dependent_startup(supervisor.config, declared) if supervisor.config else ()
    root.done()
    return replace(config, checks=checks, dependencies=declared + read)


DEFAULT_PATH = "/etc/lookout/lookout.toml"  # where the README's install puts it


NO_CONFIG = "<defaults>"  # Config.source when no file was found anywhere


def _whose(path: str) -> str:
    """' (it belongs to alice: run as alice)' for a file another user owns."""
    import pwd

    try:
        uid = os.stat(path).st_uid
        owner = pwd.getpwuid(uid).pw_name
    except (OSError, KeyError):
        return ""
    return "" if uid == os.geteuid() else f" (it belongs to {owner}: run as {owner}, or make it readable)"


def no_config_note(config: Config) -> str:
    """'' or the one line that says no config file was found (said once, by each command)."""
    if config.source != NO_CONFIG:
        return ""
    return (f"no config file found (-c, $LOOKOUT_CONFIG, {DEFAULT_PATH}); using defaults: state.path = "
            f"{config.state_path}, supervisor.serverurl = {config.supervisor.serverurl}")


def load_config(path: str | None, env: Any = None, default_path: str = DEFAULT_PATH) -> Config:
    """Load -c PATH, else $LOOKOUT_CONFIG, else /etc/lookout/lookout.toml if it exists (as
    supervisorctl finds /etc/supervisord.conf), else defaults (plus environment)."""
    env = os.environ if env is None else env
    given = "-c" if path else "$LOOKOUT_CONFIG" if env.get("LOOKOUT_CONFIG") else "the default config"
    path = path or env.get("LOOKOUT_CONFIG") or (default_path if os.path.isfile(default_path) else None)
    if path is None:
        return parse_config({}, NO_CONFIG, env)
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(given, f"{path}: no such file") from None
    except IsADirectoryError:
        raise ConfigError(given, f"{path}: is a directory, not a TOML file") from None
    except PermissionError as exc:
        raise ConfigError(given, f"{path}: {exc.strerror}{_whose(path)}") from None
    except OSError as exc:
        raise ConfigError(given, f"{path}: {exc.strerror}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError, RecursionError) as exc:
        raise ConfigError(path, f"not valid TOML: {str(exc)[:200]}") from None
    return parse_config(data, path, env)
