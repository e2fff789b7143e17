"""Issue 22, point 4: one matcher. Every command and key that takes a process pattern names the
same processes for the same pattern: the pure matcher (lookout/patterns.py), the config keys
through PolicyBook ([[alerts.programs]], [[probes]], remediation.protected; [[alerts.groups]] on
group names), the store's silences, and the `lookout` commands against one real supervisord
(status, alerts, history, hold, release, probe, silence, and `lookout-listener probe`).

One table, one world. supervisord cannot run a program whose name has a space, and cleans a
control character out of a name, so those two patterns are judged by the pure layer against names
of the pure world only; against supervisord they name nothing (exit 2), as any typo does.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

from lookout.config.load import load_config
from lookout.listener.rules.models import display_name
from lookout.listener.rules.policy import PolicyBook
from lookout.listener.store.delivery import Silence
from lookout.patterns import ProcessPattern, select

from .conftest import fast_alerts
from .harness import Supervisor, Webhook, lookout_toml, wait_for

pytestmark = pytest.mark.long

PROGRAMS = """\
[program:pool]
command=sleep 1000
numprocs=3
process_name=%(program_name)s_%(process_num)02d

[program:reconciler]
command=sleep 1000

[group:trading_system]
programs=feed,quotes

[program:feed]
command=sleep 1000

