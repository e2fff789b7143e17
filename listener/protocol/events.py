"""Typed events decoded from envelopes. Anything we cannot decode raises MalformedEvent,
which the listener logs and acknowledges (never FAIL: that makes supervisord resend it hot)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Union

from ...text import clean_name
from .parser import Envelope

PROCESS_STATES = (
    "STOPPED", "STARTING", "RUNNING", "BACKOFF", "STOPPING", "EXITED", "FATAL", "UNKNOWN",
)


class MalformedEvent(ValueError):
    pass


@dataclass(frozen=True)
class Delivery:
    """Where an event sits in supervisord's streams: used for dedup and loss detection."""

    server: str
    serial: int
    pool: str
    poolserial: int
    eventname: str


@dataclass(frozen=True)
class ProcessStateEvent:
    delivery: Delivery
    state: str
    group: str
    name: str
    from_state: str
    expected: bool | None = None  # EXITED only
    pid: int | None = None
    tries: int | None = None  # STARTING and BACKOFF only

    @property
    def namespec(self) -> str:
        return f"{self.group}:{self.name}"

    def describe(self) -> str:
        """'RUNNING (from STARTING, pid 4711)', 'EXITED (from RUNNING, unexpected, pid 4711)'."""
        extra = [f"from {self.from_state}"]
        if self.expected is not None:
            extra.append("expected" if self.expected else "unexpected")
        if self.pid:
            extra.append(f"pid {self.pid}")
        if self.tries:
            extra.append(f"tries {self.tries}")
        return f"{self.state} ({', '.join(extra)})"


@dataclass(frozen=True)
class TickEvent:
    delivery: Delivery
    when: int


@dataclass(frozen=True)
class SupervisorStateEvent:
    delivery: Delivery
    state: str  # RUNNING or STOPPING


@dataclass(frozen=True)
class ProcessGroupEvent:
    """PROCESS_GROUP_ADDED / PROCESS_GROUP_REMOVED: `supervisorctl update` (or a reload) changed the
    groups. A removed group's processes were stopped first (their STOPPED events came before)."""

    delivery: Delivery
    change: str  # ADDED or REMOVED
    group: str


@dataclass(frozen=True)
class OtherEvent:
    """Subscribed but not acted upon (PROCESS_LOG_*, ...)."""

    delivery: Delivery


Event = Union[ProcessStateEvent, TickEvent, SupervisorStateEvent, ProcessGroupEvent, OtherEvent]


def _int(value: str | None, what: str) -> int:
    """A non-negative integer that fits SQLite's INTEGER (a hostile 400-digit one does not)."""
    if value is None or len(value) > 19 or not value.isascii() or not value.isdigit():
        raise MalformedEvent(f"{what} is not an integer: {str(value)[:40]!r}")
    number = int(value)
    if number >= 2**63:
        raise MalformedEvent(f"{what} is out of range: {value!r}")
    return number


def _tokens(line: str) -> dict[str, str]:
    """supervisord joins 'key:value' tokens with single ASCII spaces. Names may hold tabs,
    non-breaking and other Unicode spaces (supervisord refuses only ' ', ':' and '/'), so
    split on ' ' alone: str.split() would cut such a name in two and reject the event."""
    fields: dict[str, str] = {}
    for token in line.split(" "):
        if not token:
            continue
        key, sep, value = token.partition(":")
        if not sep:
            raise MalformedEvent(f"token without ':' in payload: {token[:40]!r}")
        fields[key] = value
    return fields


def decode_delivery(envelope: Envelope) -> Delivery:
    """Where the event sits in supervisord's streams; usable even when its payload is not."""
    h = envelope.headers
    name = h.get("eventname", "")
    if not name:
        raise MalformedEvent("header has no eventname")
    return Delivery(
        server=h.get("server", ""),
        serial=_int(h.get("serial"), "serial"),
        pool=h.get("pool", ""),
        poolserial=_int(h.get("poolserial"), "poolserial"),
        eventname=name,
    )


def decode(envelope: Envelope, delivery: Delivery | None = None) -> Event:
    delivery = delivery or decode_delivery(envelope)
    name = delivery.eventname
    if name.startswith("PROCESS_STATE_"):
        state = name[len("PROCESS_STATE_"):]
        if state not in PROCESS_STATES:
            raise MalformedEvent(f"unknown process state {state!r}")
        fields = _tokens(envelope.payload.split("\n", 1)[0])
        for required in ("processname", "groupname", "from_state"):
            if not fields.get(required):
                raise MalformedEvent(f"{name} payload lacks {required}")
        expected = None
        if state == "EXITED":
            if fields.get("expected") not in ("0", "1"):
                raise MalformedEvent(f"EXITED payload has expected={fields.get('expected')!r}")
            expected = fields["expected"] == "1"
        return ProcessStateEvent(
            delivery=delivery,
            state=state,
            group=clean_name(fields["groupname"]),
            name=clean_name(fields["processname"]),
            from_state=fields["from_state"],
            expected=expected,
            pid=_int(fields["pid"], "pid") if "pid" in fields else None,
            tries=_int(fields["tries"], "tries") if "tries" in fields else None,
        )
    if name.startswith("TICK_"):
        return TickEvent(delivery, _int(_tokens(envelope.payload).get("when"), "when"))
    if name.startswith("SUPERVISOR_STATE_CHANGE_"):
        return SupervisorStateEvent(delivery, name[len("SUPERVISOR_STATE_CHANGE_"):])
    if name in ("PROCESS_GROUP_ADDED", "PROCESS_GROUP_REMOVED"):  # "groupname:G\n" (with its newline)
        group = _tokens(envelope.payload.split("\n", 1)[0]).get("groupname")
        if not group:
            raise MalformedEvent(f"{name} payload lacks groupname")
        return ProcessGroupEvent(delivery, name[len("PROCESS_GROUP_"):], clean_name(group))
    return OtherEvent(delivery)
