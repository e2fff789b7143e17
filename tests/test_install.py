"""Issue 14, item 4: the README's "Install" runs, as written, for a new user: a venv not on PATH,
a supervisord that is not Debian's (no /var/log/supervisor/, its socket not in /var/run/) and
includes a conf.d directory.

The commands are the README's own ```sh block under "## Install", run one line at a time with
bash, after this substitution table (README text -> this test):

    /opt/lookout                     DIR, a temporary directory (the venv: DIR/venv, as in the README)
    python3 -m venv                  the test's Python -m venv
    install supervisor-lookout       install the wheel built from the working tree (conftest.built_dist)
    /etc/supervisor/conf.d/          the directory this test's supervisord.conf [include]s
    supervisorctl                    the test's supervisorctl -c this test's supervisord.conf

Two lines are not run by bash: `$EDITOR DIR/lookout.toml` is done here, setting notify.urls (a
webhook), supervisor.serverurl (this supervisord's socket) and exporter.listen (a free port: on a
machine where lookout is already installed as the README says, its exporter holds the shipped
127.0.0.1:9876), and nothing else; and
`supervisorctl status ...` is retried until it shows both RUNNING (they are STARTING for a moment
after `update`, and supervisorctl exits 0 for that too). Then a program under that supervisord
crashes, and the webhook gets the alert.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from lookout.config.load import tomllib

from .harness import REPO, free_port, http_get, wait_for

SHIPPED_LISTEN = '\nlisten = "127.0.0.1:9876"\n'  # the example's exporter.listen


def install_block() -> list[str]:
    """The README's Install commands, comments stripped, one per line."""
    readme = (REPO / "README.md").read_text()
    section = readme.split("\n## Install\n", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```sh\n(.*?)```", section, re.S)
    assert block, "README: no ```sh block under ## Install"
    return [re.sub(r"\s+#(\s.*)?$", "", line).strip() for line in block.group(1).splitlines() if line.strip()]


def substitute(line: str, table: dict[str, str]) -> str:
    for old, new in table.items():
        line = re.sub(rf"(?<![\w/.-]){re.escape(old)}", lambda _m, new=new: new, line)
    return line


def edit(path: Path, webhook_url: str, serverurl: str, listen: str) -> None:
    """What a user does with $EDITOR here: notify.urls, supervisor.serverurl (what the README asks)
    and exporter.listen (a port of their own when another lookout's exporter holds 9876); nothing else."""
    before = path.read_text()
    text, n = re.subn(r"(?ms)^(\[notify\].*?^)urls = \[.*?^\]$", lambda m: f"{m.group(1)}urls = [\"{webhook_url}\"]",
                      before, count=1)
    assert n == 1, "lookout.toml: no notify.urls to edit"
    text, n = re.subn(r"(?m)^# serverurl = .*$", f'serverurl = "{serverurl}"', text, count=1)
    if n == 0:  # init found the running supervisord's supervisord.conf and filled it in (issue 23)
        n = len(re.findall(rf'(?m)^serverurl = "{re.escape(serverurl)}"', text))
    assert n == 1, "lookout.toml: no commented supervisor.serverurl to set"
    assert text.count(SHIPPED_LISTEN) == 1, "lookout.toml: no exporter.listen to edit"
    text = text.replace(SHIPPED_LISTEN, f'\nlisten = "{listen}"\n')
    path.write_text(text)
    old, new = tomllib.loads(before), tomllib.loads(text)
    assert new["notify"].pop("urls") == [webhook_url] and new["supervisor"].pop("serverurl") == serverurl
    assert new["exporter"].pop("listen") == listen
    old["notify"].pop("urls"), old["exporter"].pop("listen")
    old["supervisor"].pop("serverurl", None)
    assert new == old


@pytest.mark.long
def test_readme_install_runs_as_written(tmp_path, built_dist, supervisor_factory, webhook):
    wheel = next(built_dist.glob("*.whl"))
    listen_port = free_port()  # not 9876: another lookout's exporter may hold it
    root = tmp_path / "opt-lookout"  # DIR; the venv goes to DIR/venv, as in the README
    include = tmp_path / "supervisor-conf.d"
    include.mkdir()
    sleep = shutil.which("sleep")
    sup = supervisor_factory(f"[program:svc]\ncommand={sleep} 1000\n\n[include]\nfiles = {include}/*.conf\n",
                             {}, listener=False)
    # The user's shell and supervisord: no venv with lookout on PATH (the test's own venv has one).
    path = os.pathsep.join(p for p in os.environ.get("PATH", "").split(os.pathsep)
                           if p and not os.path.exists(os.path.join(p, "lookout-listener")))
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PATH")
           and not k.startswith(("SUPERVISOR_", "LOOKOUT_"))}
    env["PATH"] = path
    assert shutil.which("lookout-listener", path=path) is None
    sup.env = lambda: dict(env)  # supervisord finds no lookout-listener on its PATH either
    sup.state_path = root / "state" / "lookout.db"  # where init puts it: the store invariants are checked there
    sup.start(wait_listener=False)
    ctl = shlex.join([sys.executable, "-m", "supervisor.supervisorctl", "-c", str(sup.conf)])
    table = {
        "python3 -m venv": f"{shlex.join([sys.executable])} -m venv",
        "install supervisor-lookout": f"install --quiet {shlex.join([str(wheel)])}",
        "/opt/lookout": str(root),
        "/etc/supervisor/conf.d/": f"{include}/",
        "supervisorctl": ctl,
    }
    lines = install_block()
    for old in table:  # a README that no longer says it would leave the test running something else
        assert any(old in line for line in lines), f"README Install no longer has {old!r}: update the table"
    cwd = tmp_path / "home"
    cwd.mkdir()
    outputs: dict[str, str] = {}  # README line -> what it printed
    for line in lines:
        command = substitute(line, table)
        if line.startswith("$EDITOR "):
            edit(Path(command.split()[1]), webhook.url(), f"unix://{sup.sock}", f"127.0.0.1:{listen_port}")
            continue

        def bash(command: str = command) -> subprocess.CompletedProcess:
            return subprocess.run(["bash", "-c", command], cwd=cwd, env=env, capture_output=True, text=True,
                                  timeout=600)

        if line.startswith("supervisorctl status"):  # exits 0 for STARTING too: wait for the README's "RUNNING"
            try:
                done = wait_for(lambda bash=bash: (r := bash()).returncode == 0 and r.stdout.strip() and all(
                    li.split()[1:2] == ["RUNNING"] for li in r.stdout.splitlines()) and r, 30, repr(line))
            except AssertionError as exc:
                logs = "".join(f.read_text(errors="replace")[-1500:] for f in sorted((root / "log").glob("*.log")))
                raise AssertionError(f"{exc}\n{sup.ctl('status').stdout}\n{sup.log()[-1500:]}\n{logs}") from None
        else:
            done = bash()
            assert done.returncode == 0, f"{line}\n{command}\n{done.stdout[-3000:]}{done.stderr[-3000:]}"
        outputs[line] = done.stdout + done.stderr

    def output(word: str) -> str:
        return next(text for line, text in outputs.items() if word in line.split())

    # init: the files the README lists, the private ones private, and the README's next steps.
    config = root / "lookout.toml"
    assert (config.stat().st_mode & 0o777) == 0o600
    assert not (root / "conf.d" / "lookout.toml").exists()  # one copy of the config, not two
    for sub in ("log", "state"):
        assert (root / sub).stat().st_mode & 0o777 == 0o700
    bindir = root / "venv" / "bin"
    listener_conf = (root / "conf.d" / "lookout.conf").read_text()
    exporter_conf = (root / "conf.d" / "lookout-exporter.conf").read_text()
    assert f"\ncommand={bindir}/lookout-listener -c {config}\n" in listener_conf
    assert f"\ncommand={bindir}/lookout-exporter -c {config}\n" in exporter_conf
    assert f"\nstderr_logfile={root}/log/lookout.log\n" in listener_conf
    assert f"\nstdout_logfile={root}/log/lookout-exporter.log\n" in exporter_conf
    for text in (listener_conf, exporter_conf):
        assert "/var/log" not in "".join(li for li in text.splitlines(True) if not li.startswith(";"))
    assert tomllib.loads(config.read_text())["state"]["path"] == str(root / "state" / "lookout.db")
    hint = output("init").split('next (README, "Install"):\n', 1)[1]
    printed = [re.sub(r"\s+#(\s.*)?$", "", li).strip() for li in hint.splitlines() if li.strip()]
    after_init = lines[next(i for i, li in enumerate(lines) if li.startswith("$EDITOR")):]
    # The README's steps; the cp into this supervisord's include directory when init found it running
    # (issue 23: its command line in /proc; with other tests' supervisords running beside it, init
    # does not guess and prints the README's own step).
    as_readme = [substitute(li, {"/opt/lookout": str(root)}) for li in after_init]
    fitting = [substitute(li, {"/opt/lookout": str(root), "/etc/supervisor/conf.d/": f"{include}/",
                               "supervisorctl": f"supervisorctl -c {shlex.quote(str(sup.conf))}"})
               for li in after_init]
    assert printed in (as_readme, fitting), printed

    # check-config and test-alert, against this supervisord and the webhook.
    checked = output("check-config")
    assert f"supervisor.serverurl = unix://{sup.sock}  (RUNNING)" in checked, checked
    assert f"state.path = {root}/state/lookout.db" in checked, checked
    assert "ok      json://127.0.0.1" in output("test-alert")
    webhook.wait("[TEST] lookout on", timeout=5)
    reread = output("reread")
    assert "lookout: available" in reread and "lookout-exporter: available" in reread, reread

    # Both RUNNING (the status line above waited for it), with their logs in DIR/log/.
    for name in ("lookout:lookout", "lookout-exporter"):
        assert sup.state_of(name) == "RUNNING", sup.ctl("status").stdout
    wait_for(lambda: "ready" in (root / "log" / "lookout.log").read_text(errors="replace"), 20, "listener ready")
    up = re.compile(rb'^supervisor_process_up\{[^}]*name="svc"[^}]*\} 1(\.0)?$', re.M)
    metrics = f"http://127.0.0.1:{listen_port}/metrics"
    wait_for(lambda: up.search(http_get(metrics) or b""), 20, "the exporter to show svc up")

    # A crash under that supervisord reaches the webhook (the example's group_wait: 10 s).
    sup.wait_state("svc", "RUNNING", 10)
    os.kill(sup.info("svc")["pid"], 9)
    msg = webhook.wait("svc", "crashed and was restarted", timeout=40)[0]
    assert "killed by SIGKILL" in msg.body, msg.body


