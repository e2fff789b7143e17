"""Issue 14: messages that say what to do. A config error only for the config; supervisord down,
another user's store, a silence that matches nothing, a delivery that failed: each in words a
person can act on, with no secret in them."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from lookout.redact import SecretFilter, secrets_in_url

from .harness import free_port, lookout_toml

SECRET = "s3cretPW99"


def lookout(*args: str, env: dict | None = None, config: Path | None = None) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("SUPERVISOR_", "LOOKOUT_"))}
    argv = [sys.executable, "-m", "lookout", *(["-c", str(config)] if config else []), *args]
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, env={**base, **(env or {})})


def write_config(tmp_path: Path, **sections) -> Path:
    path = tmp_path / "lookout.toml"
    base = {"supervisor": {"serverurl": f"unix://{tmp_path}/no-supervisord.sock"},
            "state": {"path": str(tmp_path / "state" / "lookout.db")}}
    path.write_text(lookout_toml({**base, **sections}))
    return path


def test_not_every_error_is_a_config_error(tmp_path):
    config = write_config(tmp_path)
    since = lookout("history", "web", "--since", "5x", config=config)
    assert since.returncode == 2 and since.stderr.startswith("lookout: --since: '5x' is not a duration")
    down = lookout("probe", config=write_config(tmp_path, probes=[{"match": "*", "tcp": "127.0.0.1:1"}]))
    assert down.returncode == 2, down.stderr
    assert f"supervisord is not running? (no socket at {tmp_path}/no-supervisord.sock)" in down.stderr
    status = lookout("status", config=config)
    assert status.returncode == 2 and "supervisord is not running? (no socket at" in status.stderr
    for result in (since, down, status):
        assert "config error" not in result.stderr and "FileNotFoundError" not in result.stderr


def test_where_the_config_came_from_is_named(tmp_path):
    missing = lookout("alerts", env={"LOOKOUT_CONFIG": str(tmp_path / "nope.toml")})
    assert missing.returncode == 2 and f"$LOOKOUT_CONFIG: {tmp_path}/nope.toml: no such file" in missing.stderr
    given = lookout("alerts", config=tmp_path / "nope.toml")
    assert given.returncode == 2 and f"-c: {tmp_path}/nope.toml: no such file" in given.stderr
    if not os.path.exists("/etc/lookout/lookout.toml"):
        defaults = lookout("alerts", env={"HOME": str(tmp_path)})
        assert defaults.stderr.count("no config file found") == 1, defaults.stderr


def test_version_and_colour_flags(tmp_path):
    for module in ("lookout", "lookout.listener", "lookout.exporter"):
        shown = subprocess.run([sys.executable, "-m", module, "--version"], capture_output=True, text=True, timeout=60)
        assert shown.returncode == 0 and shown.stdout.split()[0] in ("lookout", "lookout-listener",
                                                                      "lookout-exporter"), shown
        assert shown.stdout.split()[1][0].isdigit() or "not installed" in shown.stdout
    bare = lookout("status", "--color", config=write_config(tmp_path))
    assert "expected one argument" not in bare.stderr and "supervisord is not running?" in bare.stderr


def test_a_silence_that_matches_nothing_says_so(tmp_path):
    config = write_config(tmp_path)
    made = lookout("silence", "nosuchprog", "--for", "5m", config=config)
    assert made.returncode == 0, made.stderr
    assert "silence 1: nosuchprog until" in made.stdout and "no process matches 'nosuchprog' now" in made.stdout
    listed = lookout("silences", config=config)
    assert listed.returncode == 0 and "nosuchprog" in listed.stdout


def _as_nobody() -> list[str] | None:
    for tool in ("setpriv", "runuser"):
        if shutil.which(tool) and os.geteuid() == 0:
            return (["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--"] if tool == "setpriv"
                    else ["runuser", "-u", "nobody", "--"])
    return None


@pytest.mark.skipif(_as_nobody() is None, reason="needs root and setpriv or runuser to act as another user")
def test_another_users_store_names_its_owner():
    import tempfile

    tmp_path = Path(tempfile.mkdtemp(prefix="lookout-owner-"))  # (pytest's own tmp is private to root)
    os.chmod(tmp_path, 0o755)
    config = write_config(tmp_path)
    assert lookout("silence", "x", "--for", "5m", config=config).returncode == 0  # creates root's store
    os.chmod(config, 0o644)
    for args in (["alerts"], ["silences"], ["history", "x"]):
        result = subprocess.run([*_as_nobody(), sys.executable, "-m", "lookout", "-c", str(config), *args],
                                capture_output=True, text=True, timeout=60, env={"PATH": os.environ["PATH"]})
        assert result.returncode == 2, (args, result.stdout, result.stderr)
        assert "it belongs to root: run lookout as root" in result.stderr, (args, result.stderr)
        assert "config error" not in result.stderr
    os.chmod(config, 0o600)
    private = subprocess.run([*_as_nobody(), sys.executable, "-m", "lookout", "-c", str(config), "alerts"],
                             capture_output=True, text=True, timeout=60, env={"PATH": os.environ["PATH"]})
    assert "Permission denied (it belongs to root: run as root" in private.stderr, private.stderr
    shutil.rmtree(tmp_path)


def test_test_alert_says_why_a_target_refused(tmp_path):
    from aiosmtpd.controller import Controller

    class Accept:
        async def handle_DATA(self, server, session, envelope):  # noqa: ANN001, ANN201, N802
            return "250 OK"

    smtp_port, closed = free_port(), free_port()
    server = Controller(Accept(), hostname="127.0.0.1", port=smtp_port)
    server.start()
    try:
        urls = [f"mailto://user:{SECRET}@127.0.0.1:{smtp_port}?smtp=127.0.0.1&from=a@b.example&to=x@y.example",
                f"json://127.0.0.1:{closed}/hook"]
        result = lookout("test-alert", config=write_config(tmp_path, notify={"urls": urls}))
    finally:
        server.stop()
    assert result.returncode == 1
    lines = result.stdout.splitlines()
    assert any(line.startswith(f"FAILED  mailto://127.0.0.1:{smtp_port}: ") and "SMTP AUTH extension not supported"
               in line for line in lines), result.stdout
    assert any(line.startswith(f"FAILED  json://127.0.0.1:{closed}: ") and "Connection refused" in line
               for line in lines), result.stdout
    assert SECRET not in result.stdout + result.stderr
    assert all(line.count("127.0.0.1") <= 2 for line in lines)  # the URL once, not twice


def test_masking_hides_secrets_never_hosts_or_ports():
    url = f"mailto://user:{SECRET}@mail.example.com:2525?smtp=127.0.0.1&port=25&from=a@b.example&token=abc123def"
    scrubber = SecretFilter(secrets_in_url(url))
    line = "connected to 127.0.0.1:25 and mail.example.com:2525 for json://10.0.0.7:9000/hook (abc123def, " \
           f"{SECRET})"
    assert scrubber.scrub(line) == "connected to 127.0.0.1:25 and mail.example.com:2525 for " \
                                   "json://10.0.0.7:9000/hook (***, ***)"
    slack = secrets_in_url("slack://T1JJ3T3L2/A1BRTD4JD/TIiajkdnlazkcOXrIdevi7FQ")
    assert {"T1JJ3T3L2", "A1BRTD4JD", "TIiajkdnlazkcOXrIdevi7FQ"} <= slack  # tokens as written (case kept)
    probe = SecretFilter(secrets_in_url("http://127.0.0.1:8080/status/deep", tokens_only=True))  # a probe's path
    assert probe.scrub("GET http://127.0.0.1:8080/status/deep: exit status 3") == \
        "GET http://127.0.0.1:8080/status/deep: exit status 3"
    hook = secrets_in_url("https://hc-ping.com/ping/0f1c8d5e-3b7a-4c1e-9d2f-6a5b4c3d2e1f")
    assert "0f1c8d5e-3b7a-4c1e-9d2f-6a5b4c3d2e1f" in hook
    assert not secrets_in_url("json://hooks.example.com/services/alerts")  # route words
    for url, secret in (("ntfys://ntfy.sh/mysecrettopic", "mysecrettopic"),  # notification URLs: any other word
                        ("gotify://host.example/AbCdEfGhIjKlMnO", "AbCdEfGhIjKlMnO"),
                        ("json://host.example/hook/sEcReTwOrD", "sEcReTwOrD")):
        scrubbed = SecretFilter(secrets_in_url(url)).scrub(f"topic '{secret}' refused at {url}")
        assert secret not in scrubbed and "host.example" not in scrubbed.replace("ntfy.sh", ""), scrubbed
