"""Issue 14, "alerts a person reads at 3 a.m.": log tails with repeats folded and without lookout's own
probe requests, probe failures that name their target (never its credentials), grouped subjects that
name the processes, FATAL that counts failed start attempts, `lookout history` in time order."""

from __future__ import annotations

import json
import re
import socket
import sqlite3

from lookout.commands.history import history_command
from lookout.config import Config
from lookout.listener.notifier.render import Enrichment, firing_block, render
from lookout.listener.probes.checks import Check, command_name, shown_url
from lookout.listener.rules.health import describe
from lookout.listener.rules.models import Alert, ProbeResult, ProbeState, ProcessRecord
from lookout.listener.store.delivery import PendingNotice
from lookout.listener.store.schema import connect
from lookout.text import last_lines, tail

from .conftest import fast_alerts
from .test_probe_io import TARGET, probe

NOW = 1_800_000_000.0


def notice(namespec: str, kind: str = "crashed", severity: str = "warning", *, nid: int = 1,
           proc: ProcessRecord | None = None, **alert: object) -> PendingNotice:
    a = Alert(namespec, kind, severity, NOW - 30, NOW - 30, id=nid, **alert)  # type: ignore[arg-type]
    if proc is None:
        group, _, name = namespec.partition(":")
        proc = ProcessRecord(group, name, failures=[NOW - 30], failing_since=NOW - 30)
    return PendingNotice(nid, "firing", NOW - 1, a, proc)


def body(n: PendingNotice, tails: dict[str, str] | None = None, lines: int = 20, markdown: bool = False) -> str:
    return "\n".join(firing_block(n, "vm", NOW, Enrichment(tails=tails or {}), lines, markdown))


# ---- 1. repeats folded, the newest lines kept, lookout's own probe requests left out ----------


def test_the_same_two_lines_ten_times_are_shown_once_with_how_often():
    text = "feed: starting\n" + "ERROR feed: connection lost\nINFO feed: reconnecting\n" * 10 + "feed: giving up\n"
    assert last_lines(text, 20) == ["feed: starting", "ERROR feed: connection lost", "INFO feed: reconnecting",
                                    "... the 2 lines above, 10 times in a row", "feed: giving up"]
    assert tail(text, 20).covered == 22
    assert last_lines("boot\n" + "retry\n" * 7, 20) == ["boot", "retry", "... the line above, 7 times in a row"]
    assert last_lines("a\nb\nb\n", 20) == ["a", "b", "b"]  # folding two single lines saves nothing


def test_repeats_that_differ_only_in_their_times_fold_and_the_newest_copy_is_shown():
    text = "".join(f"2026-11-29 03:02:{s:02d},{s:03d} ERROR feed: lost\n"
                   f"2026-11-29 03:02:{s:02d},{s + 1:03d} INFO retry\n" for s in range(10))
    shown = last_lines(text, 20)
    assert shown == ["2026-11-29 03:02:09,009 ERROR feed: lost", "2026-11-29 03:02:09,010 INFO retry",
                     "... the 2 lines above, 10 times in a row since 2026-11-29 03:02:00,000"]


def test_the_newest_line_is_always_shown_and_older_ones_give_way():
    text = "".join(f"line {i}\n" for i in range(30)) + "x\ny\n" * 5 + "newest\n"
    shown = last_lines(text, 5)
    assert shown == ["line 29", "x", "y", "... the 2 lines above, 5 times in a row", "newest"]
    assert len(last_lines(text, 3)) <= 3 and last_lines(text, 3)[-1] == "newest"
    assert last_lines("a\nb\n" * 10, 1) == ["b"]  # no room for a block and its note: no folding


def test_folded_tail_and_evidence_in_an_alert_plain_and_markdown():
    n = notice("feed:feed", proc=ProcessRecord("feed", "feed", failures=[NOW - 30], failing_since=NOW - 30),
               evidence="Thread 1 waiting\n" * 12)
    text = "started\n" + "ERROR feed: connection lost\n" * 19
    plain = body(n, {"feed:feed": text})
    assert "  last 20 line(s) of its log:\n    | started\n    | ERROR feed: connection lost\n" \
           "    | ... the line above, 19 times in a row" in plain, plain
    assert "    | Thread 1 waiting\n    | ... the line above, 12 times in a row" in plain
    chat = body(n, {"feed:feed": text}, markdown=True)
    assert "```\nstarted\nERROR feed: connection lost\n... the line above, 19 times in a row\n```" in chat, chat