def supervisord_reads(snippets: Path, tmp_path: Path) -> dict[str, object]:
    """What supervisord makes of the snippets (its own config reader, no process): name -> config."""
    from supervisor.options import ServerOptions

    include = tmp_path / "include"  # copied there, as the README does
    include.mkdir()
    for snippet in snippets.glob("*.conf"):
        shutil.copy(snippet, include)
    conf = tmp_path / "supervisord.conf"
    conf.write_text(f"[supervisord]\nlogfile={tmp_path}/supervisord.log\n\n[include]\nfiles = {include}/*.conf\n")
    options = ServerOptions()
    options.configfile = str(conf)
    options.process_config(do_usage=False)
    return {g.name: g.process_configs[0] for g in options.process_group_configs}


def test_init_paths_that_need_quoting_and_no_scripts(tmp_path, monkeypatch, capsys):
    """Scripts not next to the Python (pip --user, say): `<python> -m lookout.listener`; paths that
    need quoting for supervisord's command line come out as they are."""
    from lookout.commands import init

    python = tmp_path / "a py's dir" / "python3"
    python.parent.mkdir()
    python.symlink_to(sys.executable)
    monkeypatch.setattr(sys, "executable", str(python))
    root = tmp_path / "it's my lookout"
    assert init.init_command(str(root), False) == 0
    read = supervisord_reads(root / "conf.d", tmp_path)
    config = str(root / "lookout.toml")
    assert shlex.split(read["lookout"].command) == [str(python), "-m", "lookout.listener", "-c", config]
    assert shlex.split(read["lookout-exporter"].command) == [str(python), "-m", "lookout.exporter", "-c", config]
    assert read["lookout"].stderr_logfile == str(root / "log" / "lookout.log")
    assert read["lookout-exporter"].stdout_logfile == str(root / "log" / "lookout-exporter.log")
    assert tomllib.loads((root / "lookout.toml").read_text())["state"]["path"] == str(root / "state" / "lookout.db")
    assert f"{shlex.join([str(python), '-m', 'lookout', '-c', config])} check-config" in capsys.readouterr().out


