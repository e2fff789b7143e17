"""supervisord-dependent-startup's own keys, read from supervisord.conf (supervisor.config), so its
users switch to lookout without writing the graph twice:

    [program:risk_manager]
    autostart = false
    dependent_startup = true
    dependent_startup_wait_for = database:running migrate:exited

Each becomes a [[dependencies]] entry with start = true. A program lookout.toml already declares
keeps lookout.toml's entry. The file and its [include]s are read as supervisord reads them
(configparser with its inline `;` and `#` comments, `files` globs relative to the including file
with %(here)s and %(ENV_x)s expanded); nothing here talks to supervisord.
"""

from __future__ import annotations

import configparser
import glob
import os
import stat

from .dependencies import Dependency, Need, check_cycles
from .values import ConfigError

STATES = {"running": "running", "exited": "exited"}


def _sections(path: str, seen: set[str]) -> list[tuple[str, dict[str, str]]]:
    real = os.path.realpath(path)
    if real in seen:
        return []
    seen.add(real)
    parser = configparser.RawConfigParser(interpolation=None, strict=False, inline_comment_prefixes=(";", "#"))
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):  # (a FIFO would hang the reader)
            raise ConfigError("supervisor.config", f"{path}: not a regular file")
        with open(path, encoding="utf-8", errors="replace") as f:
            parser.read_file(f)
    except OSError as exc:
        raise ConfigError("supervisor.config", f"{path}: {exc.strerror}") from None
    except configparser.Error as exc:
        raise ConfigError("supervisor.config", f"{path}: not a supervisord.conf ({str(exc).splitlines()[0][:120]})") \
            from None
    out = [(name, dict(parser.items(name))) for name in parser.sections()]
    if parser.has_option("include", "files"):
        base = os.path.dirname(os.path.abspath(path))
        expand = {"here": base, **{f"ENV_{k}": v for k, v in os.environ.items()}}  # as supervisord expands them
        for pattern in parser.get("include", "files").split():
            for key, value in expand.items():
                pattern = pattern.replace(f"%({key})s", value)
            for found in sorted(glob.glob(os.path.join(base, os.path.expanduser(pattern)))):
                out += _sections(found, seen)
    return out


def dependent_startup(path: str, declared: tuple[Dependency, ...]) -> tuple[Dependency, ...]:
    """The entries supervisord.conf declares with dependent_startup = true (not already in lookout.toml)."""
    taken = {d.program for d in declared}
    deps = []
    for section, options in _sections(path, set()):
        if not section.startswith("program:"):
            continue
        program = section.split(":", 1)[1].strip()
        if options.get("dependent_startup", "").strip().lower() not in ("true", "yes", "on", "1"):
            continue
        if program in taken:
            continue
        needs = []
        for word in options.get("dependent_startup_wait_for", "").split():
            name, _, state = word.rpartition(":")
            if not name or state.lower() not in STATES:
                raise ConfigError("supervisor.config", f"[{section}] dependent_startup_wait_for: {word!r} is not "
                                                       "name:running or name:exited")
            needs.append(Need(name, STATES[state.lower()]))
        if needs:
            deps.append(Dependency(program, tuple(needs), start=True, source=f"{os.path.basename(path)} [{section}]"))
        else:
            deps.append(Dependency(program, (), start=True, source=f"{os.path.basename(path)} [{section}]"))
    check_cycles([*declared, *deps])
    return tuple(deps)
