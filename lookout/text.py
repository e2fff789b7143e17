"""Untrusted text made safe where it enters: log tails, supervisord's answers, probe output.

Programs write anything to their logs: colour codes, cursor movement, NUL, invalid UTF-8,
bidirectional overrides, megabyte-long lines. Any of that must reach Slack, email, JSON and
Alertmanager as plain readable text, and must never break the XML parser that reads
supervisord's answers. Two entry points:

    clean(text_or_bytes)  -> str    for humans: escapes removed, controls made visible
    clean_xml(body)       -> bytes  for expat: an XML-RPC answer with the same treatment

and, for the people reading a log tail at 3 a.m., tail()/last_lines(): the newest lines with
repeats folded (a program that retries writes the same two lines fifty times).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass

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
# The same sequences as clean_xml leaves them, ESC shown as its picture U+241B.
_ANSI_PICTURED = re.compile(_ANSI.replace("\\x1b", "\u241b").replace("\\x07", "\u2407"), re.X)

# Controls other than \t and \n become their visible Unicode "control picture" (U+2400 + code),
# DEL becomes U+2421; C1 controls, bidirectional overrides, lone surrogates and the two
# non-characters become U+FFFD. NUL is dropped.
_VISIBLE = {c: chr(0x2400 + c) for c in range(1, 32) if c not in (9, 10)}
_VISIBLE[0x7F] = "\u2421"
_VISIBLE[0] = None
_VISIBLE.update({c: "\ufffd" for c in range(0x80, 0xA0)})
# Invisible characters that reorder or hide text: bidirectional overrides and marks, zero-width
# characters, invisible operators, the byte-order mark.
_INVISIBLE = (*range(0x200B, 0x2010), *range(0x202A, 0x202F), *range(0x2060, 0x2065), *range(0x2066, 0x206A),
              0x061C, 0xFEFF, 0xFFFE, 0xFFFF)
_VISIBLE.update({c: "\ufffd" for c in _INVISIBLE})
_SURROGATES = re.compile("[\ud800-\udfff]")
_NEEDS_WORK = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200b-\u200f\u202a-\u202e\u2060-\u2069"
                         "\u241b\ud800-\udfff\ufeff\ufffe\uffff]")


def clean(value: str | bytes, max_line: int = MAX_LINE_CHARS) -> str:
    """Text safe for chat, email, JSON and XML: invalid UTF-8 replaced, escape sequences
    removed, NUL dropped, other controls made visible, CRLF and lone CR turned into newlines,
    over-long lines cut."""
    text = value.decode("utf-8", "replace") if isinstance(value, (bytes, bytearray)) else value
    if _NEEDS_WORK.search(text):
        text = _ANSI_PICTURED.sub("", _ANSI_TEXT.sub("", text))
        text = text.replace("\r\n", "\n").replace("\r", "\n")
        text = _SURROGATES.sub("\ufffd", text).translate(_VISIBLE)
    if max_line and len(text) > max_line:
        text = "\n".join(_cut(line, max_line) for line in text.split("\n"))
    return text


def clean_name(name: str) -> str:
    """A process or group name safe for a terminal, a message, a metric label and a dict key.

    supervisord allows any character in a name but space, ':' and '/'; ESC, BEL, backspace or a
    right-to-left override in one must not reach a terminal or a message, and the name must come
    out the same whichever way it came in (an event, an XML-RPC answer already through clean_xml,
    supervisord's main log, an older store). Nothing is dropped, so two names stay two names:
    C0 controls (NUL, ESC, tab and newline too) become their visible picture, DEL U+2421, other
    control, format, surrogate and private-use characters "<U+XXXX>". Idempotent."""
    if name.isascii() and name.isprintable():
        return name  # the common case: nothing to do
    out = []
    for ch in name:
        code = ord(ch)
        if code < 32:
            out.append(chr(0x2400 + code))
        elif code == 0x7F:
            out.append("\u2421")
        elif unicodedata.category(ch) in ("Cc", "Cf", "Cs", "Co"):
            out.append(f"<U+{code:04X}>")
        else:
            out.append(ch)
    return "".join(out)


def _cut(line: str, limit: int) -> str:
    if len(line) <= limit:
        return line
    return f"{line[:limit]}… [{len(line) - limit} more characters]"


# Bytes that XML 1.0 forbids (expat rejects the whole answer for one of them).
_XML_FORBIDDEN = re.compile(rb"[\x00-\x08\x0b\x0c\x0e-\x1f]|\xef\xbf[\xbe\xbf]")


def _xml_visible(m: re.Match) -> bytes:
    b = m.group(0)
    if len(b) == 1:
        return chr(0x2400 + b[0]).encode()
    return "\ufffd".encode()


def clean_xml(body: bytes) -> bytes:
    """An XML-RPC answer with the characters XML forbids made visible (NUL and ESC too).

    supervisord puts names and log text into its answers unescaped: one colour code in a log
    tail (or, at loglevel=debug, in its main log) makes the answer ill-formed XML. The markup
    itself is plain ASCII, so cleaning at the byte level only ever touches text content. Nothing
    is dropped, so a name comes out of clean_name the same as from an event; clean() removes
    escape sequences that arrive pictured this way.
    """
    return _XML_FORBIDDEN.sub(_xml_visible, body)


FOLD_BLOCK = 10  # the longest block of lines folded as one (a short traceback, a retry's few lines)

# Times inside a line: repeats that differ only in them are still repeats.
_STAMP = re.compile(r"""
    \d{4}-\d\d-\d\d[T ]\d\d:\d\d:\d\d(?:[.,]\d+)?(?:Z|[+-]\d\d:?\d\d)?    # ISO 8601, Python's logging
  | \d{1,2}/[A-Z][a-z]{2}/\d{4}:\d\d:\d\d:\d\d(?:\ [+-]\d{4})?           # access logs
  | \b[A-Z][a-z]{2}\ [\ \d]\d\ \d\d:\d\d:\d\d\b                         # syslog
  | \b\d\d:\d\d:\d\d(?:[.,]\d+)?\b                                      # a bare time of day
""", re.X)


@dataclass(frozen=True)
class Tail:
    """What to show of a log: `lines` (repeats folded) stand for the last `covered` lines of the
    text, `left_out` of which were dropped as noise (lookout's own probe requests)."""

    lines: list[str]
    covered: int = 0
    left_out: int = 0


def tail(text: str, count: int, drop: Callable[[str], bool] | None = None) -> Tail:
    """At most `count` lines to show from the end of cleaned text: consecutive repeats of a block
    of 1..FOLD_BLOCK lines (times aside) shown once, the newest copy, followed by "... the 2 lines
    above, 10 times in a row"; lines for which `drop` is true left out. The newest line is always
    shown; older lines give way when `count` is reached."""
    if count <= 0 or not text:
        return Tail([])
    raw = text.rstrip("\n").split("\n")
    kept = [i for i, line in enumerate(raw) if drop is None or not drop(line)]
    lines = [raw[i] for i in kept]
    keys = [_STAMP.sub("@", line) for line in lines]
    segments: list[list[str]] = []  # newest first
    used = oldest = 0  # display lines so far; index in `lines` of the oldest one shown
    end = len(lines)  # lines[:end] are not shown yet
    max_block = min(FOLD_BLOCK, count - 1)
    while end > 0 and used < count:
        size, copies = _repeat_at(keys, end, max_block)
        if copies < 2:
            segments.append([lines[end - 1]])
            used, end = used + 1, end - 1
            oldest = end
            continue
        if used + size + 1 > count:
            break  # the whole block and its note do not fit: older lines give way
        first = end - size * copies
        segments.append([*lines[end - size:end], _fold_note(size, copies, lines[first], lines[end - size])])
        used, end = used + size + 1, first
        oldest = end
    shown = [line for segment in reversed(segments) for line in segment]
    if not kept:  # nothing but noise
        return Tail([], len(raw), len(raw))
    start = kept[oldest] if shown else len(raw)
    return Tail(shown, len(raw) - start, (len(raw) - start) - (len(lines) - oldest if shown else 0))


def _repeat_at(keys: list[str], end: int, max_block: int) -> tuple[int, int]:
    """(block size, copies) of the run of repeats that ends at keys[end - 1] and folds the most
    lines: at least two lines saved (one "... the line above, 2 times" saves nothing)."""
    best = (1, 1)
    for size in range(1, max_block + 1):
        block = keys[end - size:end]
        if end - 2 * size < 0:
            break
        copies = 1
        while end - (copies + 1) * size >= 0 and keys[end - (copies + 1) * size:end - copies * size] == block:
            copies += 1
        if copies >= 2 and size * (copies - 1) >= 2 and size * copies > best[0] * best[1]:
            best = (size, copies)
    return best


def _fold_note(size: int, copies: int, oldest: str, newest: str) -> str:
    what = "the line above" if size == 1 else f"the {size} lines above"
    first = _STAMP.search(oldest)
    since = f" since {first.group(0)}" if first and first.group(0) != (_STAMP.search(newest) or first).group(0) else ""
    return f"... {what}, {copies} times in a row{since}"


def last_lines(text: str, count: int) -> list[str]:
    """The last `count` lines (at most) of cleaned text to show, repeats folded."""
    return tail(text, count).lines
