"""Issue 7's mechanisms, piece by piece: untrusted text is cleaned where it enters, hostile
XML-RPC answers become SupervisorUnavailable, and one bad item fails only itself."""

from __future__ import annotations

import logging
import os
import threading
import time
import xmlrpc.client
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from lookout.config import SupervisorSettings, parse_config
from lookout.listener.notifier.text_target import TextTarget
from lookout.listener.workers.inbox import Inbox
from lookout.listener.workers.log_reader import ProcessLogs, read_tail
from lookout.listener.workers.thread import ErrorLog
from lookout.listener.workers.watcher import Snapshot, SupervisorWatcher
from lookout.rpc import SupervisorClient, SupervisorUnavailable
from lookout.text import clean, clean_xml

from .harness import wait_for
from .test_listener_unit import feed, make_listener
from .test_protocol import frame

# ---- text ------------------------------------------------------------------------------


def test_clean_removes_escapes_drops_nul_and_shows_controls():
    raw = b"\x1b[1;31mERROR\x1b[0m lost \x00feed\x07 \x1b]0;title\x07ok\r\nnext\rover \xff\xfe end \xe2\x80\xae"
    text = clean(raw)
    assert text == "ERROR lost feed\u2407 ok\nnext\nover \ufffd\ufffd end \ufffd"
    assert clean("tab\tand\nnewline stay") == "tab\tand\nnewline stay"
    assert clean("\ud800 lone surrogate") == "\ufffd lone surrogate"
    long = clean("x" * 5000)
    assert long.startswith("x" * 2000) and "[3000 more characters]" in long
    assert clean("漢字 and 🚀 stay") == "漢字 and 🚀 stay"


def test_clean_xml_makes_supervisord_answers_parseable():
    body = ("<?xml version='1.0'?><methodResponse><params><param><value><string>"
            "\x1b[31mred\x1b[0m nul\x00 bell\x07 \ufffe</string></value></param></params></methodResponse>").encode()
    with pytest.raises(Exception):  # noqa: B017 - expat's error type varies
        xmlrpc.client.loads(body)
    (value,), _ = xmlrpc.client.loads(clean_xml(body))
    assert value == "\u241b[31mred\u241b[0m nul\u2400 bell\u2407 \ufffd"  # nothing dropped: names stay apart
    assert clean(value) == "red nul\u2400 bell\u2407 \ufffd"  # and the escape sequences go for humans


# ---- XML-RPC answers -------------------------------------------------------------------


class FakeSupervisord:
    """An HTTP server answering every XML-RPC call with the bytes it is given."""

    def __init__(self) -> None:
        self.answer = b""
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                self.send_response(200)
                self.send_header("Content-Type", "text/xml")
                self.send_header("Content-Length", str(len(fake.answer)))
                self.end_headers()
                self.wfile.write(fake.answer)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.client = SupervisorClient(SupervisorSettings(serverurl=f"http://127.0.0.1:{self.server.server_port}",
                                                          timeout=5))

    def returns(self, value: object) -> None:
        self.answer = xmlrpc.client.dumps((value,), methodresponse=True).encode()


@pytest.fixture
def fake_supervisord():
    fake = FakeSupervisord()
    yield fake
    fake.server.shutdown()


GOOD = {"group": "g", "name": "n", "statename": "RUNNING", "start": 1, "stop": 0, "now": 2, "pid": 5,
        "exitstatus": 0, "spawnerr": "", "stdout_logfile": "/tmp/o", "stderr_logfile": "/tmp/e"}


def test_malformed_answers_are_supervisor_unavailable(fake_supervisord):
    fake = fake_supervisord
    for bad in (b"<not xml", b"<?xml version='1.0'?><methodResponse><params><param><value><int>12x</int></value>"
                b"</param></params></methodResponse>", b""):
        fake.answer = bad
        with pytest.raises(SupervisorUnavailable, match="malformed|answer"):
            fake.client.call("supervisor.getState")
    fake.returns("not a list")
    with pytest.raises(SupervisorUnavailable, match="not a list"):
        fake.client.all_process_info()
    fake.returns([GOOD, {"name": "x"}, "junk", {**GOOD, "name": "m", "pid": "12"}])
    assert [s.namespec for s in fake.client.all_process_info()] == ["g:n"]
    fake.returns([1, 2])
    with pytest.raises(SupervisorUnavailable, match="multicall"):
        fake.client.multicall([("supervisor.getState", ())])