ACCESS = '127.0.0.1 - - [29/Nov/2026:03:02:{s:02d} +0000] "GET /healthz?token=x HTTP/1.1" 503 4 "-" "{agent}"\n'


def test_lookout_s_own_probe_requests_are_left_out_and_said_so():
    """An http probe's alert whose tail is the service's access log of the probe's requests: the
    lines that are requests for the probed path (or carry lookout's user agent) are left out."""
    probed = notice("web:web", "unhealthy", family="health:http",
                    detail="GET http://127.0.0.1:8080/healthz: HTTP 503 (body: 'down') 3 times in a row over 3s")
    text = ("web listening on 8080\nERROR /healthz handler: database is down\n"
            + "".join(ACCESS.format(s=s, agent="kube-probe/1.29" if s % 2 else "lookout-probe") for s in range(20))
            + '127.0.0.1 - - [29/Nov/2026:03:02:30 +0000] "GET /orders HTTP/1.1" 200 10 "-" "curl"\n')
    shown = body(probed, {"web:web": text})
    assert "last 23 line(s) of its log (20 of them lookout's own probe requests, left out):\n" \
           "    | web listening on 8080\n    | ERROR /healthz handler: database is down\n" in shown, shown
    assert '"GET /orders HTTP/1.1" 200' in shown and "lookout-probe" not in shown and "kube-probe" not in shown
    # Another alert of a process probed on another path: lookout's user agent marks its requests.
    crashed = "\n".join(firing_block(notice("web:web"), "vm", NOW, Enrichment(tails={"web:web": text},
                                                                             probe_paths={"web:web": ("/ready",)}), 20))
    assert "(10 of them lookout's own probe requests, left out)" in crashed and "kube-probe" in crashed
    # A program lookout does not probe over HTTP keeps every line, lookout's user agent or not.
    assert "left out" not in body(notice("web:web"), {"web:web": text})
    only = body(probed, {"web:web": "".join(ACCESS.format(s=s, agent="lookout-probe") for s in range(5))})
    assert "  last 5 line(s) of its log: only lookout's own probe requests" in only, only


# ---- 2. a probe failure names its target, never its credentials --------------------------------


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_probe_failures_name_the_url_address_or_command_without_credentials():
    port = closed_port()
    check = Check(None)
    http = check.run(probe(http={"url": f"http://monitor:s3cret-pw@127.0.0.1:{port}/healthz?token=abc123"}),
                     TARGET, {})
    assert http.detail == f"GET http://127.0.0.1:{port}/healthz: connection refused", http.detail
    tcp = check.run(probe(tcp=f"127.0.0.1:{port}"), TARGET, {})
    assert tcp.detail == f"tcp 127.0.0.1:{port}: connection refused", tcp.detail
    cmd = check.run(probe(exec=["sh", "-c", "echo 'replica lag 40s'; exit 2"]), TARGET, {})
    assert cmd.detail == "sh -c 'echo …': exit status 2 (output: 'replica lag 40s')", cmd.detail
    assert shown_url("https", "::1", 8443, "") == "https://[::1]:8443/"
    assert command_name(["/opt/bin/check_feed.sh", "--max-lag", "5"]) == "check_feed.sh"
    assert command_name(["redis-cli", "-a", "PASSWORD", "ping"]) == "redis-cli"  # arguments may be secrets
    assert command_name(["/usr/bin/python3", "-u", "/opt/checks/feed.py", "--key", "K"]) == "python3 feed.py"


def test_the_alert_reads_which_endpoint_failed_and_how_often():
    spec = probe(http={"url": "http://u:p@127.0.0.1:8080/healthz?k=v"}, timeout="2s", period="10s")
    detail = "GET http://127.0.0.1:8080/healthz: timed out after 2s reading the response headers (12 bytes in)"
    state = ProbeState("web:web", "http", consecutive_failures=3, first_failure_at=NOW - 20)
    said = describe(spec, state, ProbeResult("web:web", "http", False, detail, NOW, 2.0))
    assert said == detail + " 3 times in a row over 30s"


# ---- 3. a grouped subject names the first processes --------------------------------------------


def titles(*notices: PendingNotice) -> str:
    return render(list(notices), "vm", NOW, Enrichment(), lines=5, max_detailed=10).title


