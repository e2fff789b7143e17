"""Issue 9, acceptance 1, 2 and 6: `lookout status`, `history`, `alerts` against a real
supervisord; no `name:name` for an ungrouped program anywhere."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import jsonschema

from .conftest import fast_alerts
from .harness import wait_for

PROGRAMS = """\
[program:steady]
command=sleep 1000

[program:flaky]
command=sh -c 'if [ -f %(here)s/fixed ]; then exec sleep 1000; fi; sleep 1.2; echo "flaky: no route to exchange" >&2;
    exit 3'
startsecs=1
autorestart=true

[program:oneshot]
command=sh -c 'sleep 1.2; exit 0'
startsecs=1
autorestart=unexpected

[program:idle]
command=sleep 1000
autostart=false

[group:trading]
programs=feed

[program:feed]
command=sleep 1000
"""
UNGROUPED = ("steady", "flaky", "oneshot", "idle")


def lookout(sup, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lookout.cli", "-c", str(sup.config_path), *args],
                          capture_output=True, text=True, timeout=60)


def supervisorctl_states(sup) -> dict[str, str]:
    return dict(line.split()[:2] for line in sup.ctl("status").stdout.splitlines() if line.strip())


def test_status_history_alerts_and_check(supervisor_factory, webhook):
    sup = supervisor_factory(PROGRAMS, fast_alerts(webhook, crash_loop={"restarts": 3, "within": "1m"})).start()
    sup.wait_state("oneshot:oneshot", "EXITED", 15)
    webhook.wait("flaky is crash-looping", timeout=30)

    out = lookout(sup, "status")
    assert out.returncode == 0, out.stderr
    lines = {line.split()[0]: line for line in out.stdout.splitlines()}
    theirs = supervisorctl_states(sup)
    assert set(lines) == set(theirs)  # the same names as supervisorctl: 'steady', 'trading:feed'
    for name, state in theirs.items():
        if name != "flaky":  # it changes state every second
            assert lines[name].split()[1] == state, (name, lines[name], state)
    assert "trading:feed" in lines and "\x1b[" not in out.stdout  # no colour when not on a terminal
    flaky = lines["flaky"]
    # 3 failures make the crash loop; the 3rd respawn may still wait out a BACKOFF delay
    assert re.search(r"restarts (?:[2-9]|[1-9]\d+)/1h", flaky) and "last exit: exit status 3" in flaky, flaky
    assert "ALERT critical crash_loop" in flaky

    status = json.loads(lookout(sup, "status", "--json").stdout)
    schema = json.loads(lookout(sup, "status", "--json-schema").stdout)
    jsonschema.validate(status, schema)
    by_name = {p["name"]: p for p in status}
    assert by_name["flaky"]["alerts"][0]["kind"] == "crash_loop" and by_name["flaky"]["last_exit"]["status"] == 3
    assert by_name["steady"]["ok"] and not by_name["flaky"]["ok"] and by_name["idle"]["state"] == "STOPPED"

    assert lookout(sup, "status", "--check").returncode == 1
    steady = lookout(sup, "status", "--check", "stead*")
    assert steady.returncode == 0 and steady.stdout.split()[:2] == ["steady", "RUNNING"], steady.stdout
    typo = lookout(sup, "status", "--check", "staedy")  # a typo must not pass as "all fine"
    assert typo.returncode == 2 and "no process matches 'staedy'" in typo.stderr  # issue 22: exit 2, as every command
    alerts = lookout(sup, "alerts")
    assert alerts.returncode == 0 and "CRITICAL crash_loop" not in alerts.stdout
    assert re.search(r"CRITICAL\s+flaky\s+crash_loop", alerts.stdout), alerts.stdout

    history = lookout(sup, "history", "flaky", "--since", "1h")
    assert history.returncode == 0, history.stderr
    rows = history.stdout.splitlines()[1:]
    stamps = [r[:23] for r in rows]
    assert stamps == sorted(stamps)
    exits = [r for r in rows if " exit " in r[23:33]]
    assert len(exits) >= 3 and all("exit status 3 after running" in r for r in exits), rows
    assert any("EXITED (from RUNNING, unexpected" in r for r in rows)
    assert any("crash_loop (critical)" in r for r in rows) and any(" notify " in r for r in rows)

    (sup.root / "fixed").touch()
    wait_for(lambda: webhook.matching("RESOLVED", "flaky is running again"), 30, "recovered")
    checked = lookout(sup, "status", "--check", "--ignore-stopped")
    assert checked.returncode == 0, checked.stdout  # oneshot EXITED as expected, idle STOPPED on purpose
    checked = lookout(sup, "status", "--check")  # issue 23: what `grep -v RUNNING` means
    assert checked.returncode == 1 and "oneshot (EXITED (an expected exit))" in checked.stderr, checked.stderr
    assert "idle" not in checked.stderr  # never started (autostart=false): nothing says it should run
    assert sup.ctl("stop", "steady").returncode == 0
    assert lookout(sup, "status", "--check", "--ignore-stopped").returncode == 0  # stopped by an operator: fine
    checked = lookout(sup, "status", "--check")
    assert checked.returncode == 1 and "steady (STOPPED by an operator)" in checked.stderr, checked.stderr
    assert "stopped by an operator" in lookout(sup, "status", "steady").stdout
    assert webhook.wait("[RESOLVED]", timeout=5) and not webhook.matching("steady recovered")

    everything = out.stdout + history.stdout + alerts.stdout + "".join(m.text for m in webhook.messages)
    for name in UNGROUPED:
        assert f"{name}:{name}" not in everything, name

    assert lookout(sup, "silence", "trading", "--for", "10m").returncode == 0  # a group name covers its processes
    lines = {line.split()[0]: line for line in lookout(sup, "status").stdout.splitlines()}
    assert re.search(r"silenced for (10m|9m\d+s)", lines["trading:feed"]) and "silenced" not in lines["steady"], lines

    sup.stop()
    assert lookout(sup, "status", "--check").returncode == 2


def test_resolved_title_says_stopped_by_an_operator(supervisor_factory, webhook):
    sup = supervisor_factory(PROGRAMS, fast_alerts(webhook, crash_loop={"restarts": 3, "within": "1m"})).start()
    webhook.wait("flaky is crash-looping", timeout=30)
    # `stop` in the instant between an exit and the respawn finds it "not running": ask until it stops.
    wait_for(lambda: sup.ctl("stop", "flaky") and sup.state_of("flaky:flaky") == "STOPPED", 20, "stopped")
    resolved = webhook.wait("[RESOLVED] flaky was stopped by an operator", timeout=20)[0]
    assert "recovered" not in resolved.title


def test_a_bare_color_before_a_pattern_means_always():
    from lookout.cli import _bare_color

    assert _bare_color(["status", "--color", "feed"]) == ["status", "--color=always", "feed"]
    assert _bare_color(["status", "--color"]) == ["status", "--color=always"]
    assert _bare_color(["status", "--col", "feed"]) == ["status", "--color=always", "feed"]
    assert _bare_color(["status", "--color", "never", "feed"]) == ["status", "--color", "never", "feed"]


def test_a_group_named_as_supervisorctl_does_means_all_its_members():
    from lookout.cli import _parser, _whole_groups

    for argv, field in ((["status", "pool:"], "pattern"), (["hold", "pool:"], "name"),
                        (["silence", "pool:", "--for", "5m"], "matcher")):
        args = _parser().parse_args(argv)
        _whole_groups(args)
        assert getattr(args, field) == "pool:*"
    args = _parser().parse_args(["status", "pool:w1"])
    _whole_groups(args)
    assert args.pattern == "pool:w1"


def _include_text(root: str) -> str:
    """init's note on this host's [include] and the cp step it prints in place of Debian's, as one text."""
    from lookout.commands.init import _include_note

    note, copy = _include_note(root)
    return note + (copy or "")


