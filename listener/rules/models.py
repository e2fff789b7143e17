"""What the rules reason about: per-process records, probe states, alerts, actions and notices.

Plain dataclasses: the store persists them, the notifier renders them; nothing here does I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ...snapshot import ProcessSnapshot as ProcessSnapshot  # (the rules read it; it is supervisord's word)

# Alert families: a process has at most one open alert per family. Within a family an open
# alert only ever escalates (its kind's rank, kinds.py); families are independent (a process can crash-loop
# and be unhealthy at once). A health family is per probe: "health:<probe name>".
PROCESS, REMEDIATION, QUORUM, ORPHAN = "process", "remediation", "quorum", "orphan"
# dependencies.py: a program waiting for its needs; a need down that has no alert of its own; a [[checks]] need
DEPENDENCY, NEED, CHECK = "dependency", "need", "check"
HEALTH = "health"  # prefix

# Alert kinds: their rank, severity, wording and Alertmanager name are one row each in kinds.py
CRASHED = "crashed"
CRASH_LOOP = "crash_loop"
EXITED = "exited"  # unexpected exit, not restarted (autorestart=false)
FATAL = "fatal"  # supervisord gave up starting it
BRAKED = "braked"  # the crash-loop brake stopped it
UNHEALTHY = "unhealthy"  # a health probe failed failure_threshold times (or for `for`)
REMEDIATION_FAILED = "remediation_failed"  # a restart or stop by lookout did not work
EXHAUSTED = "exhausted"  # lookout used up max_restarts within `within` and stopped acting
BELOW_QUORUM = "below_quorum"  # fewer than min_running processes of a group RUNNING
LEFT_STOPPED = "left_stopped"  # the listener died in the middle of lookout's stop: stopped, by whom unknown
RUNS_TWICE = "runs_twice"  # an orphan of a killed supervisord runs beside the new supervisord's copy
NOT_RUNNING = "not_running"  # a must_run program down past its grace, whatever its exit code
WAITING = "waiting"  # a start = true program still waiting for its needs after start_timeout
CHECK_DOWN = "check_down"  # a [[checks]] need failed failure_threshold times
NEED_DOWN = "need_down"  # a need (stopped, exited) that dependants fail with, and that has no alert of its own

# Notice kinds: what people hear about an alert
FIRING, REMINDER, RESOLVED, UPDATE = "firing", "reminder", "resolved", "update"
# Why an alert closed when its program (or group) left supervisord's configuration (reread + update)
REMOVED_FROM_CONFIG = "removed from supervisord's configuration"
STOPPED_BY_OPERATOR = "stopped"  # ... when an operator stopped it (or so it looked: `update` stops before it removes)

AlertKey = tuple[str, str]  # (family, namespec); for quorum, namespec is the group name


def display_name(namespec: str) -> str:
    """What supervisorctl shows: 'reconciler' for a program outside any [group:] (its group is
    its own name), 'group:name' otherwise; a quorum alert's group name as it is."""
    group, sep, name = namespec.partition(":")
    return name if sep and group == name else namespec


START_UP, RECOVERY = "start-up", "recovery"  # ProcessRecord.needs_wait: why lookout owes it a start


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
    event_pid: int | None = None  # the pid events last named (a reconcile may set `pid` ahead of them)
    # ---- remediation (what lookout itself did, and may still do) ----
    lookout_restarts: list[float] = field(default_factory=list)  # times, inside remediation.within
    remediation_exhausted: bool = False  # latched until an operator stops, starts or restarts it
    remediation_next_at: float | None = None  # backoff: no lookout restart before this
    remediation_wanted: str = ""  # a restart or stop waiting for its backoff: "probe:<name>"
    action: PendingAction | None = None  # lookout's action on it, while one of its steps is in flight
    own_event_due: list[DueEvent] = field(default_factory=list)  # lookout's calls did it: their events, in order
    operator_at: float = 0.0  # when an operator's stop or start (an event lookout did not cause) last came
    own_stop_mark: float = 0.0  # supervisord's `start` of the run lookout stopped: a later start by lookout
    # goes ahead only while nobody has started it since
    stopped_by: str = ""  # who stopped it last: "operator" (deliberate), "lookout", "" (not known / not stopped)
    braked: bool = False  # the crash-loop brake stopped it ("stop") or holds it ("backoff")
    brake_delay: float = 0.0  # "backoff": the wait before the next start by lookout (0: not engaged)
    brake_resume_at: float | None = None  # "backoff": when lookout starts it again
    actions_begun: int = 0  # lookout's actions on it so far: the next one's id (kept in the store)
    down_since: float | None = None  # must_run: down (an expected exit) since, until RUNNING again or an alert
    # [[dependencies]]: lookout starts it once its needs are ready: "start-up" (start = true, never started
    # by this supervisord) or "recovery" (it went down while a need was down); "" when it owes nothing
    needs_wait: str = ""
    waiting_since: float | None = None
    last_exit_expected: bool | None = None  # its EXITED event's word (exitcodes): a one-shot need's success

    @property
    def namespec(self) -> str:
        return f"{self.group}:{self.name}"


