"""Untrusted text made safe where it enters: log tails, supervisord's answers, probe output.

Programs write anything to their logs: colour codes, cursor movement, NUL, invalid UTF-8,
bidirectional overrides, megabyte-long lines. Any of that must reach Slack, email, JSON and
Alertmanager as plain readable text, and must never break the XML parser that reads
supervisord's answers. Two entry points:

    clean(text_or_bytes)  -> str    for humans: escapes removed, controls made visible
    clean_xml(body)       -> bytes  for expat: an XML-RPC answer with the same treatment
"""

from __future__ import annotations

import re

MAX_LINE_CHARS = 2000  # a longer line is cut, saying by how much

# ECMA-48 escape sequences: CSI (colours, cursor), OSC (titles, hyperlinks), DCS/SOS/PM/APC
# strings, and the short two-character forms. Also the 8-bit CSI.
_ANSI = r"""
    \x1b\[[0-?]*[ -/]*[@-~]
  | \x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?
  | \x1b[PX^_][^\x1b]*(?:\x1b\\)?
  | \x1b[ -/]*[0-~]
  | \x9b[0-?]*[ -/]*[@-~]
"""
_ANSI_TEXT = re.compile(_ANSI, re.X)
_ANSI_BYTES = re.compile(_ANSI.replace("\\x9b[0-?]*[ -/]*[@-~]", "\\xc2\\x9b[0-?]*[ -/]*[@-~]").encode(), re.X)

# Controls other than \t and \n become their visible Unicode "control picture" (U+2400 + code),
# DEL becomes U+2421; C1 controls, bidirectional overrides, lone surrogates and the two
# non-characters become U+FFFD. NUL is dropped.
_VISIBLE = {c: chr(0x2400 + c) for c in range(1, 32) if c not in (9, 10)}
_VISIBLE[0x7F] = "\u2421"
_VISIBLE[0] = None
_VISIBLE.update({c: "\ufffd" for c in range(0x80, 0xA0)})
_VISIBLE.update({c: "\ufffd" for c in (*range(0x202A, 0x202F), *range(0x2066, 0x206A), 0xFFFE, 0xFFFF)})
_SURROGATES = re.compile("[\ud800-\udfff]")
_NEEDS_WORK = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069\ud800-\udfff\ufffe\uffff]")


def clean(value: str | bytes, max_line: int = MAX_LINE_CHARS) -> str:
    """Text safe for chat, email, JSON and XML: invalid UTF-8 replaced, escape sequences
    removed, NUL dropped, other controls made visible, CRLF and lone CR turned into newlines,
    over-long lines cut."""
    text = value.decode("utf-8", "replace") if isinstance(value, (bytes, bytearray)) else value
    if _NEEDS_WORK.search(text):
        text = _ANSI_TEXT.sub("", text)
        text = text.replace("\r\n", "\n").replace("\r", "\n")
        text = _SURROGATES.sub("\ufffd", text).translate(_VISIBLE)
    if max_line and len(text) > max_line:
        text = "\n".join(_cut(line, max_line) for line in text.split("\n"))
    return text


def _cut(line: str, limit: int) -> str:
    if len(line) <= limit:
        return line
    return f"{line[:limit]}… [{len(line) - limit} more characters]"


# Bytes that XML 1.0 forbids (expat rejects the whole answer for one of them).
_XML_FORBIDDEN = re.compile(rb"[\x00-\x08\x0b\x0c\x0e-\x1f]|\xef\xbf[\xbe\xbf]")


def _xml_visible(m: re.Match) -> bytes:
    b = m.group(0)
    if b == b"\x00":
        return b""
    if len(b) == 1:
        return chr(0x2400 + b[0]).encode()
    return "\ufffd".encode()


def clean_xml(body: bytes) -> bytes:
    """An XML-RPC answer with the characters XML forbids removed or made visible.

    supervisord puts log text into its answers unescaped: one colour code in a log tail (or,
    at loglevel=debug, in its main log) makes the answer ill-formed XML. The markup itself is
    plain ASCII, so cleaning at the byte level only ever touches text content.
    """
    if b"\x1b" in body or b"\xc2\x9b" in body:
        body = _ANSI_BYTES.sub(b"", body)
    return _XML_FORBIDDEN.sub(_xml_visible, body)


def last_lines(text: str, count: int) -> list[str]:
    """The last `count` non-trailing lines of cleaned text."""
    if count <= 0 or not text:
        return []
    return text.rstrip("\n").split("\n")[-count:]
