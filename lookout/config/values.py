"""Reading values out of lookout.toml: durations, sizes, bounds, and the one-line ConfigError.

Every duration and count has a minimum and a maximum (documented in conf.d/lookout.toml): a
zero retry interval makes a hot loop, a zero tick timeout makes the listener exit on every
TICK, a 400-digit duration overflows later. All of that is refused here, at load time.
"""

from __future__ import annotations

import difflib
import math
import re
from typing import Any

SEVERITIES = ("info", "warning", "critical")


class UserError(ValueError):
    """Something the user can fix (exit status 2); str() is the one line shown to them."""


class ConfigError(UserError):
    """A bad configuration value: "config error: KEY: PROBLEM"."""

    def __init__(self, key: str, problem: str) -> None:
        super().__init__(f"config error: {key}: {problem}")
        self.key, self.problem = key, problem


class UsageError(UserError):
    """A bad command-line value (not the config's): "--since: PROBLEM"."""

    def __init__(self, key: str, problem: str) -> None:
        super().__init__(f"{key}: {problem}")
        self.key, self.problem = key, problem


def cli_duration(value: str, key: str) -> float:
    """A duration given on the command line: its error names the option, not the config."""
    try:
        return parse_duration(value, key)
    except ConfigError as exc:
        raise UsageError(key, exc.problem) from None


_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_SIZE_BYTES = {"": 1, "B": 1, "KB": 1000, "MB": 1000**2, "GB": 1000**3, "TB": 1000**4,
               "KIB": 1024, "MIB": 1024**2, "GIB": 1024**3, "TIB": 1024**4}