@dataclass
class ProbeState:
    """One probe on one process: the rules' count of its results since the process started."""

    namespec: str
    probe: str
    healthy: bool | None = None  # None: not judged since the process started
    consecutive_failures: int = 0
    consecutive_successes: int = 0
    first_failure_at: float | None = None  # start of the current run of failures (for `for`)
    last_ok: bool | None = None
    last_detail: str = ""
    last_duration: float = 0.0
    last_at: float = 0.0
    failures_total: int = 0
    last_judged: bool = True  # False: its last run could not read its evidence (last_detail says why)

    @property
    def key(self) -> tuple[str, str]:
        return self.namespec, self.probe


@dataclass
class Alert:
    """One open problem per process and family; replaced in place when it gets worse."""

    namespec: str
    kind: str
    severity: str
    opened_at: float
    updated_at: float
    failures: int = 0
    restarts_at_open: int = 0
    tags: tuple[str, ...] = ()
    detail: str = ""  # what is wrong in words: spawnerr, "HTTP 503 ... 3 times in a row"
    previous_kind: str = ""  # what it was before its last escalation (Alertmanager resolves that)
    previous_severity: str = ""
    last_notice_at: float | None = None
    resolved_at: float | None = None
    resolution: str = ""
    id: int | None = None
    family: str = PROCESS
    action_taken: str = ""  # "restarted by lookout, 2nd of 3 allowed in 1h"
    evidence: str = ""  # evidence command output, matched log lines
    acting_since: float | None = None  # lookout's action on it is in flight: its page waits for the result
    back_at: float | None = None  # resolved: when the run that proved stable began (the end of the downtime)
    at_least: bool = False  # found by a reconcile, not seen happen: it may have begun before opened_at
    cause: str = ""  # a need of it failing (dependencies): its likely cause; its pages fold into the cause's
    impact: str = ""  # on a cause: its dependants and their states, the incident's second line
    gather_until: float | None = None  # its first page waits until then (dependants joining, a cause showing)

    @property
    def is_open(self) -> bool:
        return self.resolved_at is None

    @property
    def key(self) -> AlertKey:
        return self.family, self.namespec

    @property
    def probe(self) -> str:
        return self.family.split(":", 1)[1] if self.family.startswith(HEALTH + ":") else ""


@dataclass(frozen=True)
class Notice:
    """A decision that people should hear about an alert (firing, update, reminder or resolved)."""

    key: AlertKey
    kind: str
    at: float

    @property
    def namespec(self) -> str:
        return self.key[1]


@dataclass(frozen=True)
class ProbeResult:
    """What a probe found, brought back from its worker thread to the loop."""

    namespec: str
    probe: str
    ok: bool
    detail: str  # "HTTP 200", "timed out after 2s", "RSS 2.3 GB > 2 GB"
    started_at: float
    duration: float
    evidence: str = ""  # exec output, matched log lines
    pid: int = 0  # the process it judged: a result about an earlier process of the program does not count
    judged: bool = True  # False: it could not read its evidence (a log file deleted): neither success nor failure


# Steps of lookout's own actions: the executor makes one supervisord call (or runs the evidence
# command) per step, and the rules decide the next step from its result, so who did what is
# decided by the call's own answer, never by a time window.
EVIDENCE, STOP, START = "evidence", "stop", "start"
# What a step found
DONE = "done"  # stop: this call stopped it; start: this call started it (and it is RUNNING)
NOT_RUNNING = "not_running"  # stop: supervisord answered NOT_RUNNING: someone else's stop (or a crash) came first
MOVED_ON = "moved_on"  # checked before the call: not the process lookout decided on (another run, another state)
ALREADY_STARTED = "already_started"  # start: someone else started it first
DIED = "died"  # start: this call started it, and it died within its startsecs (a crash loop goes on)
FAILED = "failed"


@dataclass(frozen=True)
class DueEvent:
    """An event lookout's own call caused and supervisord has not delivered yet: it is lookout's,
    not an operator's, when it comes. stale: one that may still be in transit from before
    supervisord's answer settled an interrupted action (nobody's)."""

    state: str  # STOPPED or STARTING
    pid: int = 0  # STOPPED: the process lookout's call stopped (0: whichever)
    since: float = 0.0  # when lookout decided the action (an operator's start after it is undone)
    stale: bool = False

    def same_pid(self, pid: int) -> bool:
        return pids_match(self.pid, pid)


@dataclass(frozen=True)
class SeenEvent:
    """An event that came while lookout's call was in flight: a STOPPED (of pid), or a STARTING."""

    state: str
    pid: int = 0

    def same_pid(self, pid: int) -> bool:
        return pids_match(self.pid, pid)


def pids_match(mine: int, pid: int) -> bool:
    """0 (a process in BACKOFF has none; a stop of whichever runs) matches any."""
    return not mine or not pid or mine == pid


