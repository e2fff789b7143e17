"""Issue 24: the dependency rules without supervisord: the config (cycles, checks, supervisord-
dependent-startup's keys), the graph's judgement of a need, and what the readers publish."""

from __future__ import annotations

import pytest

from lookout.config import ConfigError, parse_config
from lookout.dependency_graph import Edge, Graph, NeedFacts, judge


def test_a_cycle_is_an_error_naming_it():
    with pytest.raises(ConfigError) as err:
        parse_config({"dependencies": [{"program": "a", "needs": ["b"]}, {"program": "b", "needs": ["c"]},
                                       {"program": "c", "needs": ["a"]}]})
    assert str(err.value) == "config error: dependencies[2].needs: a cycle: a -> b -> c -> a"
    with pytest.raises(ConfigError, match="a cycle: execution:\\* -> execution:\\*"):
        parse_config({"dependencies": [{"program": "execution:*", "needs": ["execution:router"]}]})


@pytest.mark.parametrize("entry, key", [
    ({"program": "", "needs": ["a"]}, "dependencies[0].program"),
    ({"program": "x", "needs": []}, "dependencies[0].needs"),
    ({"program": "x", "needs": ["check:nope"]}, "dependencies[0].needs[0]"),
    ({"program": "x", "needs": ["a"], "ready": "up"}, "dependencies[0].ready"),
    ({"program": "x", "needs": ["a"], "grace": "soon"}, "dependencies[0].grace"),
    ({"program": "x", "needs": ["a"], "start_timeout": "0s"}, "dependencies[0].start_timeout"),
    ({"program": "x", "needs": ["a"], "typo": 1}, "dependencies[0].typo"),
    ({"program": "x", "neds": ["a"]}, "dependencies[0].neds"),
])
def test_a_bad_entry_names_its_key(entry, key):  # noqa: ANN001
    with pytest.raises(ConfigError) as err:
        parse_config({"dependencies": [entry]})
    assert f"config error: {key}:" in str(err.value), str(err.value)


def test_a_check_is_a_probe_without_a_program():
    config = parse_config({"checks": [{"name": "vpn", "tcp": "10.8.0.1:443", "period": "5s"}],
                           "dependencies": [{"program": "feed", "needs": ["check:vpn"]}]})
    assert config.checks[0].match == "check:vpn" and config.checks[0].period == 5.0
    for bad, key in (({"name": "vpn", "tcp": "h:1", "action": "restart"}, "checks[0].action"),
                     ({"name": "vpn", "memory": {"max": "1GB"}}, "checks[0].memory"),
                     ({"name": "", "tcp": "h:1"}, "checks[0].name")):
        with pytest.raises(ConfigError, match=key.replace("[", "\\[").replace("]", "\\]")):
            parse_config({"checks": [bad]})


def test_supervisord_dependent_startup_keys_are_read(tmp_path):
    conf = tmp_path / "supervisord.conf"
    (tmp_path / "conf.d").mkdir()
    conf.write_text("[supervisord]\n[include]\nfiles = conf.d/*.conf\n[program:database]\ncommand=x\n")
    (tmp_path / "conf.d" / "app.conf").write_text(
        "[program:risk_manager]\ncommand=x\nautostart=false\ndependent_startup=true\n"
        "dependent_startup_wait_for=database:running migrate:exited\n")
    config = parse_config({"supervisor": {"config": str(conf)}})
    (dep,) = config.dependencies
    assert dep.program == "risk_manager" and dep.start
    assert [(n.pattern, n.ready) for n in dep.needs] == [("database", "running"), ("migrate", "exited")]
    (tmp_path / "conf.d" / "app.conf").write_text("[program:a]\ndependent_startup=true\n"
                                                  "dependent_startup_wait_for=a:sleeping\n")
    with pytest.raises(ConfigError, match="supervisor.config"):
        parse_config({"supervisor": {"config": str(conf)}})


