"""Acceptance 10: a bad config gets one clear line naming the key, exit status 2, nothing sent;
a URL's token never appears in logs or --check-config output."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from lookout.config import ConfigError, parse_duration

from .harness import REPO, lookout_toml, stays

SECRET = "xoxbTOPSECRETabc123"
SLACK_A, SLACK_B, SLACK_C = "T1JJ3T3L2", "A1BRTD4JD", "TOPSECRETabc123xyzQWERTY"


def run_cli(tmp_path, toml: str, *args: str, stdin: str = "") -> subprocess.CompletedProcess:
    path = tmp_path / "lookout.toml"
    path.write_text(toml)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SUPERVISOR_", "LOOKOUT_"))}
    return subprocess.run(
        [sys.executable, "-m", "lookout.listener", "-c", str(path), *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )


BASE = {"state": {}, "supervisor": {"serverurl": "unix:///nonexistent/lookout-test.sock"}}


@pytest.mark.parametrize(
    ("sections", "key", "problem"),
    [
        ({"alerts": {"group_wiat": "10s"}}, "alerts.group_wiat", "unknown key (did you mean 'group_wait'?)"),
        ({"supervisor": {"url": "unix:///x.sock"}}, "supervisor.url", "did you mean 'serverurl'?"),
        ({"probes": [{"match": "w", "memory": {"max_rss": 2000000}}]}, "probes[0].memory.max_rss",
         "needs a unit: write it as a string, e.g. \"2GB\""),
        ({"alerts": {"stable_after": "ten seconds"}}, "alerts.stable_after", "not a duration"),
        ({"alerts": {"stable_after": 60}}, "alerts.stable_after", "60 needs a unit"),
        (
            {"alerts": {"crash_loop": {"restarts": 0, "within": "1m"}}},
            "alerts.crash_loop.restarts",
            "between 1 and 10000",
        ),
        ({"notify": {"urls": ["nosuchscheme://x"]}}, "notify.urls[0]", "not a URL apprise can use"),
        ({"supervisor": {"serverurl": "ftp://x"}}, "supervisor.serverurl", "must start with"),
        ({"nonsense": {"a": 1}}, "nonsense", "unknown key"),
        ({"probes": [{"match": "web", "htpp": {"url": "http://x"}}]}, "probes[0].htpp", "unknown probe kind"),
        ({"probes": [{"match": "web", "tcp": "a:1", "exec": ["true"]}]}, "probes[0]", "two probe kinds"),
        ({"probes": [{"match": "web", "tcp": "a:1", "period": "ten"}]}, "probes[0].period", "not a duration"),
        ({"probes": [{"match": "web", "tcp": "127.0.0.1:{prot}"}]}, "probes[0].tcp", "unknown placeholder {prot}"),
        ({"probes": [{"match": "web", "tcp": "127.0.0.1:{port}"}]}, "probes[0].port_base", "required"),
        ({"probes": [{"match": "web", "log_pattern": {"regex": "("}}]}, "probes[0].log_pattern.regex",
         "not a valid regular expression"),
        ({"probes": [{"match": "web", "tcp": "a:1", "action": "reboot"}]}, "probes[0].action", "not one of"),
        ({"remediation": {"max_restarts": 0}}, "remediation.max_restarts", "out of bounds"),
        ({"alerts": {"groups": [{"match": "pool"}]}}, "alerts.groups[0].min_running", "required"),
        ({"alerts": {"programs": [{"match": "svc", "must_run": True, "grace": "soon"}]}}, "alerts.programs[0].grace",
         "not a duration"),
        ({"alerts": {"programs": [{"match": "svc", "must_run": "yes"}]}}, "alerts.programs[0].must_run", "bool"),
        ({"alerts": {"programs": [{"match": "job", "must_run": True, "oneshot": True}]}},
         "alerts.programs[0].oneshot", "not with must_run"),
    ],
)
def test_bad_config_names_the_key_and_exits_2(tmp_path, webhook, sections, key, problem):
    state = {"path": str(tmp_path / "db.sqlite")}
    toml = lookout_toml(
        {**sections, "state": state, "notify": {"urls": [webhook.url()], **sections.get("notify", {})}}
        if "notify" not in sections or "urls" not in sections["notify"]
        else {**sections, "state": state}
    )
    for args in ((), ("--check-config",)):
        result = run_cli(tmp_path, toml, *args, stdin="READY-not-really\n")
        assert result.returncode == 2, result.stderr
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1, lines
        assert key in lines[0] and problem in lines[0], lines[0]
        assert result.stdout == ""  # nothing on the protocol pipe
    stays(lambda: not webhook.messages, 0.5, "nothing sent")
    assert not (tmp_path / "db.sqlite").exists()


def test_unreachable_supervisord(tmp_path, webhook):
    toml = lookout_toml(
        {
            **BASE,
            "notify": {"urls": [f"json://me:{SECRET}@127.0.0.1:{webhook.port}/x"]},
            "state": {"path": str(tmp_path / "db")},
        }
    )
    result = run_cli(tmp_path, toml, "--check-config")
    assert result.returncode == 2
    assert "supervisor.serverurl" in result.stderr
    assert "supervisord is not running? (no socket at /nonexistent/lookout-test.sock)" in result.stderr
    assert "config error" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert SECRET not in result.stderr + result.stdout
    assert not webhook.messages


def test_check_config_masks_secrets(tmp_path):
    from .harness import Supervisor

    sup = Supervisor(tmp_path / "s", "[program:x]\ncommand=sleep 1000\n", {}, listener=False).start(
        wait_listener=False
    )
    try:
        toml = lookout_toml(
            {
                "supervisor": {"serverurl": f"unix://{sup.sock}", "password": "hunter2hunter2"},
                "state": {"path": str(tmp_path / "db")},
                "notify": {
                    "urls": [
                        f"slack://{SLACK_A}/{SLACK_B}/{SLACK_C}",
                        f"json://u:{SECRET}@hooks.example.com/x",
                    ]
                },
            }
        )
        result = run_cli(tmp_path, toml, "--check-config")
        assert result.returncode == 0, result.stderr
        out = result.stdout + result.stderr
        for secret in (SECRET, SLACK_A, SLACK_B, SLACK_C, "hunter2"):
            assert secret not in out, secret
        assert "slack://***" in out and "json://hooks.example.com" in out
        assert "RUNNING" in out
        test = run_cli(tmp_path, toml, "--test-alert")  # both fail: no network; still no secret
        assert test.returncode == 1
        for secret in (SECRET, SLACK_A, SLACK_B, SLACK_C):
            assert secret not in test.stdout + test.stderr
        assert "FAILED" in test.stdout
    finally:
        sup.stop()


def test_terminal_run_explains_registration(tmp_path):
    import pty

    path = tmp_path / "lookout.toml"
    path.write_text(lookout_toml({"state": {"path": str(tmp_path / "db")}}))
    master, slave = pty.openpty()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SUPERVISOR_")}
    result = subprocess.run(
        [sys.executable, "-m", "lookout.listener", "-c", str(path)],
        stdin=slave,
        capture_output=True,
        text=True,
        timeout=30,
        env=env,
    )
    os.close(master)
    os.close(slave)
    assert result.returncode == 2
    assert "supervisord event listener" in result.stderr and "lookout init DIR" in result.stderr


def test_durations():
    assert parse_duration("30s", "k") == 30
    assert parse_duration("1h30m", "k") == 5400
    assert parse_duration("250ms", "k") == 0.25
    for bad in ("", "10", "5 minutes", "-1s", "1x"):
        with pytest.raises(ConfigError, match="k: "):
            parse_duration(bad, "k")


def test_example_config_documents_every_section_and_parses(tmp_path):
    from lookout.config import parse_config
    from lookout.config.load import tomllib

    data = tomllib.loads((REPO / "conf.d" / "lookout.toml").read_text())
    config = parse_config(data)
    assert {"supervisor", "state", "notify", "alerts", "listener", "exporter", "alertmanager"} <= set(data)
    assert config.alerts.programs[0].match == "trading_system:*"


def test_config_is_found_as_documented(tmp_path):
    """-c, else $LOOKOUT_CONFIG, else /etc/lookout/lookout.toml when it exists, else defaults."""
    from lookout.config.load import load_config

    def toml(name: str, host: str) -> str:
        path = tmp_path / name
        path.write_text(f'[alerts]\nhost = "{host}"\n')
        return str(path)

    etc, env, flag = toml("etc.toml", "from-etc"), toml("env.toml", "from-env"), toml("c.toml", "from-c")
    assert load_config(flag, {"LOOKOUT_CONFIG": env}, etc).alerts.host == "from-c"
    assert load_config(None, {"LOOKOUT_CONFIG": env}, etc).alerts.host == "from-env"
    assert load_config(None, {}, etc).alerts.host == "from-etc"
    assert load_config(None, {}, str(tmp_path / "absent.toml")).source == "<defaults>"


def test_a_store_behind_a_symbolic_link_is_refused_at_check_config(tmp_path):
    real = tmp_path / "real.db"
    real.write_bytes(b"")
    for link in (tmp_path / "db", tmp_path / "other.db-wal"):
        link.symlink_to(real)
        path = str(link).removesuffix("-wal")
        result = run_cli(tmp_path, lookout_toml({**BASE, "state": {"path": path}}), "--check-config")
        assert result.returncode == 2, result.stderr
        assert "symbolic link" in result.stderr and str(link) in result.stderr
        assert "Traceback" not in result.stderr


def test_two_targets_with_one_safe_form_are_told_apart():
    from lookout.config.load import parse_config
    from lookout.listener.notifier.targets import build_targets as _build_targets

    config = parse_config({"notify": {"urls": [f"slack://{SLACK_A}/{SLACK_B}/{SLACK_C}",
                                               f"slack://{SLACK_C}/{SLACK_B}/{SLACK_A}", "json://a.example/x"]},
                           "alertmanager": {"urls": ["http://127.0.0.1:9/am1", "http://127.0.0.1:9/am2"]}})
    assert [t.label for t in _build_targets(config)] == [
        "slack://*** #1", "slack://*** #2", "json://a.example",
        "alertmanager+http://127.0.0.1:9 #1", "alertmanager+http://127.0.0.1:9 #2"]