def test_control_characters_in_answers_are_read(fake_supervisord):
    fake = fake_supervisord
    fake.answer = xmlrpc.client.dumps(("\x1b[32mgreen\x1b[0m \x00done",), methodresponse=True).encode()
    answer = fake.client.call("supervisor.readLog", -100, 0)
    assert answer == "\u241b[32mgreen\u241b[0m \u2400done" and clean(answer) == "green \u2400done"


def test_log_tail_from_files_across_rotation(tmp_path, fake_supervisord):
    log_file = tmp_path / "p.log"
    (tmp_path / "p.log.1").write_bytes(b"old line 1\nold line 2\n")
    log_file.write_bytes(b"\xe6\xbc\xa2\xe5\xad\x97 \xff bad byte\n\x1b[31mred\x1b[0m\n")
    assert read_tail(str(log_file), 1 << 16).startswith(b"old line 1")
    logs = ProcessLogs(fake_supervisord.client)
    fake_supervisord.returns({**GOOD, "stderr_logfile": str(log_file), "stdout_logfile": ""})
    text, problem = logs.tail("g:n")
    assert problem == "" and text.endswith("漢字 \ufffd bad byte\nred\n") and "old line 2" in text
    assert read_tail(str(log_file), 8) == b"red\x1b[0m\n"  # a line cut in half is dropped


# ---- one bad item fails only itself ------------------------------------------------------


def test_error_log_reports_once_then_counts():
    now = [0.0]
    records: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record.getMessage())

    logger = logging.getLogger("test.errorlog")
    logger.addHandler(Collect())
    errors = ErrorLog(logger, every=60, clock=lambda: now[0])
    for t in range(0, 130):
        now[0] = float(t)
        errors.report("k", "stage failed: %s", "boom", exc_info=False)
    assert records[0] == "stage failed: boom"
    assert len(records) == 3 and "59 more time(s)" in records[1]


class FlakyClient:
    """getAllProcessInfo raises an unexpected error once, then answers."""

    def __init__(self) -> None:
        self.calls = 0

    def all_process_info(self):  # noqa: ANN201
        self.calls += 1
        if self.calls == 1:
            raise KeyError("a bug on one answer")
        return []

    def multicall(self, calls):  # noqa: ANN001, ANN201
        return ["4.3.0", "test", os.getpid()]


def test_watcher_survives_an_exception_and_carries_on():
    r, w = os.pipe()
    client = FlakyClient()
    inbox = Inbox(w, b"w")
    watcher = SupervisorWatcher(client, ProcessLogs(client), inbox)  # type: ignore[arg-type]
    watcher.start()
    watcher.reconcile("first")
    wait_for(lambda: client.calls == 1, 5, "first reconcile")
    watcher.reconcile("second")
    results = wait_for(lambda: inbox.drain(), 10, "a snapshot after the failure")
    assert isinstance(results[0], Snapshot) and watcher.thread.is_alive()


def test_a_dead_worker_thread_makes_the_listener_exit_1(tmp_path, caplog):
    listener, pipes = make_listener(tmp_path)

    def explode() -> None:
        raise RuntimeError("bug outside any item")

    listener.notifier.thread._work = explode  # type: ignore[attr-defined]
    started = time.monotonic()
    assert listener.run() == 1
    assert time.monotonic() - started < 5
    assert "worker thread lookout-notifier died (RuntimeError: bug outside any item)" in caplog.text