def test_a_need_is_judged_as_its_ready_asks():
    running = Edge("db:db", "running")
    assert judge(running, NeedFacts("RUNNING")).ready
    assert not judge(running, NeedFacts("STARTING")).ready and not judge(running, NeedFacts("STARTING")).failing
    assert judge(running, NeedFacts("FATAL")).failing
    assert judge(running, NeedFacts("STOPPED", stopped_by="operator")).said == "STOPPED by an operator"
    assert not judge(running, NeedFacts("STOPPED")).failing  # never started: only not ready
    healthy = Edge("db:db", "healthy")
    assert not judge(healthy, NeedFacts("RUNNING")).ready
    assert judge(healthy, NeedFacts("RUNNING", judged_healthy=True)).ready
    assert judge(healthy, NeedFacts("RUNNING", unhealthy=True)).failing
    assert not judge(running, NeedFacts("RUNNING", unhealthy=True)).failing  # running is all it asks for
    exited = Edge("migrate:migrate", "exited")
    assert judge(exited, NeedFacts("EXITED", exit_ok=True)).ready
    assert judge(exited, NeedFacts("EXITED", exit_ok=False)).failing
    assert not judge(exited, NeedFacts("EXITED")).ready  # not known yet: nothing starts on a guess
    assert judge(Edge("check:vpn", "running"), NeedFacts("DOWN")).failing
    assert judge(Edge("check:vpn", "running"), None).said == "not known yet"


def test_the_deepest_failing_need_is_the_cause_and_an_unknown_need_holds_nothing_back():
    config = parse_config({"dependencies": [
        {"program": "risk", "needs": ["db"]}, {"program": "execution:*", "needs": ["risk", "nothing_here"]}]})
    graph = Graph.build(config.dependencies, ["db:db", "risk:risk", "execution:a", "execution:b"])
    assert graph.unmatched == ("nothing_here",)
    assert graph.order() == ["db:db", "risk:risk", "execution:a", "execution:b"]
    assert graph.all_dependants("db:db") == ["risk:risk", "execution:a", "execution:b"]
    states = {"db:db": NeedFacts("FATAL"), "risk:risk": NeedFacts("BACKOFF")}
    assert graph.cause("execution:a", states.get).need == "db:db"
    states["risk:risk"] = NeedFacts("STOPPED")  # never started: waits for db, which is FATAL
    assert graph.cause("execution:a", states.get).need == "db:db"
    states = {"db:db": NeedFacts("RUNNING"), "risk:risk": NeedFacts("RUNNING")}
    assert graph.cause("execution:a", states.get) is None


def test_the_exporter_publishes_each_edge_and_each_wait():
    from lookout.exporter.dependencies import dependency_families
    from lookout.exporter.source import ProcessView, ScrapeData

    config = parse_config({"dependencies": [{"program": "risk", "needs": ["db"], "start": True}]})
    data = ScrapeData("store", True, "RUNNING", processes=[
        ProcessView("db", "db", "FATAL", 0, 0.0, 0.0, 1), ProcessView("risk", "risk", "STOPPED", 0, 0.0, 0.0, 0)],
        waits={"risk:risk": ("start-up", 1000.0)})
    ready, waiting = dependency_families(data, config, 1042.0)
    assert ready.samples == [('group="risk",name="risk",program="risk",need="db"', 0)]
    assert waiting.samples == [('group="risk",name="risk",program="risk",reason="start-up"', 42.0)]


