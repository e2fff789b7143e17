"""What the next listener must learn when the store itself could not be written: a small file of a
fixed size beside the store (state.path + ".sidecar"), written in place.

A disk that is full refuses SQLite's commits, yet the listener that holds its events must still
leave word for the next one: that it ended degraded (so the next says when the store can be
written again), the death message it sent straight from memory and which targets did not get it
(the next sends it late to those), and the orphans that death left (the next records them). The
file is allocated in full (zeros written, not a sparse hole) when the listener starts, and every
write after that overwrites those same blocks, so it needs no new disk space. Two slots, each with
a sequence number and a CRC, are written in turn: a write torn by a crash leaves the other slot.

It is a file of its own: SQLite's file is never opened outside SQLite (POSIX locks belong to the
process; see store/files.py). Best effort: a sidecar that cannot be made or written is logged,
never a reason to stop.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import stat
import struct
import zlib
from dataclasses import asdict, dataclass, field, replace

from ..rules.orphans import Orphan

log = logging.getLogger("lookout.store")

SUFFIX = ".sidecar"
SLOT = 32768  # bytes per slot; two slots
_HEADER = struct.Struct(">4sQII")  # magic, sequence, payload length, CRC-32 of the payload
_MAGIC = b"LKS1"
_TEXT_LIMIT = 8000  # characters of the death message kept; the orphans fill what is left


@dataclass
class DeathNote:
    """supervisord died while the store could not be written: the message sent from memory."""

    at: float
    supervisord_pid: int
    alertname: str
    title: str
    text: str
    undelivered: list[str] = field(default_factory=list)  # target keys that did not confirm it


@dataclass
class SidecarState:
    listener_pid: int = 0
    listener_started: float = 0.0
    degraded_since: float = 0.0  # 0: the store could be written at the last look
    reason: str = ""
    death: DeathNote | None = None
    orphans: list[Orphan] = field(default_factory=list)  # left by a death the store could not record

    @staticmethod
    def from_json(text: str) -> SidecarState:
        data = json.loads(text)
        death = data.get("death")
        return SidecarState(
            listener_pid=int(data.get("listener_pid") or 0),
            listener_started=float(data.get("listener_started") or 0.0),
            degraded_since=float(data.get("degraded_since") or 0.0),
            reason=str(data.get("reason") or ""),
            death=DeathNote(**death) if death else None,
            orphans=[Orphan(**o) for o in data.get("orphans") or []],
        )


class Sidecar:
    def __init__(self, store_path: str) -> None:
        self.path = store_path + SUFFIX
        self.fd: int | None = None
        self.seq = 0
        self.state = SidecarState()
        self._written = ""  # the payload of the last write: an unchanged state is not written again

    def open(self, listener_pid: int, listener_started: float) -> SidecarState:
        """Make (allocated in full) or open the file; returns what the previous listener left."""
        previous = SidecarState()
        try:
            os.makedirs(os.path.dirname(os.path.abspath(self.path)), mode=0o700, exist_ok=True)
            self.fd = _open_private(self.path)
            size = os.fstat(self.fd).st_size
            if size < 2 * SLOT:
                os.pwrite(self.fd, bytes(2 * SLOT - size), size)  # real blocks, not a hole
                os.fsync(self.fd)
            previous, self.seq = _newest(os.pread(self.fd, 2 * SLOT, 0))
        except (OSError, ValueError) as exc:
            self.close()
            log.warning("the sidecar file %s cannot be used (%s): if the store cannot be written, the next "
                        "listener will not learn of it", self.path, exc)
        self.state = replace(previous, listener_pid=listener_pid, listener_started=listener_started)
        self._written = _payload(previous) if self.seq else ""
        return previous

    def close(self) -> None:
        if self.fd is not None:
            with contextlib.suppress(OSError):
                os.close(self.fd)
            self.fd = None

    # ---- what changed -------------------------------------------------------------------

    def degraded(self, since: float, reason: str) -> None:
        self._write(replace(self.state, degraded_since=since, reason=reason))

    def writable(self) -> None:
        self._write(replace(self.state, degraded_since=0.0, reason=""))

    def died(self, note: DeathNote, orphans: list[Orphan]) -> None:
        self._write(replace(self.state, death=note, orphans=list(orphans)))

    def death_told(self) -> None:
        """The death note was sent (or late to those that missed it): nothing more to carry."""
        self._write(replace(self.state, death=None))

    def orphans_recorded(self) -> None:
        self._write(replace(self.state, orphans=[]))

    # ---- the file -----------------------------------------------------------------------

    def _write(self, state: SidecarState) -> None:
        self.state = state
        payload = _payload(state)
        if payload == self._written:
            return
        if self.fd is None:
            log.warning("the sidecar file %s is not open: not recorded for the next listener", self.path)
            return
        data = payload.encode()
        self.seq += 1
        slot = _HEADER.pack(_MAGIC, self.seq, len(data), zlib.crc32(data)) + data
        try:
            os.pwrite(self.fd, slot + bytes(SLOT - len(slot)), (self.seq % 2) * SLOT)
            os.fdatasync(self.fd)
            self._written = payload
        except OSError as exc:
            log.warning("writing the sidecar file %s failed (%s)", self.path, exc)


def peek(store_path: str) -> SidecarState:
    """What the sidecar says, for a reader (`lookout status`): never creates or writes it."""
    try:
        fd = os.open(store_path + SUFFIX, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return SidecarState()
    try:
        return _newest(os.pread(fd, 2 * SLOT, 0))[0] if stat.S_ISREG(os.fstat(fd).st_mode) else SidecarState()
    except OSError:
        return SidecarState()
    finally:
        os.close(fd)


def _open_private(path: str) -> int:
    """O_NOFOLLOW: a symlink planted at the path is refused, never followed; 0600 when created."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise ValueError("not a regular file")
    if stat.S_IMODE(st.st_mode) & 0o077:
        os.fchmod(fd, 0o600)
    return fd


def _payload(state: SidecarState) -> str:
    """The JSON of state, made to fit a slot: the text cut, then the newest orphans left out."""
    data = asdict(state)
    if data["death"]:
        data["death"]["text"] = data["death"]["text"][:_TEXT_LIMIT]
    room = SLOT - _HEADER.size
    text = json.dumps(data, separators=(",", ":"))
    while len(text.encode()) > room and data["orphans"]:
        data["orphans"] = data["orphans"][: len(data["orphans"]) // 2]  # the next listener re-derives the rest
        text = json.dumps(data, separators=(",", ":"))
    return text if len(text.encode()) <= room else json.dumps({**data, "death": None}, separators=(",", ":"))


def _newest(raw: bytes) -> tuple[SidecarState, int]:
    """The valid slot with the highest sequence number (zeros and torn slots are not valid)."""
    best: tuple[SidecarState, int] = (SidecarState(), 0)
    raw = raw.ljust(2 * SLOT, b"\0")
    for offset in (0, SLOT):
        magic, seq, length, crc = _HEADER.unpack_from(raw, offset)
        body = raw[offset + _HEADER.size: offset + _HEADER.size + length]
        if magic != _MAGIC or length > SLOT - _HEADER.size or zlib.crc32(body) != crc or seq <= best[1]:
            continue
        try:
            best = (SidecarState.from_json(body.decode()), seq)
        except (ValueError, TypeError, KeyError):
            continue
    return best