@dataclass
class PendingAction:
    """lookout's action on one process, step by step. Kept in the store with its record, so a
    listener that died in the middle knows at its next start how far it got."""

    id: str
    kind: str  # restart, stop, start
    source: str  # "probe:<name>", "brake", "hold", "resume"
    reason: str  # for the log, the history and the alert
    pid: int  # the process it was decided for (0: whichever runs; the brake, starts)
    step: str  # the step in flight: evidence, stop, start
    since: float
    stopped: bool = False  # its own stop call stopped the process (the call's answer, not an event)
    seen: list[SeenEvent] = field(default_factory=list)  # events while the step was in flight: the answer tells whose
    cancelled: str = ""  # why it was called off (an operator acted, a hold); its step's result still comes
    interrupted: bool = False  # loaded from the store: its step's result went with the previous listener
    evidence: str = ""  # what the evidence command printed
    expect: str = "STOPPED"  # start: as lookout left it, STOPPED by its own stop or FATAL as the brake found it


@dataclass(frozen=True)
class Action:
    """One step of lookout's action, for the executor thread."""

    id: str
    namespec: str
    step: str  # evidence, stop, start
    kind: str  # the action it belongs to: restart, stop, start
    reason: str
    pid: int = 0  # stop: only this process (0: whichever runs)
    mark: float = 0.0  # start: only while supervisord's `start` is still this (nobody started it since)
    evidence: tuple[str, ...] = ()  # argv of the evidence command (placeholders filled by the executor)
    source: str = ""  # "probe:<name>", "brake", "hold", "resume"
    expect: str = "STOPPED"  # start: only while it is in this state (as lookout left it: STOPPED, or FATAL)


@dataclass(frozen=True)
class ActionResult:
    id: str
    namespec: str
    step: str
    outcome: str  # done, not_running, moved_on, already_started, died, failed
    detail: str = ""  # what failed or what was found instead: "SPAWN_ERROR", "it is STOPPED"
    evidence: str = ""
    pid: int = 0  # stop: the process it stopped (0 in BACKOFF); start: the new process
    mark: float = 0.0  # stop: supervisord's `start` of the run it stopped, or of the run it found not running
    state: str = ""  # stop not made, start that died: supervisord's state of the process as the step found it


@dataclass(frozen=True)
class Hold:
    """`lookout hold NAME`: the operator's "leave it as it is" (lookout starts, stops, restarts nothing)."""

    id: int
    namespec: str
    created_at: float
    reason: str = ""


SUPERVISORD, LOOKOUT_RESTART = "supervisord", "lookout"  # HistoryEntry.restart: whose restart it was


@dataclass(frozen=True)
class HistoryEntry:
    """One row of a process's history: what happened, said for people (detail), and the facts the
    operator's commands count kept apart from that wording (a restart and whose; an exit's status)."""

    at: float
    namespec: str
    kind: str  # state, exit, alert, resolved, action, notify, hold
    detail: str
    restart: str = ""  # a restart: SUPERVISORD (STARTING from EXITED or BACKOFF) or LOOKOUT_RESTART
    exit_status: int | None = None  # an exit whose status is known (-1: killed by a signal)
    exit_text: str = ""  # with it: "exit status 3", "killed by SIGKILL"


@dataclass
class Outcome:
    """What one input changed: the caller persists it, then acknowledges."""

    records: dict[str, ProcessRecord] = field(default_factory=dict)
    alerts: dict[AlertKey, Alert] = field(default_factory=dict)  # touched alerts, open or just closed
    notices: list[Notice] = field(default_factory=list)
    probe_states: dict[tuple[str, str], ProbeState] = field(default_factory=dict)
    remediations: list[tuple[str, str, str]] = field(default_factory=list)  # (namespec, action, result) to count
    history: list[HistoryEntry] = field(default_factory=list)
    actions: list[Action] = field(default_factory=list)  # for the executor, after the commit
    exit_lookups: list[tuple[str, int | None]] = field(default_factory=list)  # (namespec, pid of the run)
    start_lookups: list[str] = field(default_factory=list)  # exact spawn time, for uptime
    reconcile: str = ""  # why a reconcile against getAllProcessInfo is wanted, if it is
    flags_changed: bool = False
    cancelled: list[str] = field(default_factory=list)  # action ids: the executor skips their calls not yet made
    holds_seen: list[tuple[int, float]] = field(default_factory=list)  # (hold id, at): the listener applies it
    holds_released: list[tuple[str, str, float]] = field(default_factory=list)  # (namespec, why, at)

    def __bool__(self) -> bool:
        return bool(self.records or self.alerts or self.notices or self.flags_changed or self.probe_states
                    or self.remediations or self.actions or self.history or self.holds_seen
                    or self.holds_released)

    def merge(self, other: Outcome) -> Outcome:
        self.records.update(other.records)
        self.alerts.update(other.alerts)
        self.notices.extend(other.notices)
        self.probe_states.update(other.probe_states)
        self.remediations.extend(other.remediations)
        self.history.extend(other.history)
        self.actions.extend(other.actions)
        self.exit_lookups.extend(other.exit_lookups)
        self.start_lookups.extend(other.start_lookups)
        self.reconcile = self.reconcile or other.reconcile
        self.flags_changed = self.flags_changed or other.flags_changed
        self.cancelled.extend(other.cancelled)
        self.holds_seen.extend(other.holds_seen)
        self.holds_released.extend(other.holds_released)
        return self
