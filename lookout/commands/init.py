"""`lookout init DIR`: write out what a user needs besides the code, after `pip install`.

    DIR/lookout.toml                   the configuration (mode 0600: it holds credentials), every
                                       key documented, state.path = DIR/state/lookout.db
    DIR/conf.d/lookout.conf            the [eventlistener:lookout] snippet for supervisord
    DIR/conf.d/lookout-exporter.conf   the [program:lookout-exporter] snippet
    DIR/log/, DIR/state/               created 0700: the two programs' logs, the store
    DIR/grafana/dashboards/*.json      the dashboards
    DIR/grafana/provisioning/...       Grafana provisioning files
    DIR/prometheus/*.yml               alert rules, example Prometheus and Alertmanager configs

The files come from the package (the repository's conf.d/, grafana/, prometheus/); the snippets
and lookout.toml get this installation's paths: the absolute path of the installed commands
(supervisord's PATH rarely holds a virtualenv), `-c DIR/lookout.toml`, logs in DIR/log/, the
store in DIR/state/. The programs run as supervisord's user: run init as that user (its files
are private).
lookout.toml is written once, to DIR/ (not also to DIR/conf.d/: two copies would drift, and
DIR/conf.d/ holds only what supervisord includes). Existing files are left alone unless --force.
It ends with the README's next steps ("Install"), with DIR and the commands filled in.
"""

from __future__ import annotations

import configparser
import json
import os
import pwd
import re
import shlex
import shutil
import sys
from pathlib import Path

from ..assets import asset_dir
from .running_supervisord import includes, running_confs

LAYOUT = {"dashboards": "grafana/dashboards", "provisioning": "grafana/provisioning", "prometheus": "prometheus"}
WANTED = (".conf", ".toml", ".json", ".yaml", ".yml")
SNIPPETS = ("lookout.conf", "lookout-exporter.conf")
# Exactly these lines of the shipped conf.d/ files are rewritten (each must occur once: a shipped
# file that no longer has one is a broken installation, and tests/test_install.py notices).
SHIPPED_CONFIG = "/etc/lookout/lookout.toml"
SHIPPED_STATE = 'path = "/var/lib/lookout/lookout.db"'
SHIPPED_SERVERURL = '# serverurl = "unix:///var/run/supervisor.sock"'
DEFAULT_SERVERURL = "unix:///var/run/supervisor.sock"


class BrokenAssets(Exception):
    pass


def _files(node, prefix: str = ""):  # noqa: ANN001, ANN202 - a Traversable
    for child in sorted(node.iterdir(), key=lambda c: c.name):
        if child.is_dir():
            if child.name != "__pycache__":
                yield from _files(child, f"{prefix}{child.name}/")
        elif child.name.endswith(WANTED):
            yield f"{prefix}{child.name}", child


def command(script: str, module: str) -> list[str]:
    """The installed console script by absolute path (next to this Python: a venv's bin/), else
    this Python running the module. Not resolved: a venv's python is a symlink to the base one."""
    python = os.path.abspath(sys.executable)
    path = os.path.join(os.path.dirname(python), script)
    return [path] if os.access(path, os.X_OK) else [python, "-m", module]


def _once(text: str, old: str, new: str, name: str) -> str:
    if text.count(old) != 1:
        raise BrokenAssets(f"{name}: expected the line {old!r} once")
    return text.replace(old, new)


def render(name: str, text: str, root: str, serverurl: tuple[str, str] | None = None) -> str:
    """A shipped conf.d/ file with this installation's paths; `serverurl` (url, where from): how
    this host's supervisord listens, when that is not the default (the `lookout` command needs it)."""
    config = os.path.join(root, "lookout.toml")
    if name == "lookout.toml":
        text = _once(text, SHIPPED_STATE,
                     f"path = {json.dumps(os.path.join(root, 'state', 'lookout.db'), ensure_ascii=False)}", name)
        if serverurl is not None:
            where = serverurl[1] if serverurl[1].isprintable() else "supervisord.conf"  # a comment: one line
            text = _once(text, SHIPPED_SERVERURL,
                         f"serverurl = {json.dumps(serverurl[0], ensure_ascii=False)}   # {where}", name)
        return examples_commented(text)
    script, module, log_key = {
        "lookout.conf": ("lookout-listener", "lookout.listener", "stderr_logfile"),
        "lookout-exporter.conf": ("lookout-exporter", "lookout.exporter", "stdout_logfile"),
    }[name]
    log = os.path.join(root, "log", name.replace(".conf", ".log"))
    text = _once(text, f"command={script} -c {SHIPPED_CONFIG}",
                 "command=" + shlex.join([*command(script, module), "-c", config]), name)
    return _once(text, f"{log_key}=/var/log/supervisor/{name.replace('.conf', '.log')}", f"{log_key}={log}", name)