def test_a_grouped_subject_names_the_first_processes_as_supervisorctl_does():
    fatal = [notice(ns, "fatal", "critical", nid=i) for i, ns in
             enumerate(("ghost:ghost", "trading:feed", "trading:quotes", "trading:orders", "trading:risk"), 1)]
    assert titles(*fatal) == "[CRITICAL] ghost, trading:feed and 3 more failing on vm"
    assert titles(*fatal[:3]) == "[CRITICAL] ghost, trading:feed and trading:quotes failing on vm"
    crashed = notice("flaky:flaky", nid=9)
    assert titles(crashed, fatal[1]) == "[CRITICAL] trading:feed and flaky failing on vm"  # the worst first
    healthy = notice("web:web", "unhealthy", nid=7, family="health:http", resolved_at=NOW, resolution="healthy again")
    resolved = PendingNotice(8, "resolved", NOW, healthy.alert, None)
    assert titles(crashed, resolved) == "[WARNING] flaky failing on vm"  # issue 23: one verb; the body says the rest
    body = render([crashed, resolved], "vm", NOW, Enrichment(), lines=5, max_detailed=10).body
    assert "\nAlso resolved: web\n" in body and body.index("flaky") < body.index("Also resolved: web")
    assert titles(resolved, PendingNotice(10, "resolved", NOW, fatal[0].alert, None)) == \
        "[RESOLVED] web and ghost resolved on vm"
    both = notice("web:web", "unhealthy", nid=11, family="health:http", detail="GET http://h/: HTTP 503")
    assert titles(notice("web:web", nid=12), both) == "[WARNING] web failing on vm"  # one process, two alerts


# ---- 4. FATAL counts the start attempts that failed, not restarts ------------------------------


def test_fatal_says_how_many_start_attempts_failed():
    never_ran = ProcessRecord("ghost", "ghost", state="FATAL", restarts=2, failures=[NOW - 6, NOW - 5, NOW - 3],
                              failing_since=NOW - 6)
    text = body(notice("ghost:ghost", "fatal", "critical", proc=never_ran))
    assert "; 3 start attempts failed in a row (startretries = 2)" in text and "restarted" not in text, text
    assert "failure(s) in the crash-loop window" not in text  # the same three failures
    # It ran, crashed, and its respawn and 2 retries failed: 3 attempts, 4 failures, restarts 7 -> 10.
    ran_first = ProcessRecord("feed", "feed", state="FATAL", restarts=10, failures=[NOW - 9, NOW - 6, NOW - 5, NOW - 3])
    text = body(notice("feed:feed", "fatal", "critical", proc=ran_first, restarts_at_open=7, previous_kind="crashed"))
    assert "4 failure(s) in the crash-loop window" in text and "3 start attempts failed in a row" in text, text
    found = ProcessRecord("old", "old", state="FATAL", restarts=0)  # found FATAL by a reconcile: attempts unseen
    text = body(notice("old:old", "fatal", "critical", proc=found, detail="can't find command 'old'"))
    assert "start attempt" not in text and "restarted" not in text and "supervisord says: can't find" in text, text
    crash = body(notice("flaky:flaky", proc=ProcessRecord("flaky", "flaky", restarts=4, failures=[NOW])))
    assert "restarted 4 time(s) in all" in crash  # crashes after RUNNING still count restarts


QUITTERS = """\
[program:ghost]
command=/nonexistent/lookout-ghost --serve
startretries=2

[group:trading]
programs=feed,quotes,orders

""" + "".join(f"""
[program:{name}]
command=sh -c 'echo "{name}: API_KEY is not set" >&2; exit 1'
startsecs=10
startretries=2
""" for name in ("feed", "quotes", "orders"))


def test_programs_that_never_started_in_one_message_against_supervisord(supervisor_factory, webhook):
    settings = fast_alerts(webhook)
    settings["alerts"]["group_wait"] = "3s"  # the four give up within milliseconds of each other: one message
    supervisor_factory(QUITTERS, settings).start()
    message = webhook.wait("gave up starting", timeout=30)[0]
    assert re.fullmatch(r"\[CRITICAL\] (ghost|trading:\w+), (ghost|trading:\w+) and 2 more failing on \S+",
                        message.title), message.title
    first, second = message.title.split("] ", 1)[1].split(" and ")[0].split(", ")
    assert message.text.index(f"{first} gave up") < message.text.index(f"{second} gave up")  # as in the body
    assert message.text.count("3 start attempts failed in a row (startretries = 2)") == 4, message.text
    assert "restarted" not in message.text
    assert "    | feed: API_KEY is not set\n    | ... the line above, 3 times in a row" in message.text


