"""Which supervisord.conf the running supervisord read: its command line in /proc (Linux).

`lookout init` needs the supervisord.conf of the supervisord it installs into (where its
[include] looks, how it listens). supervisord started with `-c /srv/trading/supervisord.conf`
from another directory is not where supervisord's own search order looks, so init asks /proc:
every supervisord of this user, its `-c`/`--configuration` (relative to its own working
directory), else the file its search order finds from there. One found: that one. Several (two
supervisords, or none readable): init does not guess and says `--supervisord-conf PATH`.
`lookout status --check` asks the same of the supervisord it talks to, for its autorestart=false
programs, reading the file as that supervisord would (its environment), importing nothing.
"""

from __future__ import annotations

import contextlib
import os
import xmlrpc.client
from collections.abc import Iterable
from fnmatch import fnmatchcase

from ..rpc import SupervisorClient, SupervisorUnavailable

NO_VALUE = "nhv"  # supervisord's short options without a value (-n nodaemon, -h help, -v version)
PYTHON_VALUE = "WXQ"  # python's own options that take a value (-W ignore, -X dev)
SEARCH = ("../etc/supervisord.conf", "../supervisord.conf", "supervisord.conf", "etc/supervisord.conf",
          "/etc/supervisord.conf", "/etc/supervisor/supervisord.conf")


def _script(argv: list[str]) -> str | None:
    """What runs: argv[0], or for a Python the script or `-m module` after its own options."""
    if not argv:
        return None
    if not os.path.basename(argv[0]).startswith("python"):
        return argv[0]
    args = iter(argv[1:])
    for arg in args:
        if arg == "-m":
            return f"-m {next(args, '')}"
        if arg.startswith("-") and len(arg) > 1:
            if arg[1:] in PYTHON_VALUE:
                next(args, None)
            elif "c" in arg[1:2]:
                return None  # python -c CODE
            continue
        return arg
    return None


def is_supervisord(argv: list[str]) -> bool:
    """`supervisord ...`, `python [-W x] .../bin/supervisord ...`, `python -m supervisor.supervisord ...`;
    not `journalctl -u supervisord` nor `supervisorctl`."""
    script = _script(argv)
    return script is not None and (os.path.basename(script) == "supervisord" or script == "-m supervisor.supervisord")


def conf_of(argv: list[str], cwd: str, exists=os.path.isfile) -> str | None:  # noqa: ANN001 - a predicate
    """The configuration file a supervisord with this command line and working directory read."""
    named = _configuration_arg(argv)
    if named is not None:
        return os.path.normpath(os.path.join(cwd, named))
    script = _script(argv) or ""
    here = os.path.dirname(os.path.join(cwd, script)) if not script.startswith("-m ") else cwd
    for candidate in SEARCH:  # supervisord's own order: next to its script, then the working directory
        base = here if candidate.startswith("..") else cwd
        path = os.path.normpath(os.path.join(base, candidate))
        if exists(path):
            return path
    return None


def _configuration_arg(argv: list[str]) -> str | None:
    """-c FILE, -cFILE, -nc FILE, --configuration FILE, --configuration=FILE and getopt's unique
    abbreviations of it (--config, --conf=FILE), as supervisord reads its command line."""
    for i, arg in enumerate(argv):
        following = argv[i + 1] if i + 1 < len(argv) else None
        if arg.startswith("--"):
            name, eq, value = arg[2:].partition("=")
            if len(name) >= 2 and "configuration".startswith(name):  # ("--c" alone: also childlogdir)
                return value if eq else following
            continue
        if arg.startswith("-") and i > 0:
            for j, flag in enumerate(arg[1:], start=1):
                if flag == "c":
                    return arg[j + 1:] or following
                if flag not in NO_VALUE:
                    break  # an option with a value: the rest is its value
    return None


def includes(pattern: str, path: str) -> bool:
    """Whether supervisord's [include] glob takes this file: glob's meaning, `*` within one directory."""
    want, have = pattern.split("/"), path.split("/")
    return len(want) == len(have) and all(fnmatchcase(h, w) for w, h in zip(want, have))


def _shown(path: str) -> bool:
    """A path init can print (it came from another process's command line)."""
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return path.isprintable()


