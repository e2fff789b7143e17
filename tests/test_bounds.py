"""Issue 7, acceptance 6: every duration and count has bounds. A zero, a negative and a
400-digit value for each one gets exit status 2 and one line naming the key, from every
command, with no traceback. The keys come from the documented example config, so a new
setting is covered as soon as it is documented."""

from __future__ import annotations

import copy
import os
import re
import subprocess
import sys

import pytest

from lookout.config import ConfigError, parse_config
from lookout.config.load import tomllib
from lookout.exporter.cli import main as exporter_main
from lookout.listener.cli import main as listener_main

from .harness import REPO

EXAMPLE = tomllib.loads((REPO / "conf.d" / "lookout.toml").read_text())
DURATION = re.compile(r"^\d+(?:\.\d+)?(?:ms|s|m|h|d)+")
HUGE = "9" * 400
# Counts where 0 is meaningful (no log lines at all): negative and huge are still refused.
ZERO_ALLOWED = {"stderr_lines", "initial_delay", "port_base", "group_interval"}  # (group_interval 0s: off)


def leaves(node: object, path: str = ""):  # noqa: ANN201
    if isinstance(node, dict):
        for key, value in node.items():
            yield from leaves(value, f"{path}.{key}" if path else key)
    elif isinstance(node, list) and node and all(isinstance(v, dict) for v in node):
        for i, value in enumerate(node):
            yield from leaves(value, f"{path}[{i}]")
    else:
        yield path, node


DURATIONS = [p for p, v in leaves(EXAMPLE) if isinstance(v, str) and DURATION.match(v)]
COUNTS = [p for p, v in leaves(EXAMPLE) if isinstance(v, int) and not isinstance(v, bool)]


def with_value(path: str, value: object) -> dict:
    data = copy.deepcopy(EXAMPLE)
    node = data
    parts = re.findall(r"[^.\[\]]+|\[\d+\]", path)
    for part in parts[:-1]:
        node = node[int(part[1:-1])] if part.startswith("[") else node[part]
    node[parts[-1]] = value
    return data


def bad_values(path: str, duration: bool) -> list[object]:
    if duration:
        values = ["-5s", f"{HUGE}s"]
        if path.rsplit(".", 1)[-1] not in ZERO_ALLOWED:
            values.insert(0, "0s")
        return values
    return [-1, int(HUGE)] if path.rsplit(".", 1)[-1] in ZERO_ALLOWED else [0, -1, int(HUGE)]


CASES = [(p, v) for p in DURATIONS for v in bad_values(p, True)] + \
        [(p, v) for p in COUNTS for v in bad_values(p, False)]


def test_the_example_covers_the_settings():
    assert len(DURATIONS) >= 15 and len(COUNTS) >= 3
    assert {"notify.retry_initial", "listener.tick_timeout", "supervisor.timeout"} <= set(DURATIONS)


@pytest.mark.parametrize(("path", "value"), CASES, ids=[f"{p}={str(v)[:8]}" for p, v in CASES])
def test_out_of_bounds_values_are_refused(path, value, tmp_path, capsys):
    key = path
    with pytest.raises(ConfigError) as err:
        parse_config(with_value(path, value), env={})
    assert key in str(err.value) and len(str(err.value)) < 300
    toml = tmp_path / "lookout.toml"
    toml.write_text(_toml(with_value(path, value)))
    for main, argv in ((listener_main, ["-c", str(toml), "--check-config"]), (exporter_main, ["-c", str(toml)])):
        assert main(argv) == 2
        out, err_text = capsys.readouterr()
        lines = err_text.strip().splitlines()
        assert out == "" and len(lines) == 1 and key in lines[0], (path, value, lines)


def _toml(data: dict) -> str:
    """Just enough TOML writing for the example config's shapes."""
    import json

    def value(v: object) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, dict):
            return "{ " + ", ".join(f"{k} = {value(x)}" for k, x in v.items()) + " }"
        if isinstance(v, list):
            return "[" + ", ".join(value(x) for x in v) + "]"
        return json.dumps(v) if isinstance(v, str) else str(v)

    out = []
    for section, body in data.items():
        if isinstance(body, dict):
            out.append(f"[{section}]")
            out += [f"{k} = {value(v)}" for k, v in body.items() if not (isinstance(v, list) and v
                                                                             and isinstance(v[0], dict))]
            for k, v in body.items():
                if isinstance(v, list) and v and isinstance(v[0], dict):
                    for entry in v:
                        out.append(f"[[{section}.{k}]]")
                        out += [f"{ek} = {value(ev)}" for ek, ev in entry.items()]
        else:
            for entry in body:
                out.append(f"[[{section}]]")
                out += [f"{ek} = {value(ev)}" for ek, ev in entry.items()]
    return "\n".join(out) + "\n"


def test_the_toml_writer_round_trips():
    assert tomllib.loads(_toml(EXAMPLE)) == EXAMPLE


@pytest.mark.parametrize("value", ["0s", "-5s", f"{HUGE}s", HUGE])
def test_silence_for_is_bounded(tmp_path, value):
    toml = tmp_path / "lookout.toml"
    toml.write_text(f'[state]\npath = "{tmp_path / "db"}"\n')
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SUPERVISOR_", "LOOKOUT_"))}
    result = subprocess.run([sys.executable, "-m", "lookout.listener", "-c", str(toml), "silence", "x:*", "--for",
                             value], capture_output=True, text=True, timeout=60, env=env)
    assert result.returncode == 2, result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "--for" in lines[0] and "Traceback" not in result.stderr
    listed = subprocess.run([sys.executable, "-m", "lookout.listener", "-c", str(toml), "silences"],
                            capture_output=True, text=True, timeout=60, env=env)
    assert listed.returncode == 0 and "no active silences" in listed.stdout


def test_no_traceback_for_huge_ids_and_values_in_real_processes(tmp_path):
    toml = tmp_path / "lookout.toml"
    toml.write_text(f'[state]\npath = "{tmp_path / "db"}"\n[notify]\nretry_initial = "{HUGE}s"\n')
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SUPERVISOR_", "LOOKOUT_"))}
    for args in (["-m", "lookout.listener", "--check-config"], ["-m", "lookout.exporter"]):
        result = subprocess.run([sys.executable, *args, "-c", str(toml)], capture_output=True, text=True,
                                timeout=60, env=env)
        assert result.returncode == 2 and "Traceback" not in result.stderr
        assert "notify.retry_initial" in result.stderr
    toml.write_text(f'[state]\npath = "{tmp_path / "db"}"\n')
    result = subprocess.run([sys.executable, "-m", "lookout.listener", "-c", str(toml), "unsilence", HUGE],
                            capture_output=True, text=True, timeout=60, env=env)
    assert result.returncode == 2 and "Traceback" not in result.stderr and "not a silence id" in result.stderr