# ---- 5. `lookout history` in the order things happened ---------------------------------------


def test_history_lists_by_time_though_an_exit_is_stored_after_later_lines(tmp_path, capsys):
    """An exit's status comes from supervisord's log after the event, and is stored with the exit's
    own time: its row is inserted after rows that happened later. At one instant (the rows one
    event makes), the state change, then the exit, then what followed (alert, action) as inserted."""
    path = str(tmp_path / "lookout.db")
    conn = connect(path)
    t = NOW
    rows = [(t, "state", "EXITED (from RUNNING, unexpected, pid 42)"),
            (t, "alert", "crash_loop (critical), was crashed"),
            (t, "action", "lookout begins to stop it: crash-loop brake"),
            (t + 0.003, "state", "STARTING (from EXITED)"),
            (t + 1.0, "notify", "firing crash_loop queued for 1 target(s)"),
            (t, "exit", "exit status 3 after running 1.2s")]  # looked up later, stored with its time
    conn.executemany("INSERT INTO history(at, namespec, kind, detail) VALUES (?, 'flaky:flaky', ?, ?)", rows)
    conn.close()
    config = Config(state_path=path)
    order = ["state", "exit", "alert", "action", "state", "notify"]
    assert history_command(config, "flaky", 10 ** 9, as_json=False) == 0
    listed = [line.split(None, 3)[2] for line in capsys.readouterr().out.splitlines()[1:]]
    assert listed == order, listed
    assert history_command(config, "flaky", 10 ** 9, as_json=True) == 0
    assert [e["kind"] for e in json.loads(capsys.readouterr().out)] == order
    with sqlite3.connect(path) as check:  # what insertion order alone would show: the exit last
        assert [k for (k,) in check.execute("SELECT kind FROM history ORDER BY id")][-1] == "exit"


# ---- issue 23: a repeat crash is one short update; an update has no second tail ----------------


def test_a_repeat_crash_is_an_update_that_says_how_often_without_a_second_tail():
    proc = ProcessRecord("feed", "feed", failures=[NOW - 16, NOW - 8, NOW], failing_since=NOW - 16, restarts=3)
    crashed = notice("feed:feed", proc=proc)
    again = PendingNotice(2, "update", NOW, crashed.alert, proc, heard=True)
    shown = render([again], "vm", NOW, Enrichment(tails={"feed:feed": "feed: no route to exchange\n"}), lines=5,
                   max_detailed=10)
    assert shown.title == "[WARNING] Update: feed crashed again, 3 times in 16s on vm"
    assert "no route to exchange" not in shown.body  # its first page had the tail
    first = render([crashed], "vm", NOW, Enrichment(tails={"feed:feed": "feed: no route to exchange\n"}), lines=5,
                   max_detailed=10)
    assert "no route to exchange" in first.body


def test_an_update_carries_the_evidence_lookout_gathered_and_the_one_line_form_says_update():
    """Found by an attacker: evidence is attached at the end of lookout's action; when the page went out
    before it (a restart longer than ACTION_SETTLE), the update is the first to carry it. And past
    max_detailed, an update's one line said "crashed and was restarted" as if it were new."""
    proc = ProcessRecord("web", "web", failures=[NOW - 30], failing_since=NOW - 30)
    hung = notice("web:web", "unhealthy", nid=3, proc=proc, family="health:http", evidence="STACKDUMP-MARKER",
                  action_taken="restarted by lookout, 1st of 3 allowed in 1h")
    update = PendingNotice(4, "update", NOW, hung.alert, proc, heard=True)
    shown = render([update], "vm", NOW, Enrichment(tails={"web:web": "web: deadlock\n"}), lines=5, max_detailed=10)
    assert "STACKDUMP-MARKER" in shown.body and "deadlock" not in shown.body, shown.body
    crashes = []
    for i in range(3):
        p = ProcessRecord(f"w{i}", f"w{i}", failures=[NOW - 16, NOW], failing_since=NOW - 16)
        crashes.append(PendingNotice(10 + i, "update", NOW, notice(f"w{i}:w{i}", nid=10 + i, proc=p).alert, p,
                                     heard=True))
    body = render(crashes, "vm", NOW, Enrichment(), lines=5, max_detailed=1).body
    assert body.count("crashed again, 2 times in 16s") == 3 and "crashed and was restarted" not in body, body