def examples_commented(text: str) -> str:
    """The example [[alerts.programs]], [[alerts.groups]] and [[probes]] (a trading stack's) as
    comments: a new install alerts on everything with the defaults, and adds its own rules."""
    out, example = [], False
    for line in text.splitlines():
        if line.startswith("[["):
            example = True
        elif line.startswith("["):
            example = False
        out.append(f"# {line}" if example and line.strip() and not line.startswith("#") else line)
    return "\n".join(out) + "\n"


def next_steps(root: str, copy: str | None = None, serverurl_set: bool = False,
               ctl: str = "supervisorctl") -> list[str]:
    """The README's Install steps after `lookout init`, with this DIR and these commands; `copy`,
    when this host's supervisord.conf says where its snippets go, replaces Debian's cp step ("":
    none, they are live where they were written); `ctl`: supervisorctl with the -c of a supervisord.conf
    it would not find by itself."""
    lookout = shlex.join([*command("lookout", "lookout"), "-c", os.path.join(root, "lookout.toml")])
    snippets = shlex.join([os.path.join(root, "conf.d", s) for s in SNIPPETS])
    return [
        f"$EDITOR {shlex.quote(os.path.join(root, 'lookout.toml'))}"
        + ("   # notify.urls (supervisor.serverurl is set, from supervisord.conf)" if serverurl_set else
           "   # notify.urls; supervisor.serverurl if not unix:///var/run/supervisor.sock"),
        f"{lookout} check-config",
        f"{lookout} test-alert",
        *([copy] if copy else [] if copy == "" else [
            f"cp {snippets} /etc/supervisor/conf.d/   # or the directory [include] files= names in supervisord.conf"]),
        f"{ctl} reread && {ctl} update",
        f"{ctl} status lookout lookout-exporter   # both RUNNING",
    ]


DEBIAN_INCLUDE = "/etc/supervisor/conf.d/*.conf"


def supervisord_conf() -> str | None:
    """The supervisord.conf supervisord itself would find without -c (its own search order)."""
    found = shutil.which("supervisord")
    here = os.path.dirname(os.path.dirname(os.path.realpath(found))) if found else None
    candidates = [*([os.path.join(here, "etc", "supervisord.conf"), os.path.join(here, "supervisord.conf")]
                    if here else []), "supervisord.conf", "etc/supervisord.conf", "/etc/supervisord.conf",
                  "/etc/supervisor/supervisord.conf"]
    return next((os.path.abspath(c) for c in candidates if os.path.isfile(c)), None)


def _read_conf(conf: str) -> configparser.RawConfigParser:
    parser = configparser.RawConfigParser(inline_comment_prefixes=(";", "#"), strict=False)
    with open(conf, "rb") as f:  # OSError: the caller says it cannot be read
        parser.read_string(f.read().decode("utf-8", errors="replace"))
    return parser


def _expand(value: str, conf: str) -> str:
    """supervisord's %(here)s and %(ENV_x)s in a value of its supervisord.conf."""
    expand = {"here": os.path.dirname(conf), **{f"ENV_{k}": v for k, v in os.environ.items()}}
    return re.sub(r"%\(([^)]+)\)s", lambda m: expand.get(m.group(1), m.group(0)), value)


def serverurl_of(conf: str) -> tuple[str, str] | None:
    """How supervisord.conf says supervisord listens, and where that was read: unix:// + its
    [unix_http_server] file=, else http:// + its [inet_http_server] port=; None when it says
    neither or says the default, or cannot be read."""
    try:
        parser = _read_conf(conf)
    except (OSError, configparser.Error):
        return None
    path = _expand(parser.get("unix_http_server", "file", fallback="").strip(), conf)
    if path:
        url = "unix://" + os.path.normpath(os.path.join(os.path.dirname(conf), path))
        return None if url == DEFAULT_SERVERURL else (url, f"{conf}'s [unix_http_server] file=")
    port = parser.get("inet_http_server", "port", fallback="").strip()
    if port:
        host, _, number = port.rpartition(":")
        host = "127.0.0.1" if host in ("", "*", "0.0.0.0") else host
        return f"http://{host}:{number}", f"{conf}'s [inet_http_server] port="
    return None


