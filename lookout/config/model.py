"""The settings, as frozen dataclasses: what every other module receives instead of raw TOML."""

from __future__ import annotations

import socket
from dataclasses import dataclass, field

from .dependencies import Dependency
from .probes import GroupRule, ProbeSpec, RemediationSettings
from .values import SEVERITIES as SEVERITIES

DEFAULT_STATE_PATH = "/var/lib/lookout/lookout.db"
DEFAULT_SERVERURL = "unix:///var/run/supervisor.sock"


CRASH_LOOP_ACTIONS = ("alert", "stop", "backoff")


@dataclass(frozen=True)
class CrashLoop:
    """Failures within a window = crash-looping; and the brake on supervisord's endless autorestart:
    alert (only), stop (systemd's StartLimitBurst) or backoff (Kubernetes' CrashLoopBackOff)."""

    restarts: int = 5
    within: float = 600.0
    action: str = "alert"
    backoff: float = 10.0  # backoff: first wait before lookout starts it again, doubling...
    backoff_max: float = 300.0  # ...up to this
    reset_after: float = 600.0  # RUNNING this long: the wait starts again from `backoff`


@dataclass(frozen=True)
class ProgramRule:
    """A [[alerts.programs]] entry: overrides for the processes its match names (lookout/patterns.py)."""

    match: str
    severity: str | None = None
    ignore: bool = False
    crash_loop: CrashLoop | None = None
    tags: tuple[str, ...] = ()
    # must_run: any state but RUNNING longer than `grace` is an alert whatever the exit code (an exit 0
    # under autorestart=unexpected included), unless an operator stopped it.
    must_run: bool = False
    grace: float = 10.0
    oneshot: bool = False  # runs once and exits as expected: `lookout status --check` counts that as fine


@dataclass(frozen=True)
class SupervisorSettings:
    serverurl: str = DEFAULT_SERVERURL
    username: str = ""
    password: str = ""
    timeout: float = 5.0
    config: str = ""  # supervisord.conf: read for supervisord-dependent-startup's keys (dependent_startup_wait_for)


@dataclass(frozen=True)
class HistorySettings:
    """Bounds of the store's history table (`lookout history`)."""

    max_age: float = 30 * 86400.0
    max_rows: int = 50_000
    per_process: int = 500


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
    dashboard_url: str = ""  # a link in every alert; {host} {group} {name} are filled in (URL-encoded)


@dataclass(frozen=True)
class AlertmanagerSettings:
    urls: tuple[str, ...] = ()  # http(s)://host:9093; the v2 API path is added
    resend_interval: float = 60.0  # re-post open alerts this often so they do not time out
    timeout: float = 10.0


@dataclass(frozen=True)
class AlertSettings:
    group_wait: float = 1.0  # the first page of a new episode waits this long for the rest of its burst
    group_interval: float = 10.0  # after a message, what follows within this joins the next one
    repeat_interval: float = 4 * 3600.0
    stable_after: float = 60.0
    crash_loop: CrashLoop = field(default_factory=CrashLoop)
    exit_grace: float = 3.0
    host: str = ""
    programs: tuple[ProgramRule, ...] = ()
    groups: tuple[GroupRule, ...] = ()


@dataclass(frozen=True)
class ListenerSettings:
    reconcile_interval: float = 60.0
    tick_timeout: float = 180.0  # no event for this long after a TICK was seen: exit, get restarted
    log_level: str = "info"
    nudge: bool = True  # wake supervisord when a watched process dies (listener/workers/nudge.py)
    clean_reboot: str = "silent"  # a reboot after a clean shutdown: "silent" or "info" (one info message)


@dataclass(frozen=True)
class DeadmanSettings:
    """[deadman]: a URL outside the host that the listener calls while it is healthy (healthchecks.io,
    Uptime Kuma push, Cronitor, your own): when supervisord, the listener or the host dies, the calls
    stop, and the outside service raises the alarm nobody on the host can."""

    url: str = ""
    fail_url: str = ""  # called instead while lookout is degraded; derived from url for known services
    interval: float = 60.0
    fail_after: float = 300.0  # notifications failing this long make lookout degraded
    timeout: float = 10.0


@dataclass(frozen=True)
class ExporterSettings:
    listen: str = "127.0.0.1:9876"
    heartbeat_stale: float = 150.0
    resource_metrics: bool = True
    web_config: str = ""  # an exporter-toolkit web config file (TLS, client CA, bcrypt basic auth, headers)
    telemetry_path: str = "/metrics"
    head_timeout: float = 5.0  # a connection's TLS handshake and request head must be complete by then
    per_client: int = 64  # connections one client address may hold; its oldest unfinished one goes first
    tls_cert: str = ""  # older keys, still honoured: the web config file is the way now
    tls_key: str = ""
    basic_auth_user: str = ""
    basic_auth_password_sha256: str = ""


@dataclass(frozen=True)
class Config:
    supervisor: SupervisorSettings = field(default_factory=SupervisorSettings)
    state_path: str = DEFAULT_STATE_PATH
    history: HistorySettings = field(default_factory=HistorySettings)
    notify: NotifySettings = field(default_factory=NotifySettings)
    alerts: AlertSettings = field(default_factory=AlertSettings)
    listener: ListenerSettings = field(default_factory=ListenerSettings)
    exporter: ExporterSettings = field(default_factory=ExporterSettings)
    alertmanager: AlertmanagerSettings = field(default_factory=AlertmanagerSettings)
    probes: tuple[ProbeSpec, ...] = ()
    remediation: RemediationSettings = field(default_factory=RemediationSettings)
    deadman: DeadmanSettings = field(default_factory=DeadmanSettings)
    checks: tuple[ProbeSpec, ...] = ()  # [[checks]]: needs outside supervisord, matched as "check:<name>"
    dependencies: tuple[Dependency, ...] = ()
    source: str = "<defaults>"

    @property
    def hostname(self) -> str:
        return self.alerts.host or socket.gethostname()