def test_a_task_dying_in_a_worker_pool_makes_the_listener_exit_1(tmp_path, caplog):
    """The probe and action pools run tasks, not one long loop: a task that raises past its own
    catch (a bug) would vanish into a future nobody reads, its step never answered. The loop sees
    it like a dead thread."""
    listener, pipes = make_listener(tmp_path)

    def explode() -> None:
        raise RuntimeError("bug past the step's own catch")

    listener.health.executor.pool.submit(explode)
    started = time.monotonic()
    assert listener.run() == 1
    assert time.monotonic() - started < 5
    assert "worker pool lookout-remediate died (RuntimeError: bug past the step's own catch)" in caplog.text


def test_malformed_event_still_advances_the_stream(tmp_path, caplog):
    listener, pipes = make_listener(tmp_path)
    feed(listener, frame("processname:a groupname:a from_state:STOPPED tries:0", "PROCESS_STATE_STARTING",
                         serial=1))
    feed(listener, frame("no colons here", "PROCESS_STATE_RUNNING", serial=2))
    feed(listener, frame("processname:a groupname:a from_state:STARTING pid:5", "PROCESS_STATE_RUNNING",
                         serial=3))
    assert pipes.written() == b"RESULT 2\nOKREADY\n" * 3
    assert "malformed event acknowledged" in caplog.text
    assert "lost" not in caplog.text
    assert listener.engine.records["a:a"].state == "RUNNING"


def test_config_for_unit_tests_parses():
    assert parse_config({"state": {"path": "/tmp/x.db"}}).state_path == "/tmp/x.db"


class RecordingTarget(TextTarget):
    tags: frozenset = frozenset()

    def __init__(self, key: str, explode: bool = False) -> None:
        self.key, self.label, self.scheme, self.explode = key, f"test://{key}", "test", explode
        self.sent: list[tuple[str, str]] = []

    def wants(self, tags: object) -> bool:
        return True

    def send(self, title: str, body: str, notify_type: str) -> None:
        if self.explode:
            raise ValueError("a bug in this target, not a DeliveryError")
        self.sent.append((title, body))


class HalfBrokenLogs:
    """Log tails work for one process and raise an unexpected error for the other."""

    class client:  # noqa: N801 - stands in for SupervisorClient
        @staticmethod
        def call(*args: object) -> object:
            raise SupervisorUnavailable("supervisord is down")

    def recent_exits(self, namespecs):  # noqa: ANN001, ANN201
        raise RuntimeError("main log unreadable")

    def tail(self, namespec: str):  # noqa: ANN201
        if namespec == "bad:bad":
            raise UnicodeError("cannot decode this one")
        return "good: last words\n", ""


def test_one_bad_alert_or_target_fails_only_itself(tmp_path):
    from lookout.listener.notifier.worker import Notifier
    from lookout.listener.protocol.events import Delivery, ProcessStateEvent
    from lookout.listener.rules.engine import AlertEngine
    from lookout.listener.store.schema import connect
    from lookout.listener.store.state import StateStore

    config = parse_config({"state": {"path": str(tmp_path / "db")}, "alerts": {"group_wait": "100ms"}})
    engine, state = AlertEngine(config.alerts), StateStore(connect(config.state_path))
    for serial, name in enumerate(("good", "bad"), 1):
        event = ProcessStateEvent(Delivery("s", serial, "p", serial, "PROCESS_STATE_FATAL"), "FATAL", name, name,
                                  "BACKOFF")
        state.commit(engine.on_event(event, 100.0), stopping=False)
    broken, working = RecordingTarget("broken", explode=True), RecordingTarget("working")
    notifier = Notifier(config, [broken, working], HalfBrokenLogs(), clock=lambda: 200.0)  # type: ignore[arg-type]
    notifier.step(200.0)
    notifier.step(200.0)
    assert len(working.sent) == 1
    body = working.sent[0][1]
    assert "good gave up" in body and "good: last words" in body
    assert "bad gave up" in body and "log tail unavailable: UnicodeError" in body
    pending = state.conn.execute("SELECT status, attempts, last_error FROM outbox WHERE target_key = 'broken'")
    assert [tuple(r) for r in pending] == [("pending", 1, "ValueError while sending")]
    assert notifier.thread.died == ""