def test_init_names_the_include_directory_of_this_hosts_supervisord(tmp_path, monkeypatch):

    monkeypatch.chdir(tmp_path)  # supervisord finds ./supervisord.conf first, after its own prefix
    monkeypatch.setenv("PATH", "/nonexistent")
    (tmp_path / "supervisord.d").mkdir()
    (tmp_path / "supervisord.conf").write_text("[supervisord]\n[include]\nfiles = %(here)s/supervisord.d/*.ini ; ok\n")
    note = _include_text("/opt/lookout")
    assert f"cp /opt/lookout/conf.d/lookout.conf {tmp_path}/supervisord.d/lookout.ini && " in note
    assert f"{tmp_path}/supervisord.d/lookout-exporter.ini" in note
    (tmp_path / "supervisord.conf").write_text("[supervisord]\n")
    assert "has no [include] files=" in _include_text("/opt/lookout")


def test_init_prints_one_cp_step_the_hosts_own(tmp_path, monkeypatch, capsys):
    """A new user on Fedora got the right cp in a note and Debian's in the steps below it."""
    from lookout.commands.init import init_command

    monkeypatch.setattr("lookout.commands.init.running_confs", lambda: [])  # (other tests' supervisords aside:
    monkeypatch.chdir(tmp_path)  # supervisord's own search order from here is what this test is about)
    monkeypatch.setenv("PATH", "/nonexistent")
    (tmp_path / "supervisord.d").mkdir()
    (tmp_path / "supervisord.conf").write_text("[supervisord]\n[include]\nfiles = supervisord.d/*.ini\n")
    assert init_command(str(tmp_path / "opt"), False) == 0
    steps = capsys.readouterr().out.split('next (README, "Install"):\n', 1)[1].splitlines()
    copies = [step.strip() for step in steps if step.strip().startswith("cp ")]
    assert len(copies) == 1 and f"{tmp_path}/supervisord.d/lookout.ini" in copies[0], steps
    assert "/etc/supervisor/conf.d" not in "\n".join(steps), steps