def include_globs(conf: str) -> list[str]:
    """[include] files= of a supervisord.conf, each made absolute as supervisord does; [] if none."""
    globs = _expand(_read_conf(conf).get("include", "files", fallback=""), conf)
    return [os.path.normpath(os.path.join(os.path.dirname(conf), g)) for g in globs.split()]


def _include_note(root: str, conf: str | None = None) -> tuple[str, str | None]:
    """Where this host's supervisord.conf takes its snippets from, when that is not Debian's
    /etc/supervisor/conf.d/*.conf (Fedora and RHEL: supervisord.d/*.ini): a note, and the cp step
    that then replaces Debian's in the printed steps (one list, never two cp lines that disagree)."""
    conf = conf or supervisord_conf()
    if conf is None:
        return "", None
    try:
        globs = include_globs(conf)
    except (OSError, configparser.Error) as exc:
        return f"cannot read {conf} ({type(exc).__name__}): copy the snippets where its [include] files= looks\n", None
    usable = [g for g in globs if os.path.isdir(os.path.dirname(g))]
    if DEBIAN_INCLUDE in usable:
        return "", None
    if not usable:
        return (f"{conf} has no [include] files= with an existing directory: add one (e.g. "
                f"files = {root}/conf.d/*.conf) instead of the cp step\n"), None
    directory, pattern = os.path.split(usable[0])
    if not re.fullmatch(r"\*(\.[A-Za-z0-9_-]+)?", pattern):  # lookout-*.conf, one file: names must match it
        return f"{conf} includes {usable[0]}: copy the snippets to {directory}/ under names that match it\n", None
    ext = os.path.splitext(pattern)[1] or ".conf"
    if ext == ".conf":  # the README's own step, into this directory
        snippets = shlex.join([os.path.join(root, "conf.d", s) for s in SNIPPETS])
        return (f"{conf} includes {usable[0]}: the cp step below copies the snippets there\n",
                f"cp {snippets} {shlex.quote(directory)}/   # where {conf}'s [include] files= looks")
    copies = " && ".join(f"cp {shlex.quote(os.path.join(root, 'conf.d', s))} "
                         f"{shlex.quote(os.path.join(directory, s.replace('.conf', ext)))}" for s in SNIPPETS)
    return (f"{conf} includes {usable[0]}: the cp step below copies the snippets there\n",
            f"{copies}   # where {conf}'s [include] files= looks")


def _which_conf(named: str | None, live_of: dict[str, str], searched: str | None) -> tuple[str | None, str]:
    """The supervisord.conf to read, and a note when it was not plain: the one named, else the one the
    running supervisord read (live_of: each running one's [include] glob that takes DIR/conf.d/, or
    ""; of several, the one with such a glob), else the one supervisord's search order finds here."""
    if named:
        return os.path.abspath(named), ""
    running = sorted(live_of)
    including = [c for c in running if live_of[c]]
    if len(running) > 1 and len(including) == 1:
        running = including
    if len(running) == 1:
        return running[0], f"supervisord runs with {running[0]}: read for the steps below\n"
    if len(running) > 1:
        listed = ", ".join(running[:3]) + (" ..." if len(running) > 3 else "")
        return searched, (f"{len(running)} supervisords run ({listed}): not guessing which; give "
                          f"--supervisord-conf PATH for the steps of one\n")
    return searched, ""


def _live_include(conf: str, root: str) -> str:
    """The [include] glob of supervisord.conf that takes DIR/conf.d/'s snippets, if one does."""
    try:
        globs = include_globs(conf)
    except (OSError, configparser.Error):
        return ""
    return next((g for g in globs if any(includes(g, os.path.join(root, "conf.d", s)) for s in SNIPPETS)), "")


def _write(target: Path, data: bytes, force: bool, mode: int | None = None) -> bool:
    if target.exists() and not force:
        print(f"exists, left alone: {target}")
        return False
    target.parent.mkdir(parents=True, exist_ok=True)
    if mode is None:
        target.write_bytes(data)
    else:  # created private, never readable for a moment; an existing file (--force) is made private too
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), mode)
            f.write(data)
    print(f"wrote {target}")
    return True


