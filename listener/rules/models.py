"""What the rules reason about: per-process records, alerts, and notices to send.

Plain dataclasses: the store persists them, the notifier renders them; nothing here does I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, field

# Alert kinds, from least to most severe; an open alert only ever escalates.
CRASHED = "crashed"
CRASH_LOOP = "crash_loop"
EXITED = "exited"  # unexpected exit, not restarted (autorestart=false)
FATAL = "fatal"  # supervisord gave up starting it
KIND_RANK = {CRASHED: 1, CRASH_LOOP: 2, EXITED: 3, FATAL: 3}
DEFAULT_SEVERITY = {CRASHED: "warning", CRASH_LOOP: "critical", EXITED: "critical", FATAL: "critical"}

FIRING, REMINDER, RESOLVED = "firing", "reminder", "resolved"


@dataclass
class ProcessRecord:
    """Everything we know about one process, kept current by events and reconciles."""

    group: str
    name: str
    state: str = "UNKNOWN"
    state_since: float = 0.0
    pid: int | None = None
    restarts: int = 0  # STARTING from EXITED/BACKOFF: supervisord restarted it
    unexpected_exits: int = 0  # EXITED expected:0 plus BACKOFF
    fatals: int = 0
    last_start: float | None = None
    running_since: float | None = None
    last_exit_at: float | None = None
    last_exit_status: int | None = None  # -1 for a signal, as supervisord reports it
    last_exit_text: str = ""  # "exit status 3", "killed by SIGKILL"
    last_run_seconds: float | None = None  # how long the last run lasted before it died
    failures: list[float] = field(default_factory=list)  # failure times inside the window
    failing_since: float | None = None
    restarts_before_failing: int = 0  # 'restarts' when this failure episode began
    crash_looping: bool = False
    pending_exit_at: float | None = None  # unexpected EXITED, waiting to see a respawn
    spawnerr: str = ""
    present: bool = True
    event_at: float = 0.0  # when an event last changed it (stale-snapshot guard)

    @property
    def namespec(self) -> str:
        return f"{self.group}:{self.name}"


@dataclass
class Alert:
    """One open problem per process; replaced in place when it gets worse."""

    namespec: str
    kind: str
    severity: str
    opened_at: float
    updated_at: float
    failures: int = 0
    restarts_at_open: int = 0
    tags: tuple[str, ...] = ()
    detail: str = ""  # spawnerr and similar, for the message
    previous_kind: str = ""  # what it was before its last escalation (Alertmanager resolves that)
    previous_severity: str = ""
    last_notice_at: float | None = None
    resolved_at: float | None = None
    resolution: str = ""
    id: int | None = None

    @property
    def is_open(self) -> bool:
        return self.resolved_at is None


@dataclass(frozen=True)
class Notice:
    """A decision that people should hear about an alert (firing, reminder or resolved)."""

    namespec: str
    kind: str
    at: float


@dataclass
class Outcome:
    """What one input changed: the caller persists it, then acknowledges."""

    records: dict[str, ProcessRecord] = field(default_factory=dict)
    alerts: dict[str, Alert] = field(default_factory=dict)  # touched alerts, open or just closed
    notices: list[Notice] = field(default_factory=list)
    exit_lookups: list[str] = field(default_factory=list)
    start_lookups: list[str] = field(default_factory=list)  # exact spawn time, for uptime
    reconcile: str = ""  # why a reconcile against getAllProcessInfo is wanted, if it is
    flags_changed: bool = False

    def __bool__(self) -> bool:
        return bool(self.records or self.alerts or self.notices or self.flags_changed)
