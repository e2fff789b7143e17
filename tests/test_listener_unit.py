"""The listener's loop without supervisord: what it acknowledges, and what it counts once."""

from __future__ import annotations

import os

from lookout.config import parse_config
from lookout.listener.loop.listener import Listener
from lookout.listener.protocol.channel import ProtocolChannel
from lookout.listener.protocol.parser import EventParser

from .test_protocol import frame


class Pipes:
    def __init__(self) -> None:
        self.r_in, self.w_in = os.pipe()
        self.r_out, self.w_out = os.pipe()
        os.set_blocking(self.r_out, False)

    def channel(self, wakeup_fd: int) -> ProtocolChannel:
        return ProtocolChannel(self.r_in, self.w_out, wakeup_fd)

    def written(self) -> bytes:
        try:
            return os.read(self.r_out, 65536)
        except BlockingIOError:
            return b""


def make_listener(tmp_path) -> tuple[Listener, Pipes]:
    pipes = Pipes()
    config = parse_config({"state": {"path": str(tmp_path / "db")},
                           "supervisor": {"serverurl": "unix:///nonexistent.sock"}})
    return Listener(config, [], channel_factory=pipes.channel), pipes


def feed(listener: Listener, data: bytes) -> None:
    for item in EventParser().feed(data):
        listener.handle(item)


def test_malformed_event_is_logged_and_acknowledged(tmp_path, caplog):
    listener, pipes = make_listener(tmp_path)
    feed(listener, frame("no colons here", "PROCESS_STATE_RUNNING"))
    assert pipes.written() == b"RESULT 2\nOKREADY\n"
    assert "malformed event acknowledged" in caplog.text


def test_garbage_line_is_not_acknowledged(tmp_path):
    listener, pipes = make_listener(tmp_path)
    feed(listener, b"Traceback (most recent call last):\n")
    assert pipes.written() == b""


def test_redelivered_event_is_counted_once(tmp_path):
    listener, pipes = make_listener(tmp_path)
    starting = frame("processname:w groupname:w from_state:EXITED tries:0", "PROCESS_STATE_STARTING", serial=5)
    feed(listener, starting)
    feed(listener, starting)  # supervisord resends the in-flight event after a listener crash
    assert pipes.written() == b"RESULT 2\nOKREADY\n" * 2
    assert listener.engine.records["w:w"].restarts == 1
    # A new listener on the same store still knows the event.
    again, pipes2 = make_listener(tmp_path)
    feed(again, starting)
    assert pipes2.written() == b"RESULT 2\nOKREADY\n"
    assert again.engine.records["w:w"].restarts == 1


class CountingClient:
    def __init__(self) -> None:
        self.calls: list[str] = []

    def call(self, method: str, *args):  # noqa: ANN201
        self.calls.append(method)
        return {"statename": "RUNNING"}


def test_nudger_pokes_supervisord_when_a_watched_process_exits():
    import subprocess
    import sys

    from lookout.listener.workers.nudge import ExitNudger

    from .harness import stays, wait_for

    client = CountingClient()
    nudger = ExitNudger(client)  # type: ignore[arg-type]
    if not nudger.enabled:
        return  # no pidfds on this platform: the nudger is off by design
    nudger.start()
    child = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
    nudger.track("g:child", child.pid)
    stays(lambda: not client.calls, 0.3, "no nudge while it runs")
    child.stdin.close()
    child.wait(10)
    wait_for(lambda: client.calls == ["supervisor.getState"], 5, "one nudge after the exit")
    nudger.track("g:child", None)


def test_an_escalation_while_its_notice_is_rendered_is_not_lost(tmp_path):
    """The notifier reads a pending "crashed" notice and renders it; meanwhile the loop escalates
    the alert to a crash loop, which merges into that same pending notice. Marking it dispatched
    would lose the escalation: the dispatch is refused and the notice read again."""
    from lookout.listener.store.delivery import DeliveryStore
    from lookout.listener.store.schema import connect

    pipes = Pipes()
    config = parse_config({"state": {"path": str(tmp_path / "db")},
                           "supervisor": {"serverurl": "unix:///nonexistent.sock"},
                           "alerts": {"crash_loop": {"restarts": 2, "within": "10m"}}})
    listener = Listener(config, [], channel_factory=pipes.channel)
    events = [("STARTING", "STOPPED", ""), ("RUNNING", "STARTING", " pid:4242"),
              ("EXITED", "RUNNING", " expected:0 pid:4242"), ("STARTING", "EXITED", ""),
              ("RUNNING", "STARTING", " pid:4243"), ("EXITED", "RUNNING", " expected:0 pid:4243")]

    def deliver(i: int) -> None:
        state, before, extra = events[i]
        feed(listener, frame(f"processname:w groupname:w from_state:{before} tries:0{extra}",
                             f"PROCESS_STATE_{state}", serial=i + 1))

    for i in range(4):
        deliver(i)
    notifier = DeliveryStore(connect(str(tmp_path / "db")))
    rendered = notifier.pending_notices()
    assert [n.alert.kind for n in rendered] == ["crashed"]
    deliver(4)
    deliver(5)  # the second failure: crash loop, merged into the pending notice
    assert not notifier.dispatch([n.id for n in rendered], [], 0.0, rendered=rendered)
    again = notifier.pending_notices()
    assert [n.alert.kind for n in again] == ["crash_loop"]
    assert notifier.dispatch([n.id for n in again], [], 0.0, rendered=again)
    assert notifier.pending_notices() == []