def _processes(proc: str) -> Iterable[tuple[str, list[str], str]]:
    """(pid, argv, cwd) of each process of this user."""
    me = os.geteuid()
    for pid in os.listdir(proc):
        if not pid.isdigit():
            continue
        try:
            if os.stat(os.path.join(proc, pid)).st_uid != me:
                continue
            argv, cwd = _argv_cwd(os.path.join(proc, pid))
        except OSError:
            continue
        yield pid, argv, cwd


def _argv_cwd(where: str) -> tuple[list[str], str]:
    with open(os.path.join(where, "cmdline"), "rb") as f:
        argv = [a.decode(errors="surrogateescape") for a in f.read().split(b"\0") if a]
    return argv, os.readlink(os.path.join(where, "cwd"))


def running_confs(proc: str = "/proc") -> list[str]:
    """The configuration files of the supervisords this user runs, each once, sorted (one whose path
    cannot be shown is left out: init then does not take it for the one)."""
    found = set()
    for _, argv, cwd in _processes(proc) if os.path.isdir(proc) else ():
        if is_supervisord(argv):
            conf = conf_of(argv, cwd)
            if conf is not None and _shown(conf):
                found.add(conf)
    return sorted(found)


def run_once_programs(pid: int, proc: str = "/proc") -> set[str]:
    """The namespecs with autorestart=false (program_configs): programs meant to run once, whose
    expected exit (exitcodes) is fine."""
    return {ns for ns, p in program_configs(pid, proc).items() if p.autorestart is False}


def program_configs(pid: int, proc: str = "/proc") -> dict[str, object]:
    """namespec -> its program config (autorestart, autostart, ...) in the supervisord.conf the
    supervisord of `pid` read, by supervisord's own reader with that supervisord's environment
    (%(ENV_x)s), importing none of its plugins. Empty when it cannot be read: `pid` is no
    supervisord here (a remote one, another container's), another user's, a file that does not parse."""
    where = os.path.join(proc, str(pid))
    try:
        argv, cwd = _argv_cwd(where)
        with open(os.path.join(where, "environ"), "rb") as f:
            pairs = [p.decode(errors="surrogateescape").partition("=") for p in f.read().split(b"\0") if p]
    except OSError:
        return {}
    conf = conf_of(argv, cwd) if is_supervisord(argv) else None
    if conf is None:
        return {}
    reader = _reader({k: v for k, _, v in pairs})
    reader.configfile = conf
    try:
        with open(os.devnull, "w") as quiet, contextlib.redirect_stderr(quiet), contextlib.redirect_stdout(quiet):
            reader.process_config(do_usage=False)
    except (Exception, SystemExit):  # its own reader: whatever it raises, only the hint is lost
        return {}
    return {f"{g.name}:{p.name}": p for g in reader.process_group_configs for p in g.process_configs}


def _reader(environ: dict[str, str]):  # noqa: ANN202 - a supervisor ServerOptions
    from supervisor.options import ServerOptions

    class Reader(ServerOptions):
        """supervisord's reader, expanding %(ENV_x)s as that supervisord does; imports nothing (an
        rpcinterface or result_handler importable there need not be here)."""

        def import_spec(self, spec: str) -> object:
            return lambda *args, **kwargs: None

    reader = Reader()
    reader.environ_expansions = {f"ENV_{k}": v for k, v in environ.items()}
    return reader


def run_once_of(client: SupervisorClient) -> set[str]:
    """run_once_programs() of the supervisord this client talks to (when it runs here, readable)."""
    pid = _pid(client)
    return run_once_programs(pid) if pid else set()


def autostarted_of(client: SupervisorClient) -> set[str]:
    """The namespecs supervisord starts by itself (autostart=true), of the supervisord this client talks to."""
    pid = _pid(client)
    return {ns for ns, p in program_configs(pid).items() if p.autostart} if pid else set()


def _pid(client: SupervisorClient) -> int:
    try:
        pid = client.call("supervisor.getPID")
    except (SupervisorUnavailable, xmlrpc.client.Fault):
        return 0
    return pid if isinstance(pid, int) and pid > 0 else 0