def shown(value: Any, limit: int = 40) -> str:
    """repr() of a user's value, cut short: a 400-digit number must not fill the screen."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}...({len(text)} chars)"


def parse_duration(value: Any, key: str) -> float:
    """'30s', '5m', '4h', '1d', '250ms', '1h30m' -> seconds. Bare numbers are refused: units matter."""
    if isinstance(value, str) and len(value) <= 64:
        total, pos, text = 0.0, 0, value.replace(" ", "")
        for m in re.finditer(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)", text):
            if m.start() != pos:
                break
            total += float(m.group(1)) * _UNIT_SECONDS[m.group(2)]
            pos = m.end()
        if text and pos == len(text) and math.isfinite(total):
            return total
    raise ConfigError(key, f"{shown(value)} is not a duration (write e.g. \"30s\", \"5m\", \"4h\", \"1h30m\")")


def parse_size(value: Any, key: str) -> int:
    """'2GB', '512MiB', '100KB' -> bytes (SI and binary units)."""
    if isinstance(value, str) and len(value) <= 32:
        m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]i?B|B|)\s*", value, re.I)
        if m and m.group(2).upper() in _SIZE_BYTES:
            size = float(m.group(1)) * _SIZE_BYTES[m.group(2).upper()]
            if math.isfinite(size):
                return int(size)
    raise ConfigError(key, f"{shown(value)} is not a size (write e.g. \"2GB\", \"512MiB\")")


def format_duration(seconds: float) -> str:
    """Short human form used in alerts and --check-config: 95 -> '1m35s'."""
    if not math.isfinite(seconds):
        return "forever"
    if 0 < seconds < 1:
        return f"{seconds * 1000:.0f}ms"
    if 0 < seconds < 10:
        return f"{seconds:.1f}".rstrip("0").rstrip(".") + "s"
    seconds = max(0, int(round(seconds)))
    if seconds < 60:
        return f"{seconds}s"
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if seconds >= size:
            parts.append(f"{seconds // size}{unit}")
            seconds %= size
    return "".join(parts[:2])


def format_size(size: float) -> str:
    for unit, scale in (("PB", 1000**5), ("TB", 1000**4), ("GB", 1000**3), ("MB", 1000**2), ("KB", 1000)):
        if size >= scale:
            return f"{size / scale:.1f} {unit}"
    return f"{size:.0f} B"


class Section:
    """Reads one TOML table, refusing unknown keys, values of the wrong type and values out of bounds."""

    def __init__(self, table: Any, prefix: str) -> None:
        if not isinstance(table, dict):
            raise ConfigError(prefix, "must be a table")
        self.table, self.prefix, self.used = table, prefix, set()

    def key(self, name: str) -> str:
        return f"{self.prefix}.{name}" if self.prefix else name

    def has(self, name: str) -> bool:
        return name in self.table

    def get(self, name: str, kind: type | tuple[type, ...], default: Any) -> Any:
        self.used.add(name)
        if name not in self.table:
            return default
        value = self.table[name]
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            if abs(value) > 1e300:
                raise ConfigError(self.key(name), f"{shown(value)} is out of bounds")
            value = float(value)
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            names = kind.__name__ if isinstance(kind, type) else "/".join(k.__name__ for k in kind)
            raise ConfigError(self.key(name), f"expected {names}, got {type(value).__name__}")
        return value

    def _text(self, name: str, example: str) -> str | None:
        """A duration or size is written with its unit: say so when a bare number is given."""
        raw = self.table.get(name)
        if isinstance(raw, (int, float)) and not isinstance(raw, bool):
            self.used.add(name)
            raise ConfigError(self.key(name), f"{shown(raw)} needs a unit: write it as a string, e.g. {example}")
        return self.get(name, str, None)

    def duration(self, name: str, default: float, lo: float, hi: float) -> float:
        raw = self._text(name, '"30s", "5m"')
        if raw is None:
            return default
        value = parse_duration(raw, self.key(name))
        if not lo <= value <= hi:
            raise ConfigError(self.key(name), f"{shown(raw)} is out of bounds: must be between "
                                              f"{format_duration(lo) if lo else '0s'} and {format_duration(hi)}")
        return value

    def integer(self, name: str, default: int, lo: int, hi: int) -> int:
        value = self.get(name, int, default)
        if not lo <= value <= hi:
            raise ConfigError(self.key(name), f"{shown(value)} is out of bounds: must be between {lo} and {hi}")
        return value

    def number(self, name: str, default: float, lo: float, hi: float) -> float:
        value = self.get(name, float, default)
        if not (math.isfinite(value) and lo <= value <= hi):
            raise ConfigError(self.key(name), f"{shown(value)} is out of bounds: must be between {lo:g} and {hi:g}")
        return value

    def size(self, name: str, default: int, lo: int, hi: int) -> int:
        raw = self._text(name, '"2GB", "512MiB"')
        if raw is None:
            return default
        value = parse_size(raw, self.key(name))
        if not lo <= value <= hi:
            raise ConfigError(self.key(name), f"{shown(raw)} is out of bounds: must be between "
                                              f"{format_size(lo)} and {format_size(hi)}")
        return value

    def choice(self, name: str, default: str, choices: tuple[str, ...]) -> str:
        value = self.get(name, str, default)
        if value not in choices:
            raise ConfigError(self.key(name), f"{shown(value)} is not one of {', '.join(choices)}")
        return value

    def strings(self, name: str) -> tuple[str, ...]:
        value = self.get(name, list, [])
        for i, item in enumerate(value):
            if not isinstance(item, str):
                raise ConfigError(f"{self.key(name)}[{i}]", "expected a string")
        return tuple(value)

    def sub(self, name: str) -> Section:
        self.used.add(name)
        return Section(self.table.get(name, {}), self.key(name))

    def only(self, *names: str) -> None:
        """Unknown keys first, before a required one is missed ("neds" for "needs", "[[check]]")."""
        for name in self.table:
            if name not in names:
                close = difflib.get_close_matches(str(name), sorted(names), n=1, cutoff=0.5)
                raise ConfigError(self.key(name), "unknown key" + (f" (did you mean {close[0]!r}?)" if close else ""))

    def done(self) -> None:
        for name in self.table:
            if name not in self.used:
                close = difflib.get_close_matches(str(name), sorted(self.used), n=1, cutoff=0.5)
                raise ConfigError(self.key(name), "unknown key" + (f" (did you mean {close[0]!r}?)" if close else ""))