def test_init_leaves_existing_files_alone_unless_force(tmp_path, capsys):
    from lookout.commands import init

    root = tmp_path / "etc"
    assert init.init_command(str(root), False) == 0
    config = root / "lookout.toml"
    config.write_text("# mine\n")
    config.chmod(0o644)
    assert init.init_command(str(root), False) == 0
    assert config.read_text() == "# mine\n" and f"exists, left alone: {config}" in capsys.readouterr().out
    assert init.init_command(str(root), True) == 0
    assert "[notify]" in config.read_text() and config.stat().st_mode & 0o777 == 0o600


def test_init_refuses_a_dir_supervisord_would_misread(tmp_path, capsys):
    from lookout.commands import init

    assert init.init_command(str(tmp_path / "100%"), False) == 2
    assert "must not contain '%'" in capsys.readouterr().err and not (tmp_path / "100%").exists()


# ---- issue 23: install as written, wherever DIR is ----------------------------------------------


def test_the_running_supervisords_configuration_is_found_from_its_command_line(supervisor_factory, tmp_path):
    """supervisord started with -c from another directory: its command line in /proc names the file."""
    from lookout.commands.running_supervisord import _configuration_arg, conf_of, is_supervisord, running_confs

    sup = supervisor_factory("[program:svc]\ncommand=sleep 1000\n", {}, listener=False).start(wait_listener=False)
    assert str(sup.conf) in running_confs()  # (other tests' supervisords may run beside it)
    assert is_supervisord(["/usr/bin/python3", "/usr/bin/supervisord", "-n"])
    assert is_supervisord(["python3", "-W", "ignore", "/usr/bin/supervisord", "-n"])
    assert is_supervisord(["python3", "-m", "supervisor.supervisord", "-c", "x"])
    for other in (["python3", "-m", "supervisor.supervisorctl", "-c", "x"], ["journalctl", "-u", "supervisord"],
                  ["systemctl", "status", "supervisord"], ["python3", "-c", "import supervisord"]):
        assert not is_supervisord(other), other
    for argv, named in ((["supervisord", "-c", "a.conf"], "a.conf"), (["supervisord", "-ca.conf"], "a.conf"),
                        (["supervisord", "-nc", "a.conf"], "a.conf"), (["supervisord", "--configuration=a"], "a"),
                        (["supervisord", "--configuration", "a"], "a"), (["supervisord", "-n"], None),
                        (["supervisord", "--config", "a"], "a"), (["supervisord", "--conf=a"], "a"),
                        (["supervisord", "-e", "debug", "-c", "b"], "b")):
        assert _configuration_arg(argv) == named, argv
    assert conf_of(["supervisord", "-c", "sub/s.conf"], "/srv/trading") == "/srv/trading/sub/s.conf"
    found = conf_of(["/opt/sv/bin/supervisord"], "/home/me", exists=lambda p: p == "/opt/sv/etc/supervisord.conf")
    assert found == "/opt/sv/etc/supervisord.conf"  # supervisord's own search order, from its own place


