"""Which supervisord.conf the running supervisord read: its command line in /proc (Linux).

`lookout init` needs the supervisord.conf of the supervisord it installs into (where its
[include] looks, how it listens). supervisord started with `-c /srv/trading/supervisord.conf`
from another directory is not where supervisord's own search order looks, so init asks /proc:
every supervisord of this user, its `-c`/`--configuration` (relative to its own working
directory), else the file its search order finds from there. One found: that one. Several (two
supervisords, or none readable): init does not guess and says `--supervisord-conf PATH`.
"""

from __future__ import annotations

import contextlib
import os
import xmlrpc.client
from collections.abc import Iterable

from ..rpc import SupervisorClient, SupervisorUnavailable

NO_VALUE = "nhv"  # supervisord's short options without a value (-n nodaemon, -h help, -v version)
SEARCH = ("../etc/supervisord.conf", "../supervisord.conf", "supervisord.conf", "etc/supervisord.conf",
          "/etc/supervisord.conf", "/etc/supervisor/supervisord.conf")


def is_supervisord(argv: list[str]) -> bool:
    """`supervisord ...`, `python .../bin/supervisord ...`, `python -m supervisor.supervisord ...`."""
    head = argv[:3]
    if any(os.path.basename(a) == "supervisord" for a in head):
        return True
    return any(a == "-m" and b == "supervisor.supervisord" for a, b in zip(head, head[1:]))


def conf_of(argv: list[str], cwd: str, exists=os.path.isfile) -> str | None:  # noqa: ANN001 - a predicate
    """The configuration file a supervisord with this command line and working directory read."""
    named = _configuration_arg(argv)
    if named is not None:
        return os.path.normpath(os.path.join(cwd, named))
    script = next((a for a in argv[:3] if os.path.basename(a) == "supervisord"), "")
    here = os.path.dirname(os.path.join(cwd, script)) if script else cwd
    for candidate in SEARCH:  # supervisord's own order: next to its script, then the working directory
        base = here if candidate.startswith("..") else cwd
        path = os.path.normpath(os.path.join(base, candidate))
        if exists(path):
            return path
    return None


def _configuration_arg(argv: list[str]) -> str | None:
    """-c FILE, -cFILE, -nc FILE, --configuration FILE, --configuration=FILE (supervisord's getopt)."""
    for i, arg in enumerate(argv):
        following = argv[i + 1] if i + 1 < len(argv) else None
        if arg == "--configuration":
            return following
        if arg.startswith("--configuration="):
            return arg.split("=", 1)[1]
        if arg.startswith("-") and not arg.startswith("--"):
            for j, flag in enumerate(arg[1:], start=1):
                if flag == "c":
                    return arg[j + 1:] or following
                if flag not in NO_VALUE:
                    break  # an option with a value: the rest is its value
    return None


def _processes(proc: str) -> Iterable[tuple[list[str], str]]:
    """(argv, cwd) of each process of this user."""
    me = os.geteuid()
    for pid in os.listdir(proc):
        if not pid.isdigit():
            continue
        try:
            if os.stat(os.path.join(proc, pid)).st_uid != me:
                continue
            with open(os.path.join(proc, pid, "cmdline"), "rb") as f:
                argv = [a.decode(errors="surrogateescape") for a in f.read().split(b"\0") if a]
            cwd = os.readlink(os.path.join(proc, pid, "cwd"))
        except OSError:
            continue
        yield argv, cwd


def running_confs(proc: str = "/proc") -> list[str]:
    """The configuration files of the supervisords this user runs, each once, sorted."""
    found = set()
    for argv, cwd in _processes(proc) if os.path.isdir(proc) else ():
        if is_supervisord(argv):
            conf = conf_of(argv, cwd)
            if conf is not None:
                found.add(conf)
    return sorted(found)


def run_once_programs(pid: int, proc: str = "/proc") -> set[str]:
    """The namespecs with autorestart=false in the supervisord.conf the supervisord of `pid` read, by
    supervisord's own reader: programs meant to run once, whose expected exit (exitcodes) is fine.
    Empty when it cannot be read (another user's supervisord, one on another host, a broken file)."""
    try:
        with open(os.path.join(proc, str(pid), "cmdline"), "rb") as f:
            argv = [a.decode(errors="surrogateescape") for a in f.read().split(b"\0") if a]
        conf = conf_of(argv, os.readlink(os.path.join(proc, str(pid), "cwd")))
    except OSError:
        return set()
    if conf is None:
        return set()
    from supervisor.options import ServerOptions

    options = ServerOptions()
    options.configfile = conf
    try:
        with open(os.devnull, "w") as quiet, contextlib.redirect_stderr(quiet), contextlib.redirect_stdout(quiet):
            options.process_config(do_usage=False)
    except (Exception, SystemExit):  # its own reader: whatever it raises, we only lose the hint
        return set()
    return {f"{g.name}:{p.name}" for g in options.process_group_configs for p in g.process_configs
            if p.autorestart is False}


def run_once_of(client: SupervisorClient) -> set[str]:
    """run_once_programs() of the supervisord this client talks to (when it runs here, readable)."""
    try:
        pid = client.call("supervisor.getPID")
    except (SupervisorUnavailable, xmlrpc.client.Fault):
        return set()
    return run_once_programs(pid) if isinstance(pid, int) and pid > 0 else set()