def test_init_reads_odd_supervisord_confs_as_supervisord_does(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PATH", "/nonexistent")
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "conf.d").mkdir()
    conf = tmp_path / "supervisord.conf"
    conf.write_bytes(b"; caf\xe9\n[supervisord]\n[include]\nfiles = %(ENV_HOME)s/conf.d/*.conf\n")  # latin-1
    # (issue 23: the README's own cp step, into this include directory)
    assert (f"cp /opt/lookout/conf.d/lookout.conf /opt/lookout/conf.d/lookout-exporter.conf {tmp_path}/conf.d/   #"
            in _include_text("/opt/lookout"))
    conf.write_text("[supervisord]\n[include]\nfiles = conf.d/lookout-*.conf\n")
    assert "under names that match it" in _include_text("/opt/lookout")


def test_init_writes_the_socket_this_hosts_supervisord_listens_on(tmp_path, monkeypatch, capsys):
    """A new user on Fedora (socket under /run/supervisor/, or anywhere supervisord.conf says) got
    'no socket at /var/run/supervisor.sock' from `lookout status`: init reads [unix_http_server]
    file= (or [inet_http_server] port=) of the supervisord.conf it finds or is given, and writes
    supervisor.serverurl into lookout.toml."""
    from lookout.commands.init import init_command
    from lookout.config import load_config

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PATH", "/nonexistent")
    (tmp_path / "etc").mkdir()
    conf = tmp_path / "etc" / "supervisord.conf"
    conf.write_text("[unix_http_server]\nfile = %(here)s/../run/supervisor.sock ; Fedora-ish\n[supervisord]\n")
    assert init_command(str(tmp_path / "a"), False, str(conf)) == 0
    out = capsys.readouterr().out
    sock = f"unix://{tmp_path}/run/supervisor.sock"
    assert f"supervisor.serverurl = {sock} in lookout.toml" in out and "(supervisor.serverurl is set" in out
    assert load_config(str(tmp_path / "a" / "lookout.toml"), {}).supervisor.serverurl == sock
    conf.write_text("[inet_http_server]\nport = *:9001\n[supervisord]\n")
    assert init_command(str(tmp_path / "b"), False, str(conf)) == 0
    assert load_config(str(tmp_path / "b" / "lookout.toml"), {}).supervisor.serverurl == "http://127.0.0.1:9001"
    conf.write_text("[unix_http_server]\nfile = /var/run/supervisor.sock\n[supervisord]\n")  # the default: as shipped
    assert init_command(str(tmp_path / "c"), False, str(conf)) == 0
    assert '# serverurl = "unix:///var/run/supervisor.sock"' in (tmp_path / "c" / "lookout.toml").read_text()
    capsys.readouterr()
    assert init_command(str(tmp_path / "d"), False, str(tmp_path / "nosuch.conf")) == 2
    assert "--supervisord-conf" in capsys.readouterr().err and not (tmp_path / "d").exists()