def test_init_does_not_guess_between_two_running_supervisords(tmp_path, monkeypatch, capsys):
    from lookout.commands import init

    monkeypatch.setattr(init, "running_confs", lambda: ["/a/supervisord.conf", "/b/supervisord.conf"])
    monkeypatch.setattr(init, "supervisord_conf", lambda: None)
    assert init.init_command(str(tmp_path / "lk"), False) == 0
    out = capsys.readouterr().out
    assert "2 supervisords run (/a/supervisord.conf, /b/supervisord.conf): not guessing" in out
    assert "cp " in out and "/etc/supervisor/conf.d/" in out  # the README's own step


def test_of_two_running_supervisords_init_takes_the_one_that_includes_dir(tmp_path, monkeypatch, capsys):
    """Found by a new user: with a second supervisord running, init printed Debian's cp and wrote live
    snippets into the DIR/conf.d/ that theirs includes. The one whose [include] takes DIR/conf.d/ is
    the one; its steps say `supervisorctl -c` (supervisorctl would not find that file by itself)."""
    from lookout.commands import init

    root, theirs, other = tmp_path / "lk", tmp_path / "theirs.conf", tmp_path / "other.conf"
    theirs.write_text(f"[supervisord]\n[unix_http_server]\nfile={tmp_path}/t.sock\n"
                      f"[include]\nfiles = {root}/conf.d/*.conf\n")
    other.write_text("[supervisord]\n[include]\nfiles = /nonexistent/*.conf\n")
    monkeypatch.setattr(init, "running_confs", lambda: [str(other), str(theirs)])
    monkeypatch.setattr(init, "supervisord_conf", lambda: None)
    assert init.init_command(str(root), False) == 0
    out = capsys.readouterr().out
    assert f"supervisord runs with {theirs}" in out and (root / "snippets" / "lookout.conf").exists()
    assert not (root / "conf.d" / "lookout.conf").exists()
    assert f"supervisorctl -c {theirs} reread && supervisorctl -c {theirs} update" in out
    assert f'serverurl = "unix://{tmp_path}/t.sock"' in (root / "lookout.toml").read_text()