def init_command(directory: str, force: bool, supervisord_conf_path: str | None = None) -> int:
    # Absolute as typed (symlinks kept): supervisord runs the snippets from its own directory.
    root = os.path.abspath(directory)
    # supervisord expands %(name)s in the snippets' values, twice over in 4.x: a % in a path cannot
    # be escaped so that every version reads it back. A line break would end the value.
    for what, path in (("DIR", root), ("this Python's path", os.path.abspath(sys.executable))):
        if any(c in path for c in "%\n\r"):
            print(f"lookout: init: {path!r}: {what} must not contain '%' or a line break (supervisord would "
                  "misread the snippets)", file=sys.stderr)
            return 2
    if supervisord_conf_path is not None and not os.path.isfile(supervisord_conf_path):
        print(f"lookout: init: --supervisord-conf {supervisord_conf_path}: no such file", file=sys.stderr)
        return 2
    live_of = {c: _live_include(c, root) for c in running_confs()}  # (read once: /proc, then each file)
    searched = supervisord_conf()
    conf, which = _which_conf(supervisord_conf_path, live_of, searched)
    serverurl = serverurl_of(conf) if conf else None
    snippets_dir = Path(root, "conf.d")
    live, live_conf = (live_of[conf] if conf in live_of else _live_include(conf, root), conf) if conf else ("", None)
    if not live:  # any supervisord here that takes DIR/conf.d/: its snippets must not go live early either
        live_conf = next((c for c, glob in live_of.items() if glob), None)
        live = live_of[live_conf] if live_conf else ""
    if live and not force:  # snippets there would go live at the next `update`, before lookout.toml is edited
        snippets_dir = Path(root, "snippets")
    conf_d = asset_dir("conf_d")
    try:
        ours = {name: render(name, conf_d.joinpath(name).read_text(encoding="utf-8"), root, serverurl)
                for name in ("lookout.toml", *SNIPPETS)}
    except (OSError, BrokenAssets) as exc:
        print(f"lookout: init: the shipped conf.d/ files are not as expected (a broken installation?): {exc}",
              file=sys.stderr)
        return 2
    written = skipped = 0

    def count(done: bool) -> None:
        nonlocal written, skipped
        written, skipped = written + done, skipped + (not done)

    toml_written = _write(Path(root, "lookout.toml"), ours["lookout.toml"].encode(), force, 0o600)
    count(toml_written)
    for name in SNIPPETS:
        count(_write(snippets_dir / name, ours[name].encode(), force))
    Path(root, "conf.d").mkdir(parents=True, exist_ok=True)  # (the printed cp step copies into it)
    # Logs in a directory made here, not supervisord's AUTO (childlogdir, /tmp by default, and
    # deleted when supervisord restarts: the listener's log holds every alert it raised) nor
    # /var/log/supervisor/ (Debian's only: a missing directory makes `supervisorctl reread`
    # refuse the whole file). 0700 like the store's: alerts carry log tails.
    for sub in ("log", "state"):
        Path(root, sub).mkdir(mode=0o700, parents=True, exist_ok=True)
    for kind, where in LAYOUT.items():
        for relative, source in _files(asset_dir(kind)):
            count(_write(Path(root, where, relative), source.read_bytes(), force))
    left = f", {skipped} left alone (--force overwrites)" if skipped else ""
    try:
        user = pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:  # a uid without a name (some containers)
        user = f"uid {os.geteuid()}"
    include, copy = _include_note(root, conf) if not live else ("", None)
    include = which + include
    if live and not force:
        include += (f"{live_conf} includes {live}: the snippets are in {snippets_dir}/ until lookout.toml is ready "
                    f"(the cp step below puts them live; --force writes them there at once)\n")
        copy = (f"cp {shlex.join(str(snippets_dir / s) for s in SNIPPETS)} {shlex.quote(os.path.join(root, 'conf.d'))}/"
                f"   # live: {live_conf}'s [include] files= looks there")
    elif live:
        include += f"{live_conf} includes {live}: the snippets written there are live (no cp step)\n"
        copy = ""
    if serverurl is not None and toml_written:
        include += f"supervisor.serverurl = {serverurl[0]} in lookout.toml (from {serverurl[1]})\n"
    elif serverurl is not None:  # (an existing lookout.toml is the user's: not rewritten without --force)
        include += (f"lookout.toml exists, left alone: set supervisor.serverurl = \"{serverurl[0]}\" in it yourself "
                    f"(from {serverurl[1]}), or run init again with --force\n")
    ctl = "supervisorctl" if conf is None or conf == searched else f"supervisorctl -c {shlex.quote(conf)}"
    steps = "\n".join(f"  {step}" for step in next_steps(root, copy, serverurl is not None and toml_written, ctl))
    print(f"\n{written} file(s) written to {root}/{left}\n"
          f"lookout.toml, log/ and state/ are private to {user}: supervisord runs the listener and the exporter "
          f"as its own user, which must be {user}\n{include}"
          f"next (README, \"Install\"):\n{steps}")
    return 0