def test_check_config_exits_2_naming_the_cycle_before_touching_supervisord(tmp_path):
    import subprocess
    import sys

    config = tmp_path / "lookout.toml"
    config.write_text('[supervisor]\nserverurl = "unix:///nonexistent/supervisor.sock"\n\n'
                      '[[dependencies]]\nprogram = "risk_manager"\nneeds = ["database"]\n\n'
                      '[[dependencies]]\nprogram = "database"\nneeds = ["risk_manager"]\n')
    done = subprocess.run([sys.executable, "-m", "lookout", "-c", str(config), "check-config"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done
    assert "dependencies[1].needs: a cycle: risk_manager -> database -> risk_manager" in done.stderr, done.stderr


def test_alertmanager_labels_name_the_cause():
    from lookout.listener.notifier.alertmanager import _labels
    from lookout.listener.rules.models import Alert

    need = Alert("database:database", "fatal", "critical", 1.0, 1.0, impact="2 dependants failing: ...")
    folded = Alert("execution:order_executor", "fatal", "critical", 1.0, 1.0, cause="database:database")
    alone = Alert("analysis:backtest", "crashed", "warning", 1.0, 1.0)
    assert _labels(need, "vm", need.kind, need.severity)["cause"] == "database"
    assert {k: v for k, v in _labels(folded, "vm", folded.kind, folded.severity).items()
            if k in ("cause", "dependant")} == {"cause": "database", "dependant": "true"}
    assert "cause" not in _labels(alone, "vm", alone.kind, alone.severity)


def test_a_need_back_from_a_failure_is_ready_and_still_the_cause_until_stable():
    """Found by a new user: a need back from a crash loop kept its flag until stable_after, and the
    dependants two levels down waited that long. Running, it is ready (what lookout starts may run);
    until its failure is over (stable) it is still the likely cause of what fails with it, and
    respawning after a crash it is failing too (found by an attacker: a dependant crashing with it
    got a page of its own)."""
    looping = NeedFacts("RUNNING", unsettled=True)
    state = judge(Edge("db:db", "running"), looping)
    assert state.ready and state.failing and state.said == "RUNNING (not stable yet)"
    respawning = judge(Edge("db:db", "running"), NeedFacts("STARTING", unsettled=True))
    assert not respawning.ready and respawning.failing and respawning.said == "STARTING (after a failure)"
    config = parse_config({"dependencies": [{"program": "risk", "needs": ["db"]}]})
    graph = Graph.build(config.dependencies, ["db:db", "risk:risk"])
    assert graph.cause("risk:risk", {"db:db": looping}.get).need == "db:db"


def test_a_cycle_among_processes_that_the_patterns_hide_is_broken_and_said():
    """Found by an attacker: "pool:*" needs db, db needs "pool_01" (pool:pool_01): no pattern names
    the other, so the config check passes; on the processes it is a cycle, broken and reported."""
    config = parse_config({"dependencies": [{"program": "pool:*", "needs": ["db"]},
                                            {"program": "db", "needs": ["pool_01"]}]})
    graph = Graph.build(config.dependencies, ["db:db", "pool:pool_01", "pool:pool_02"])
    assert graph.cycles == (("db:db", "pool:pool_01", "db:db"),)
    assert graph.cause("db:db", {"db:db": NeedFacts("FATAL"), "pool:pool_01": NeedFacts("FATAL")}.get) is None \
        or graph.cause("pool:pool_01", {"db:db": NeedFacts("FATAL"), "pool:pool_01": NeedFacts("FATAL")}.get) is None


def test_diamonds_and_long_chains_cost_little():
    """Found by an attacker: four layers of 12 each needing the whole layer before took seconds per
    event (every path walked); a chain of 1200 overflowed the stack. Each need is judged once per level."""
    import time

    deps = [{"program": "l1:*", "needs": ["db"]}] + [{"program": f"l{n}:*", "needs": [f"l{n - 1}:*"]}
                                                      for n in range(2, 9)]
    names = ["db:db"] + [f"l{n}:p{i}" for n in range(1, 9) for i in range(12)]
    graph = Graph.build(parse_config({"dependencies": deps}).dependencies, names)
    facts = {n: NeedFacts("FATAL") for n in names}.get
    started = time.process_time()
    assert all(graph.cause(n, facts).need == "db:db" for n in names[1:])
    assert time.process_time() - started < 2.0  # (exponential: hours)
    chain = [{"program": f"p{i}", "needs": [f"p{i + 1}"]} for i in range(499)]
    graph = Graph.build(parse_config({"dependencies": chain}).dependencies, [f"p{i}:p{i}" for i in range(500)])
    assert graph.order()[0] == "p499:p499" and len(graph.order()) == 500
    with pytest.raises(ConfigError, match="at most 500"):
        parse_config({"dependencies": chain * 2})


def test_a_need_gone_from_supervisord_is_missing_not_ready():
    config = parse_config({"dependencies": [{"program": "risk", "needs": ["db"]}]})
    graph = Graph.build(config.dependencies, ["risk:risk"])  # `update` removed db for a moment
    assert graph.missing == {"risk:risk": ("db",)} and graph.edges["risk:risk"] == ()


def test_lookout_probe_runs_checks_without_supervisord(tmp_path):
    """`lookout probe check:NAME` tries a check before a need is trusted to it (no process behind it)."""
    import socket
    import subprocess
    import sys

    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        config = tmp_path / "lookout.toml"
        config.write_text('[supervisor]\nserverurl = "unix:///nonexistent/supervisor.sock"\n\n'
                          f'[[checks]]\nname = "db_host"\ntcp = "127.0.0.1:{server.getsockname()[1]}"\n\n'
                          '[[checks]]\nname = "vpn"\ntcp = "127.0.0.1:1"\n')

        def probe(pattern: str) -> subprocess.CompletedProcess:
            return subprocess.run([sys.executable, "-m", "lookout", "-c", str(config), "probe", pattern],
                                  capture_output=True, text=True, timeout=60)

        up, every, nope = probe("check:db_host"), probe("check:*"), probe("check:nope")
        unprefixed, everything = probe("vpn"), probe("*")
    assert up.returncode == 0 and up.stdout.startswith("ok    check:db_host"), up
    assert every.returncode == 1 and "FAIL  check:vpn" in every.stdout and "check:db_host" in every.stdout, every
    assert nope.returncode == 2 and "no [[checks]] named 'nope'" in nope.stderr, nope
    assert unprefixed.returncode == 2 and "lookout probe check:NAME" in unprefixed.stderr, unprefixed
    # Every probe: the checks run (no supervisord needed), then it says supervisord could not be asked.
    assert everything.returncode == 2 and "FAIL  check:vpn" in everything.stdout, everything
    assert "supervisord is not running?" in everything.stderr, everything


def test_a_misspelt_section_or_key_is_named_before_what_it_left_missing():
    """A new user: "[[check]]" was reported as a need naming no check, and a check without a kind
    as "checks[0].match" (checks have no match)."""
    for raw, said in (
            ({"check": [{"name": "vpn", "tcp": "h:1"}], "dependencies": [{"program": "x", "needs": ["check:vpn"]}]},
             "check: unknown key (did you mean 'checks'?)"),
            ({"checks": [{"name": "vpn"}]}, "checks[0]: no probe kind: exactly one of http, tcp, exec per [[checks]]"),
            ({"checks": [{"name": "vpn", "perod": "1s", "tcp": "h:1"}]}, "checks[0].perod: unknown key (did you mean"),
            ({"checks": [{"name": "my vpn", "tcp": "h:1"}]}, "checks[0].name: 'my vpn': letters, digits")):
        with pytest.raises(ConfigError) as err:
            parse_config(raw)
        assert said in str(err.value), str(err.value)


@pytest.mark.parametrize("kind, why", [
    ({"tcp": "admin:s3cr3tpw@db:5432"}, "checks[0].tcp: expected \"host:port\" only"),
    ({"http": {"url": "http://admin:s3cr3tpw@/x"}}, "checks[0].http.url: has no host"),
    ({"http": {"url": "http://admin:s3cr3tpw@db:99999/x"}}, "checks[0].http.url: its port is not a number"),
])
def test_a_check_address_that_can_only_fail_is_a_config_error_without_its_password(kind, why):  # noqa: ANN001
    """An attacker: these passed, then failed at run time (or quietly asked 127.0.0.1), and the tcp
    form printed its password."""
    with pytest.raises(ConfigError) as err:
        parse_config({"checks": [{"name": "db", **kind}]})
    assert why in str(err.value) and "s3cr3tpw" not in str(err.value), str(err.value)


def test_the_readers_know_a_need_not_stable_yet_as_the_listener_does():
    """lookout deps said a need was ready and fine while the listener held it the likely cause (a
    crash a moment ago): the readers take "not stable yet" from the store too."""
    from lookout.dependency_view import program_needs
    from lookout.snapshot import ProcessSnapshot

    config = parse_config({"dependencies": [{"program": "risk", "needs": ["db"]}]})
    snaps = [ProcessSnapshot(n, n, "RUNNING", 1, 0, 9, 1, 0, "") for n in ("db", "risk")]
    need = program_needs(config, snaps, {}, [], {}, unsettled=frozenset({"db:db"}))["risk:risk"].needs[0]
    assert (need.ready, need.failing, need.said) == (True, True, "RUNNING (not stable yet)")