def test_init_never_writes_live_snippets_into_a_directory_supervisord_includes(tmp_path, capsys):
    """DIR/conf.d/*.conf already in supervisord.conf's [include]: the snippets wait in DIR/snippets/
    until lookout.toml is edited, and the printed cp step (not the README's, which would copy a file
    onto itself) puts them live; --force writes them live at once, with no cp step."""
    from lookout.commands import init

    root = tmp_path / "lookout"
    conf = tmp_path / "supervisord.conf"
    conf.write_text(f"[supervisord]\n\n[unix_http_server]\nfile={tmp_path}/s.sock\n\n"
                    f"[include]\nfiles = /nonexistent/*.ini {root}/conf.d/*.conf\n")
    assert init.init_command(str(root), False, str(conf)) == 0
    out = capsys.readouterr().out
    assert not (root / "conf.d" / "lookout.conf").exists() and (root / "snippets" / "lookout.conf").exists()
    steps = out.split('next (README, "Install"):\n', 1)[1].splitlines()
    cp = [s.strip() for s in steps if s.strip().startswith("cp ")]
    assert cp == [f"cp {root}/snippets/lookout.conf {root}/snippets/lookout-exporter.conf {root}/conf.d/"
                  f"   # live: {conf}'s [include] files= looks there"], steps
    assert f'serverurl = "unix://{tmp_path}/s.sock"' in (root / "lookout.toml").read_text()  # filled in
    subprocess.run(["bash", "-c", cp[0].split("   #")[0]], check=True)  # the step runs as printed
    assert (root / "conf.d" / "lookout-exporter.conf").exists()

    forced = tmp_path / "forced"
    conf.write_text(f"[supervisord]\n\n[include]\nfiles = {forced}/conf.d/*.conf\n")
    assert init.init_command(str(forced), True, str(conf)) == 0
    out = capsys.readouterr().out
    assert (forced / "conf.d" / "lookout.conf").exists() and not (forced / "snippets").exists()
    assert not [s for s in out.split('next (README, "Install"):\n', 1)[1].splitlines() if s.strip().startswith("cp ")]