[program:quotes]
command=sleep 1000
"""
SUPERVISORD = ("pool:pool_00", "pool:pool_01", "pool:pool_02", "reconciler:reconciler", "trading_system:feed",
               "trading_system:quotes")
# Only the pure layer has these: a space, a glob character and a control character in a name.
PURE_ONLY = ("job [1]:job [1]", "job 1:job 1", "alarm\x07*:alarm\x07*", "alarm\x07x:alarm\x07x",
             "esc\u241b[31m:esc\u241b[31m")  # ESC as lookout keeps it (lookout/text.py's clean_name)
WORLD = SUPERVISORD + PURE_ONLY
GROUPS = sorted({ns.partition(":")[0] for ns in WORLD})
POOL = {"pool:pool_00", "pool:pool_01", "pool:pool_02"}

# pattern -> (the processes it names, the groups it names as a whole)
TABLE: dict[str, tuple[set[str], set[str]]] = {
    "pool": (POOL, {"pool"}),  # supervisorctl stop pool: the whole group
    "pool:*": (POOL, {"pool"}),
    "pool:": (POOL, {"pool"}),
    "pool:pool_01": ({"pool:pool_01"}, set()),
    "pool_01": ({"pool:pool_01"}, set()),  # a process's own name
    "pool*": (POOL, {"pool"}),  # a glob: lookout's extension
    "reconciler": ({"reconciler:reconciler"}, {"reconciler"}),
    "trading_system:feed": ({"trading_system:feed"}, set()),
    "*:feed": ({"trading_system:feed"}, set()),
    "job [1]": ({"job [1]:job [1]"}, {"job [1]"}),  # a space: literal, '[1]' is no glob ('job 1' stays out)
    "alarm\x07*": ({"alarm\x07*:alarm\x07*"}, {"alarm\x07*"}),  # a control character: literal, '*' too
    "esc\x1b[31m": ({"esc\u241b[31m:esc\u241b[31m"}, {"esc\u241b[31m"}),  # typed raw: the name lookout shows
    "nosuch": (set(), set()),
}


def shown(namespecs: set[str]) -> set[str]:
    return {display_name(ns) for ns in namespecs}


@pytest.mark.parametrize("pattern", TABLE)
def test_the_pure_matcher_and_every_config_key_agree(pattern, tmp_path):
    processes, groups = TABLE[pattern]
    assert set(select(pattern, WORLD)) == processes
    parsed = ProcessPattern.parse(pattern)
    assert {g for g in GROUPS if parsed.names_group(g)} == groups

    config = tmp_path / "lookout.toml"
    config.write_text(lookout_toml({
        "state": {"path": str(tmp_path / "lookout.db")},
        "alerts": {"programs": [{"match": pattern, "severity": "info"}],
                   "groups": [{"match": pattern, "min_running": 1}]},
        "probes": [{"match": pattern, "exec": ["true"]}],
        "remediation": {"protected": [pattern]},
    }))
    loaded = load_config(str(config), {})
    book = PolicyBook(loaded.alerts, loaded.probes, loaded.remediation.protected)
    assert {ns for ns in WORLD if book.lookup(ns).severity == "info"} == processes, "[[alerts.programs]]"
    assert {ns for ns in WORLD if book.probes(ns)} == processes, "[[probes]]"
    assert {ns for ns in WORLD if book.protected(ns)} == processes, "remediation.protected"
    assert {g for g in GROUPS if book.group_rule(g) is not None} == groups, "[[alerts.groups]]"

    silence = Silence(1, pattern, 0.0, float("inf"), "")  # the notifier's own question, stored text as typed
    assert {ns for ns in WORLD if silence.covers(ns, 1.0)} == processes, "silence"
    assert {g for g in GROUPS if silence.covers(g, 1.0)} == groups, "silence of a group's own alert"


def test_an_empty_pattern_is_refused_with_a_reason():
    with pytest.raises(ValueError, match="empty process pattern"):
        ProcessPattern.parse("")


# ---- the commands, against one supervisord for the whole table ---------------------------


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    hook = Webhook().start()
    settings = fast_alerts(hook)
    # A probe that always fails opens an alert on every process: `alerts` and `probe` list them all.
    settings["probes"] = [{"match": "*", "exec": ["false"], "period": "1s", "failure_threshold": 1}]
    sup = Supervisor(tmp_path_factory.mktemp("patterns"), PROGRAMS, settings)
    try:
        sup.start()
        wait_for(lambda: shown(set(SUPERVISORD)) <= names_of(alert_rows(sup, "*")), 60, "an alert on every process")
        yield sup
        sup.check_store_invariants()
    finally:
        sup.stop()
        hook.stop()


def run(sup: Supervisor, *args: str, module: str = "lookout") -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", module, "-c", str(sup.config_path), *args],
                          capture_output=True, text=True, timeout=60)


def alert_rows(sup: Supervisor, pattern: str) -> list[dict]:
    done = run(sup, "alerts", pattern, "--json")
    return json.loads(done.stdout) if done.returncode == 0 else []


def names_of(rows: list[dict]) -> set[str]:
    return {r["name"] for r in rows if r["name"] != "lookout"}


def leading_names(text: str, pattern: str) -> set[str]:
    """`NAME: held ...`, `NAME: released ...`: the names before the first ': '."""
    return {m.group(1) for m in re.finditer(pattern, text, re.MULTILINE)}


@pytest.mark.parametrize("pattern", TABLE)
def test_every_command_names_the_same_processes(world, pattern):
    sup = world
    expected = shown(TABLE[pattern][0] & set(SUPERVISORD))
    seen: dict[str, set[str]] = {}
    done: dict[str, subprocess.CompletedProcess] = {}

    done["status"] = run(sup, "status", pattern, "--json")
    seen["status"] = {row["name"] for row in json.loads(done["status"].stdout or "[]")}
    done["alerts"] = run(sup, "alerts", pattern, "--json")
    seen["alerts"] = names_of(json.loads(done["alerts"].stdout)) if done["alerts"].returncode == 0 else set()
    for module in ("lookout", "lookout.listener"):  # `lookout-listener probe`: the alias, the same answer
        done[module + " probe"] = run(sup, "probe", pattern, module=module)
        seen[module + " probe"] = leading_names(done[module + " probe"].stdout, r"^(?:FAIL|ok|skip|\?)\s+(\S+)\s")
    done["history"] = history = run(sup, "history", pattern)
    ambiguous = re.search(r"is ambiguous: (.*)$", history.stderr)  # more than one: it names them all
    header = re.match(r"^(?:no history for )?(.+?)(?:, the last | in the last )", history.stdout)
    seen["history"] = set(ambiguous.group(1).split(", ")) if ambiguous else {header.group(1)} if header else set()
    done["hold"] = run(sup, "hold", pattern, "--reason", "table")
    seen["hold"] = leading_names(done["hold"].stdout, r"^(.+?): held\. ")
    done["release"] = run(sup, "release", pattern)
    seen["release"] = leading_names(done["release"].stdout, r"^(.+?): released")

    made = run(sup, "silence", pattern, "--for", "10m")
    assert made.returncode == 0, made.stderr  # kept as it was: a silence may be set ahead of a program to come
    silenced = json.loads(run(sup, "status", "--json").stdout)
    seen["silence"] = {row["name"] for row in silenced if row["silenced_until"] is not None}
    assert run(sup, "unsilence", re.match(r"silence (\d+):", made.stdout).group(1)).returncode == 0

    for command, names in seen.items():
        assert names == expected, (pattern, command, names, expected)
    if expected:
        codes = {c: d.returncode for c, d in done.items() if c != "history"}
        assert codes == {"status": 0, "alerts": 0, "lookout probe": 1, "lookout.listener probe": 1, "hold": 0,
                         "release": 0}, (codes, {c: d.stderr for c, d in done.items()})  # probe: 1, they FAIL
        assert history.returncode == (2 if len(expected) > 1 else 0), history.stderr
        return
    assert f"no process matches {pattern!r} now" in made.stdout  # the silence's note
    for command, result in done.items():  # one clear line, exit 2
        assert result.returncode == 2, (command, result.returncode, result.stdout, result.stderr)
        assert result.stderr.startswith(f"lookout: no process matches {pattern!r} ("), (command, result.stderr)
        assert len(result.stderr.splitlines()) == 1, (command, result.stderr)


def test_the_table_covers_what_the_issue_names():
    assert {"pool", "pool:*", "pool:pool_01", "pool_01", "pool*", "nosuch"} <= set(TABLE)
    assert any(" " in p for p in TABLE) and any(not p.isprintable() for p in TABLE)
