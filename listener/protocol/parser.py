"""Incremental reader of supervisord's event stream: bytes in, envelopes out.

supervisord writes 'header\\n' then a payload whose ``len:`` counts *characters* of the str it
then UTF-8 encodes (supervisor#1243). So we cannot read(len) bytes: we count UTF-8 code points.
The reader is fed arbitrary chunks (select + os.read) and never raises: a header line it cannot
frame (no usable ``len``) is reported as ``Garbage`` and skipped, so later events stay in sync.
"""

from __future__ import annotations

from dataclasses import dataclass

MAX_HEADER_BYTES = 64 * 1024
MAX_PAYLOAD_CHARS = 64 * 1024 * 1024


@dataclass(frozen=True)
class Envelope:
    """One framed event: header tokens and the decoded payload."""

    headers: dict[str, str]
    payload: str

    @property
    def eventname(self) -> str:
        return self.headers.get("eventname", "")


@dataclass(frozen=True)
class Garbage:
    """Bytes that could not be framed as an event (logged, never acknowledged)."""

    data: bytes
    reason: str


def parse_header(line: bytes) -> dict[str, str] | None:
    """'ver:3.0 ... len:76' -> {'ver': '3.0', ..., 'len': '76'}; None if len is unusable."""
    text = line.decode("utf-8", "replace")
    headers: dict[str, str] = {}
    for token in text.split(" "):  # supervisord's separator; a name may hold other spaces
        key, sep, value = token.partition(":")
        if sep:
            headers[key] = value
    raw = headers.get("len", "")
    if not raw.isascii() or not raw.isdigit() or int(raw) > MAX_PAYLOAD_CHARS:
        return None
    return headers


def _utf8_width(lead: int) -> int:
    if lead < 0x80:
        return 1
    if lead >= 0xF0:
        return 4
    if lead >= 0xE0:
        return 3
    if lead >= 0xC0:
        return 2
    return 1  # a stray continuation byte: count it as one (replacement) character


def payload_end(buf: bytes | bytearray, start: int, chars: int) -> int | None:
    """Byte offset just past ``chars`` UTF-8 characters from ``start``; None if not all here."""
    end = start + chars
    if end <= len(buf) and buf[start:end].isascii():
        return end  # the common case: ASCII payloads, no scan
    pos, size = start, len(buf)
    for _ in range(chars):
        if pos >= size:
            return None
        width = _utf8_width(buf[pos])
        nxt = pos + 1
        # Take continuation bytes only while they really are continuations.
        while nxt < pos + width and nxt < size and 0x80 <= buf[nxt] < 0xC0:
            nxt += 1
        if nxt < pos + width and nxt >= size:
            return None  # the rest of this character has not arrived yet
        pos = nxt
    return pos


class EventParser:
    """Feed bytes, get complete envelopes (and garbage reports) in arrival order."""

    def __init__(self) -> None:
        self._buf = bytearray()
        self._headers: dict[str, str] | None = None

    @property
    def pending_bytes(self) -> int:
        return len(self._buf)

    def feed(self, data: bytes) -> list[Envelope | Garbage]:
        self._buf.extend(data)
        out: list[Envelope | Garbage] = []
        while True:
            if self._headers is None:
                nl = self._buf.find(b"\n")
                if nl < 0:
                    if len(self._buf) > MAX_HEADER_BYTES:
                        out.append(Garbage(bytes(self._buf[:200]), "header line too long"))
                        self._buf.clear()
                    return out
                line = bytes(self._buf[:nl])
                del self._buf[: nl + 1]
                headers = parse_header(line)
                if headers is None:
                    if line.strip():
                        out.append(Garbage(line[:200], "header without a usable len"))
                    continue
                self._headers = headers
            end = payload_end(self._buf, 0, int(self._headers["len"]))
            if end is None:
                return out
            payload = self._buf[:end].decode("utf-8", "replace")
            del self._buf[:end]
            out.append(Envelope(self._headers, payload))
            self._headers = None