@pytest.mark.long
def test_an_offline_host_installs_from_a_wheelhouse_with_no_index(tmp_path, built_dist):
    """README "An offline host": pip wheel into a wheelhouse (here: from a source archive of this tree,
    what it needs from the index), then a venv installs from that directory alone, every index unreachable."""
    readme = (REPO / "README.md").read_text()
    block = re.search(r"\*\*An offline host\*\*.*?```sh\n(.*?)```", readme, re.S)
    assert block, "README: no offline install block"
    lines = [re.sub(r"\s+#(\s.*)?$", "", li).strip() for li in block.group(1).splitlines() if li.strip()]
    sdist = next(built_dist.glob("*.tar.gz"))
    venv = tmp_path / "opt-lookout" / "venv"
    table = {"python3": shlex.join([sys.executable]), "/opt/lookout/venv": str(venv),
             "wheelhouse": str(tmp_path / "wheelhouse")}
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "VIRTUAL_ENV", "PYTHONPATH"))}
    for i, line in enumerate(lines):
        command = substitute(line, table)
        if i == 0:  # the wheelhouse: a source archive of this tree stands for the published package
            command = command.replace("supervisor-lookout", shlex.quote(str(sdist)))
            run_env = env
        else:  # the offline host: no index answers
            run_env = {**env, "PIP_INDEX_URL": "http://127.0.0.1:9/simple", "PIP_EXTRA_INDEX_URL": "",
                       "HTTP_PROXY": "http://127.0.0.1:9", "HTTPS_PROXY": "http://127.0.0.1:9"}
        done = subprocess.run(["bash", "-c", command], env=run_env, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, f"{line}\n{command}\n{done.stdout[-2000:]}{done.stderr[-2000:]}"
    assert any(p.name.startswith("supervisor_lookout-") for p in (tmp_path / "wheelhouse").iterdir())
    shown = subprocess.run([str(venv / "bin" / "lookout"), "--help"], capture_output=True, text=True, timeout=60)
    assert shown.returncode == 0 and "check-config" in shown.stdout, shown.stderr


def test_autorestart_false_is_read_as_the_supervisord_reads_it_and_only_of_a_supervisord(tmp_path):
    """Found by an attacker: %(ENV_x)s expanded from lookout's own environment, not supervisord's; an
    rpcinterface lookout cannot import lost every hint; any pid's working directory was read as if
    it were a supervisord's."""
    import os

    from lookout.commands.running_supervisord import includes, run_once_programs

    proc, home = tmp_path / "proc", tmp_path / "srv"
    home.mkdir()
    (home / "supervisord.conf").write_text(
        f"[supervisord]\nlogfile={tmp_path}/s.log\n"
        "[rpcinterface:x]\nsupervisor.rpcinterface_factory = nosuch.mod:make\n"
        "[program:report]\ncommand=%(ENV_APP_HOME)s/report\nautorestart=false\n"
        "[program:feed]\ncommand=/bin/feed\n")
    for pid, argv in (("10", ["supervisord", "-c", "supervisord.conf"]), ("11", ["sleep", "1000"])):
        (proc / pid).mkdir(parents=True)
        (proc / pid / "cmdline").write_bytes(b"\0".join(a.encode() for a in argv) + b"\0")
        (proc / pid / "environ").write_bytes(b"APP_HOME=/opt/app\0PATH=/bin\0")
        os.symlink(home, proc / pid / "cwd")
    assert "APP_HOME" not in os.environ
    assert run_once_programs(10, str(proc)) == {"report:report"}
    assert run_once_programs(11, str(proc)) == set()  # a sleep where a supervisord.conf lies: not a supervisord
    assert includes("/srv/conf.d/*.conf", "/srv/conf.d/lookout.conf")
    assert not includes("/srv/conf.d/*.conf", "/srv/conf.d/lookout/conf.d/lookout.conf")  # * stays in one directory


def test_init_again_without_force_does_not_claim_a_serverurl_it_did_not_write(tmp_path, monkeypatch, capsys):
    """Found by a new user (issue 24's review): the first init did not guess between supervisords; run
    again with --supervisord-conf, as it says, it left lookout.toml alone but printed that it had set
    supervisor.serverurl there. It says what to do instead."""
    from lookout.commands import init

    root, conf = tmp_path / "lk", tmp_path / "sup.conf"
    conf.write_text(f"[supervisord]\n[unix_http_server]\nfile={tmp_path}/s.sock\n")
    monkeypatch.setattr(init, "running_confs", lambda: [])
    monkeypatch.setattr(init, "supervisord_conf", lambda: None)
    assert init.init_command(str(root), False) == 0  # no supervisord.conf found: the shipped comment stays
    capsys.readouterr()
    assert init.init_command(str(root), False, str(conf)) == 0
    out = capsys.readouterr().out
    assert "supervisor.serverurl = unix://" not in out, out
    assert f'lookout.toml exists, left alone: set supervisor.serverurl = "unix://{tmp_path}/s.sock"' in out, out
    assert "run init again with --force" in out
