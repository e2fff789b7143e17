"""Issue 21, cases 2 and 3: one target that hangs or answers late must silence nobody and must
not get the same alert again and again. Each target sends on its own lane with one deadline for
the whole request; a request its host took in full and did not answer in time is "maybe
delivered": sent again, 3 copies at most, and history and `lookout status` say so; a target
that hangs counts as failing (status, /metrics, the dead man's switch).

The sender's decisions first (lanes that answer as a test scripts), then against a real
supervisord with real webhooks that trickle their answer or answer after 15 s."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from lookout.commands.status_delivery import delivery_lines
from lookout.config.load import parse_config
from lookout.listener.notifier.lanes import Job, Result, Verdict
from lookout.listener.notifier.sender import MAX_COPIES, OutboxSender
from lookout.listener.notifier.text_target import TextTarget
from lookout.listener.notifier.worker import Notifier
from lookout.listener.store.delivery import DeliveryStore
from lookout.listener.store.schema import connect

from .conftest import fast_alerts
from .harness import Webhook, about, free_port, stays, wait_for

# ---- the sender's decisions --------------------------------------------------------------

ERRORS = {Verdict.MAYBE: "no answer within 10s to a request its host took in full",
          Verdict.TIMED_OUT: "no answer within 10s", Verdict.FAILED: "HTTP 500", Verdict.SENT: ""}


@dataclass(frozen=True)
class FakeTarget(TextTarget):
    key: str
    label: str = ""
    scheme: str = "json"
    tags = frozenset()

    def wants(self, tags: object) -> bool:
        return True


class ScriptedLanes:
    """Lanes whose sends answer at once, with the verdicts a test scripts per target (then SENT)."""

    def __init__(self, **script: list[Verdict]) -> None:
        self.script, self.sent, self._answers = script, [], []

    def idle(self, key: str) -> bool:
        return True

    def waiting(self) -> bool:
        return False

    def submit(self, job: Job) -> None:
        todo = self.script.get(job.target_key) or []
        verdict = todo.pop(0) if todo else Verdict.SENT
        self.sent.append((job.target_key, job.title, verdict))
        took = 10.0 if verdict in (Verdict.MAYBE, Verdict.TIMED_OUT) else 0.01
        self._answers.append(Result(job, verdict, ERRORS[verdict], took))

    def results(self) -> list[Result]:
        out, self._answers = self._answers, []
        return out


def outbox(tmp_path, **script: list[Verdict]):  # noqa: ANN201
    """A store with alert 1 (feed), a sender over scripted lanes, and a way to write and run."""
    config = parse_config({"state": {"path": str(tmp_path / "db")},
                           "notify": {"retry_initial": "2s", "retry_max": "10s", "retry_for": "1d"}})
    store = DeliveryStore(connect(config.state_path))
    store.conn.execute("INSERT INTO alerts(namespec, kind, severity, opened_at, updated_at) "
                       "VALUES ('feed:feed', 'crashed', 'warning', 100, 100)")
    clock = [100.0]
    lanes = ScriptedLanes(**script)
    targets = {key: FakeTarget(key, f"json://{key}.example.com") for key in script}
    sender = OutboxSender(config.notify, targets, lambda: clock[0], threading.Event(), lanes)  # type: ignore[arg-type]

    def write(key: str, title: str) -> None:
        store.dispatch([], [{"target_key": key, "target_label": targets[key].label, "scheme": "json", "title": title,
                             "body": title, "notify_type": "warning", "about": about("a1")}], clock[0])

    def run(until: float) -> None:
        while clock[0] < until:
            sender.send_due(store)
            clock[0] += 0.5

    return config, store, sender, lanes, write, run, clock


def history(store: DeliveryStore) -> list[str]:
    return [r[0] for r in store.conn.execute("SELECT detail FROM history WHERE kind = 'notify' ORDER BY id")]


def test_a_message_never_answered_in_time_goes_out_three_times_at_most(tmp_path):
    _, store, sender, lanes, write, run, _ = outbox(tmp_path, hook=[Verdict.MAYBE] * 10)
    write("hook", "[WARNING] feed crashed")
    run(1000)
    assert [v for _, _, v in lanes.sent] == [Verdict.MAYBE] * MAX_COPIES == [Verdict.MAYBE] * 3
    row = store.conn.execute("SELECT status, copies, attempts FROM outbox").fetchone()
    assert tuple(row) == ("maybe", 3, 3)
    said = history(store)
    assert said[0].startswith("maybe delivered to json://hook.example.com (no answer within 10s") and \
        said[0].endswith("copy 1 of at most 3"), said
    assert said[-1] == ("maybe delivered to json://hook.example.com: 3 copies sent, none answered in time; "
                        "not sent again")
    stats = dict(store.conn.execute("SELECT result, count FROM notification_stats").fetchall())
    assert stats == {"maybe_delivered": 3}


def test_a_copy_answered_in_time_ends_it_and_history_says_how_many_it_may_have(tmp_path):
    _, store, _, lanes, write, run, _ = outbox(tmp_path, hook=[Verdict.MAYBE, Verdict.MAYBE])
    write("hook", "[WARNING] feed crashed")
    run(200)
    assert len(lanes.sent) == 3 and store.conn.execute("SELECT status FROM outbox").fetchone()[0] == "sent"
    assert history(store)[-1] == "sent to json://hook.example.com (after 2 unanswered copies: it may have it 3 times)"


def test_a_request_that_never_got_through_is_no_copy_and_is_retried_as_before(tmp_path):
    _, store, _, lanes, write, run, _ = outbox(tmp_path, hook=[Verdict.TIMED_OUT] * 5 + [Verdict.FAILED])
    write("hook", "[WARNING] feed crashed")
    run(600)
    assert len(lanes.sent) == 7
    assert tuple(store.conn.execute("SELECT status, copies FROM outbox").fetchone()) == ("sent", 0)
    stats = dict(store.conn.execute("SELECT result, count FROM notification_stats").fetchall())
    assert stats == {"timeout": 5, "failure": 1, "success": 1}


def test_a_hanging_target_fails_until_it_answers_in_time_and_a_restart_remembers_it(tmp_path):
    config, store, sender, lanes, write, run, clock = outbox(tmp_path, hook=[Verdict.MAYBE] * 3, mail=[])
    write("hook", "[WARNING] feed crashed")
    write("mail", "[WARNING] feed crashed")
    run(101)
    assert sender.hanging_since == 90.0  # its first send began then (10 s before the cut)
    run(300)  # given up after 3 copies: nothing is retried any more, but the target still hangs
    assert store.failing_since() is None and sender.hanging_since == 90.0
    lines = delivery_lines(config, clock[0])
    assert len(lines) == 1 and lines[0].startswith("DELIVERY json://hook.example.com: failing for 3m30s: no answer "
                                                    "within 10s to a request its host took in full; it hangs"), lines
    assert "1 message(s) maybe delivered" in lines[0]
    store.conn.execute("UPDATE outbox SET status = 'pending', sending_since = 250 WHERE target_key = 'mail'")
    again = OutboxSender(config.notify, sender.by_key, lambda: clock[0], threading.Event(), ScriptedLanes())
    again.send_due(store)  # a new listener: the hang is remembered, the send left out counts as a copy
    assert again.hanging_since == 90.0
    mail = store.conn.execute("SELECT copies, status FROM outbox WHERE target_key = 'mail'").fetchone()
    assert tuple(mail) == (1, "sent")
    write("hook", "[RESOLVED] feed is running again")
    run(clock[0] + 1)
    assert sender.hanging_since is None and delivery_lines(config, clock[0]) == []


def test_a_clock_stepped_back_moves_the_start_of_a_hang_with_it(tmp_path):
    _, store, sender, _, write, run, clock = outbox(tmp_path, hook=[Verdict.TIMED_OUT] * 3)
    write("hook", "[WARNING] feed crashed")
    run(101)
    assert sender.hanging_since == 90.0
    clock[0] -= 3600  # NTP steps the clock back an hour: the hang is 10 s old, not 1 h in the future
    run(clock[0] + 1)
    assert abs(sender.hanging_since - (90.0 - 3600)) <= 1.0  # (the step is measured from the last pass)


def test_the_notifier_counts_a_hanging_target_as_failing(tmp_path):
    config = parse_config({"state": {"path": str(tmp_path / "db")}, "notify": {"retry_for": "1m"}})
    target = FakeTarget("hook", "json://hook.example.com")
    clock = [100.0]
    notifier = Notifier(config, [target], None, clock=lambda: clock[0])  # type: ignore[list-item]
    notifier.lanes = notifier.sender.lanes = ScriptedLanes(hook=[Verdict.MAYBE] * 3)  # type: ignore[assignment]
    notifier.direct("LookoutStoreUnwritable", "lookout cannot write its store", "disk full", "critical")
    while clock[0] < 200:
        notifier.step(clock[0])
        clock[0] += 0.5
    assert [v for _, _, v in notifier.lanes.sent] == [Verdict.MAYBE] * 3  # from memory too: 3 copies at most
    assert notifier.failing_since == 90.0  # what the dead man's switch's fail form looks at


def test_with_real_lanes_every_message_goes_out_once(tmp_path):
    """The notifier thread and the lanes' threads hand messages and answers back and forth: a
    message whose answer is not recorded yet is never handed out again."""
    from lookout.listener.notifier.apprise_target import build_targets

    hook = Webhook().start()
    config = parse_config({"state": {"path": str(tmp_path / "db")}, "notify": {"urls": [hook.url()]}})
    targets, _ = build_targets(config.notify)
    notifier = Notifier(config, targets, None)
    store = DeliveryStore(connect(config.state_path))
    titles = [f"[WARNING] p{i} crashed" for i in range(150)]
    notifier.start()
    try:
        for i, title in enumerate(titles):
            store.dispatch([], [{"target_key": targets[0].key, "target_label": targets[0].label, "scheme": "json",
                                 "title": title, "body": title, "notify_type": "warning", "about": about(f"a{i}")}],
                           time.time())
            notifier.wake()
        wait_for(lambda: len(hook.messages) >= len(titles), 60, "every message sent")
        stays(lambda: len(hook.messages) == len(titles), 1.5, "no message twice")
        assert sorted(m.title for m in hook.messages) == sorted(titles)
        assert store.conn.execute("SELECT COUNT(*) FROM outbox WHERE status != 'sent'").fetchone()[0] == 0
    finally:
        notifier.stop()
        hook.stop()


def test_test_alert_reports_a_hanging_target_at_its_deadline_and_the_others_at_once(tmp_path):
    from .test_messages import lookout as lookout_command
    from .test_messages import write_config

    stuck, hook = Webhook(trickle=1.0).start(), Webhook().start()
    try:
        config = write_config(tmp_path, notify={"urls": [stuck.url(), hook.url()], "timeout": "2s"})
        started = time.monotonic()
        result = lookout_command("test-alert", config=config)
        took = time.monotonic() - started
    finally:
        stuck.stop()
        hook.stop()
    assert result.returncode == 1 and hook.matching("[TEST] lookout"), result.stdout
    assert f"ok      json://127.0.0.1:{hook.port}" in result.stdout
    assert f"FAILED  json://127.0.0.1:{stuck.port}: no answer within 2s to a request its host took in full (maybe " \
           "delivered)" in result.stdout, result.stdout
    assert took < 2.0 + 10, took  # the deadline (and a slow start of a Python process), not 1 s per byte


# ---- against a real supervisord -----------------------------------------------------------

FEED = "[program:feed]\ncommand=sleep 1000\nstartsecs=1\nautorestart=true\n"
SECRET = "S3cr3tTrickle"
CHECK = "/ping/5f0b9c2e-1b2c-4d5e-8f90-123456789abc"


class _Checker(BaseHTTPRequestHandler):
    calls: list[str]

    def do_GET(self) -> None:  # noqa: N802
        self.calls.append(self.path)
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"OK")

    def log_message(self, *args: object) -> None:
        pass


def crash(sup) -> float:  # noqa: ANN001
    """SIGKILL feed once it runs and the listener knows its pid: supervisord restarts it."""
    wait_for(lambda: sup.state_of("feed:feed") == "RUNNING" and (sup.process_row("feed:feed") or {}).get("pid")
             == sup.info("feed:feed")["pid"], 20, "feed running, its pid known to the listener")
    at = time.time()
    os.kill(sup.info("feed:feed")["pid"], signal.SIGKILL)
    return at


def lookout(sup, *args: str) -> subprocess.CompletedProcess:  # noqa: ANN001
    return subprocess.run([sys.executable, "-m", "lookout", "-c", str(sup.config_path), *args],
                          capture_output=True, text=True, timeout=60)


def test_a_trickling_target_silences_nobody_and_is_shown_failing(supervisor_factory, webhook, exporter_factory):
    stuck = Webhook(trickle=2.0).start()  # reads the POST, answers one byte every 2 s: a stuck proxy
    calls: list[str] = []
    checker = ThreadingHTTPServer(("127.0.0.1", free_port()), type("H", (_Checker,), {"calls": calls}))
    threading.Thread(target=checker.serve_forever, daemon=True).start()
    settings = fast_alerts(webhook)  # group_wait 1s
    settings["notify"]["urls"] = [f"json://hook:{SECRET}@127.0.0.1:{stuck.port}/hook", webhook.url()]
    settings["deadman"] = {"url": f"http://127.0.0.1:{checker.server_address[1]}{CHECK}", "interval": "1s",
                           "fail_after": "10s"}
    sup = supervisor_factory(FEED, settings).start()
    exporter = exporter_factory(sup)
    within = 1.0 + 2.0  # group_wait + 2 s
    orphans: list[int] = []
    try:
        first = crash(sup)
        got = webhook.wait("feed", "crashed and was restarted", timeout=within + 5)[0]
        assert got.at - first <= within, f"crash 1 reached the healthy target {got.at - first:.1f}s after it"
        wait_for(lambda: time.time() >= first + 15, 20, "15 s after the first crash", interval=0.5)
        second = crash(sup)
        got = webhook.wait("feed", "crashed and was restarted", count=2, timeout=within + 5)[1]
        assert got.at - second <= within, f"crash 2 reached the healthy target {got.at - second:.1f}s after it"
        status = lookout(sup, "status")
        line = next((x for x in status.stdout.splitlines() if x.startswith("DELIVERY")), "")
        assert line.startswith(f"DELIVERY json://127.0.0.1:{stuck.port}: ") and "it hangs" in line, status.stdout
        assert SECRET not in status.stdout
        assert f"127.0.0.1:{webhook.port}" not in status.stdout  # the healthy one is not failing
        def shown_failing() -> dict | None:  # the exporter reads the store on its own poll: a moment later
            m = exporter.metrics()
            failing = m.get("lookout_notify_target_failing", {})
            return m if (failing.get((("target", f"json://127.0.0.1:{stuck.port}"),)) == 1
                         and failing.get((("target", f"json://127.0.0.1:{webhook.port}"),)) == 0) else None
        metrics = wait_for(shown_failing, 10, "the trickling target failing in /metrics, the healthy one not")
        assert metrics["lookout_notifications_total"][(("result", "maybe_delivered"), ("target", "json"))] >= 1
        assert SECRET not in exporter.get("/metrics")[1]
        wait_for(lambda: CHECK + "/fail" in calls, 15, "the dead man's switch told that lookout is degraded")
        orphans = [pid for pid in sup.children() if pid != sup.listener_pid()]
        sup.invariants = False
        at = time.time()
        sup.proc.kill()  # supervisord dies: the listener's last words must reach the healthy target
        sup.proc.wait(10)
        died = webhook.wait("died without shutting down", timeout=within + 5)[0]
        assert died.at - at <= within, f"'supervisord died' reached the healthy target {died.at - at:.1f}s after"
        assert SECRET not in sup.listener_output()
    finally:
        for pid in orphans:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        stuck.stop()
        checker.shutdown()


@pytest.mark.long
def test_a_target_answering_after_15s_gets_three_copies_at_most(supervisor_factory, webhook):
    slow = Webhook(delay=15).start()
    settings = fast_alerts(webhook)
    settings["notify"]["urls"] = [slow.url(), webhook.url()]
    settings["notify"]["timeout"] = "5s"
    sup = supervisor_factory(FEED, settings).start()
    try:
        crash(sup)
        webhook.wait("feed", "crashed and was restarted")
        wait_for(lambda: len(slow.matching("crashed and was restarted")) >= 1, 10, "the slow target's first copy")

        def hangs() -> bool:
            return any(x.startswith(f"DELIVERY json://127.0.0.1:{slow.port}: ") and "it hangs" in x
                       for x in lookout(sup, "status").stdout.splitlines())

        wait_for(hangs, 15, "the slow target shown failing once its first send timed out", interval=0.5)
        wait_for(lambda: "not sent again" in lookout(sup, "history", "feed").stdout, 40,
                 "the crash given up on as maybe delivered")
        stays(lambda: len(slow.matching("crashed and was restarted")) == 3, 10, "three copies, no fourth")
        told = lookout(sup, "history", "feed").stdout
        assert f"maybe delivered to json://127.0.0.1:{slow.port}" in told and "copy 2 of at most 3" in told, told
        assert f"sent to json://127.0.0.1:{webhook.port}" in told
        assert "maybe delivered" in lookout(sup, "status").stdout
        with sup.db() as c:
            copies = c.execute("SELECT MAX(copies) FROM outbox").fetchone()[0]
        assert copies <= 3 and len(slow.matching("running again")) <= 3 and slow.posts <= 6
    finally:
        slow.stop()


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("unshare") or not shutil.which("nsenter"),
                    reason="needs root, unshare and nsenter for a private tmpfs")
def test_store_trouble_reaches_the_healthy_target_while_another_hangs(supervisor_factory, webhook, tmp_path):
    """Messages from memory (the store cannot be written) take the lanes too: the healthy target
    hears at once while the trickling one is still busy with the crash before."""
    from .test_store_faults import PROGRAMS
    from .test_store_faults import crash as cue

    stuck = Webhook(trickle=2.0).start()
    state_dir = tmp_path / "s0" / "state"
    state_dir.mkdir(parents=True)
    wrapper = ["unshare", "--mount", "--propagation", "private", "sh", "-c",
               f'mount -t tmpfs -o size=3m tmpfs "{state_dir}" && exec "$@"', "sh"]
    settings = fast_alerts(webhook)
    settings["notify"]["urls"] = [stuck.url(), webhook.url()]
    sup = supervisor_factory(PROGRAMS, settings, wrapper=wrapper, state_path=state_dir / "lookout.db")
    try:
        sup.start()
        cue(sup, 0)
        webhook.wait("c0 crashed", timeout=20)
        wait_for(lambda: stuck.posts == 1, 10, "the stuck target busy with it (10 s)")
        subprocess.run(["nsenter", "-t", str(sup.proc.pid), "-m", "dd", "if=/dev/zero", f"of={state_dir}/filler",
                        "bs=64k"], capture_output=True, timeout=30)
        at = time.time()
        cue(sup, 1)
        told = webhook.wait("cannot write its store", timeout=10)[0]
        assert told.at - at <= 3.0, f"told {told.at - at:.1f}s after the crash it could not commit"
        subprocess.run(["nsenter", "-t", str(sup.proc.pid), "-m", "rm", "-f", f"{state_dir}/filler"],
                       capture_output=True, timeout=30)
        webhook.wait("can write its store again", timeout=30)
        webhook.wait("c1 crashed", timeout=30)
    finally:
        stuck.stop()
