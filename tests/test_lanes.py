"""Lanes and the whole-request deadline (listener/notifier/lanes.py, deadline.py), against real
servers: each send ends within about notify.timeout whatever the peer does (trickles its answer,
never answers, never accepts, never reads, refuses, an SMTP server that stalls), is judged by what
the peer's host took (maybe delivered, or not), and a target that hangs holds one thread, never
more, and never slows another target."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time

import pytest
from aiosmtpd.controller import Controller

from lookout.config.model import AlertmanagerSettings, NotifySettings
from lookout.listener.notifier.alertmanager import AlertmanagerTarget
from lookout.listener.notifier.apprise_target import build_targets
from lookout.listener.notifier.deadline import DeadlinePassed, SendWatch, watched
from lookout.listener.notifier.lanes import GRACE, Job, Lanes, Result, Verdict

from .harness import Webhook, free_port, wait_for

TIMEOUT = 1.5
LATE = TIMEOUT + GRACE + 1.5  # the deadline, the grace for a send that cannot be cut, a busy machine


class Peer:
    """A TCP server that accepts and then reads everything and never answers (read=True), or
    never reads at all; with accept=False it takes one connection into its backlog and no more,
    so the next connect hangs (its SYNs are dropped)."""

    def __init__(self, read: bool = True, accept: bool = True) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(0 if not accept else 16)
        self.port = self.sock.getsockname()[1]
        self.read, self.held, self.got = read, [], 0
        if accept:
            threading.Thread(target=self._serve, daemon=True).start()
        else:
            filler = socket.create_connection(("127.0.0.1", self.port))  # the backlog is full now
            self.held.append(filler)

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.held.append(conn)
            if self.read:
                threading.Thread(target=self._drain, args=(conn,), daemon=True).start()

    def _drain(self, conn: socket.socket) -> None:
        try:
            while data := conn.recv(65536):
                self.got += len(data)
        except OSError:
            return

    def close(self) -> None:
        self.sock.close()
        for s in self.held:
            s.close()


def lanes_for(*urls: str, timeout: float = TIMEOUT) -> tuple[Lanes, list, threading.Event]:
    targets, _ = build_targets(NotifySettings(urls=urls, timeout=timeout))
    wake = threading.Event()
    lanes = Lanes(targets, timeout, wake)
    lanes.start()
    return lanes, targets, wake


def answers(lanes: Lanes, count: int, within: float) -> list[Result]:
    got: list[Result] = []
    wait_for(lambda: got.extend(lanes.results()) or len(got) >= count, within, f"{count} answer(s); got {got}")
    return got


def send(lanes: Lanes, target, body: str = "feed crashed " * 20, title: str = "[WARNING] feed crashed") -> None:  # noqa: ANN001
    lanes.submit(Job(target.key, title, body, "warning", None))


def test_a_trickling_answer_is_cut_at_the_deadline_and_maybe_delivered():
    hook = Webhook(trickle=0.3).start()  # one byte every 0.3 s: every read is quick, the answer is not
    lanes, (target,), _ = lanes_for(hook.url())
    try:
        send(lanes, target)
        (result,) = answers(lanes, 1, LATE)
        assert result.verdict is Verdict.MAYBE, result
        assert TIMEOUT <= result.took < TIMEOUT + 1.0, result.took  # cut at the deadline, not after GRACE
        assert "no answer within 1.5s" in result.error and hook.posts == 1
    finally:
        lanes.stop()
        hook.stop()


@pytest.mark.parametrize("peer_kind", ["reads and never answers", "never reads", "alertmanager"])
def test_a_peer_that_never_answers_a_small_request_may_have_it(peer_kind):
    peer = Peer(read=peer_kind != "never reads")  # its host's kernel takes the request either way
    if peer_kind == "alertmanager":  # our own requests code, under the same deadline
        target = AlertmanagerTarget(f"http://127.0.0.1:{peer.port}", AlertmanagerSettings(timeout=TIMEOUT))
        lanes = Lanes([target], TIMEOUT, threading.Event())
        lanes.start()
    else:
        lanes, (target,), _ = lanes_for(f"json://127.0.0.1:{peer.port}/hook")
    body = json.dumps([{"labels": {"alertname": "SupervisorProcessCrashed"}}])
    try:
        send(lanes, target, body=body)
        (result,) = answers(lanes, 1, LATE)
        assert result.verdict is Verdict.MAYBE and result.took < TIMEOUT + 1.0, result
    finally:
        lanes.stop()
        peer.close()


def test_a_request_its_host_did_not_take_in_full_is_not_maybe_delivered():
    peer = Peer(read=False)
    target = AlertmanagerTarget(f"http://127.0.0.1:{peer.port}", AlertmanagerSettings(timeout=TIMEOUT))
    wake = threading.Event()
    lanes = Lanes([target], TIMEOUT, wake)
    lanes.start()
    try:  # 32 MB: more than the socket buffers of both ends hold, so the sender is still writing
        body = json.dumps([{"labels": {"alertname": "X"}, "annotations": {"description": "x" * 32_000_000}}])
        send(lanes, target, body=body, title="alertmanager")
        (result,) = answers(lanes, 1, LATE + 2)
        assert result.verdict is Verdict.TIMED_OUT, result
    finally:
        lanes.stop()
        peer.close()


def test_a_connect_that_hangs_is_cut_at_the_deadline():
    peer = Peer(accept=False)  # SYNs dropped: connect itself blocks
    lanes, (target,), _ = lanes_for(f"json://127.0.0.1:{peer.port}/hook")
    try:
        send(lanes, target)
        (result,) = answers(lanes, 1, LATE)
        assert result.verdict is Verdict.TIMED_OUT and result.took < TIMEOUT + 1.0, result
    finally:
        lanes.stop()
        peer.close()


def test_a_peer_that_refuses_fails_at_once_and_an_answer_is_sent():
    closed = free_port()
    hook = Webhook().start()
    lanes, targets, _ = lanes_for(f"json://127.0.0.1:{closed}/hook", hook.url())
    try:
        for target in targets:
            send(lanes, target)
        got = {r.job.target_key: r for r in answers(lanes, 2, 5)}
        refused, sent = got[targets[0].key], got[targets[1].key]
        assert refused.verdict is Verdict.FAILED and "Connection refused" in refused.error and refused.took < 1.0
        assert sent.verdict is Verdict.SENT and sent.answered and hook.matching("feed crashed")
    finally:
        lanes.stop()
        hook.stop()


def test_a_hanging_target_never_slows_another_and_holds_one_thread():
    stuck, healthy = Webhook(trickle=0.5).start(), Webhook().start()
    lanes, (slow, fast), _ = lanes_for(stuck.url(), healthy.url())
    try:
        def ours() -> int:
            return sum(t.name.startswith("lookout-") for t in threading.enumerate())

        baseline = ours()  # a lane each, and the watchdog (and what an earlier test leaves exiting)
        for i in range(4):  # the stuck target gets one message after another, as a backlog would
            send(lanes, slow, title=f"[WARNING] slow {i}")
            send(lanes, fast, title=f"[WARNING] fast {i}")
            started = time.monotonic()
            got = answers(lanes, 1, 5)
            assert got[0].job.target_key == fast.key and time.monotonic() - started < 1.0  # not behind the slow one
            got = answers(lanes, 1, LATE)
            assert got[0].verdict is Verdict.MAYBE
            assert ours() <= baseline  # no thread left behind per send
        assert len(healthy.matching("fast")) == 4 and stuck.posts == 4
    finally:
        lanes.stop()
        stuck.stop()
        healthy.stop()


class Blocked:
    """A target whose send blocks outside any socket (a DNS lookup that hangs, a plugin's sleep)."""

    tags, scheme, label, key = frozenset(), "test", "test://blocked", "blocked"

    def __init__(self) -> None:
        self.release, self.calls = threading.Event(), 0

    def wants(self, tags: object) -> bool:
        return True

    def send(self, title: str, body: str, notify_type: str) -> None:
        self.calls += 1
        self.release.wait(60)


def test_a_send_that_cannot_be_cut_is_reported_and_its_lane_takes_nothing_new_until_it_returns():
    target = Blocked()
    wake = threading.Event()
    lanes = Lanes([target], TIMEOUT, wake)
    lanes.start()
    try:
        send(lanes, target)
        (result,) = answers(lanes, 1, LATE)
        assert result.verdict is Verdict.TIMED_OUT and "still blocked" in result.error, result
        assert TIMEOUT + GRACE <= result.took < TIMEOUT + GRACE + 1.5
        assert not lanes.idle(target.key) and not lanes.waiting()  # reported, but its thread is not free
        target.release.set()
        wait_for(lambda: lanes.idle(target.key), 5, "the lane free once the send returned")
        assert lanes.results() == []  # the late return is not a second answer
        target.release.clear()
        send(lanes, target)  # the same thread again, not a new one
        wait_for(lambda: target.calls == 2, 5, "the next send")
        target.release.set()
        assert lanes.died() == ""
    finally:
        target.release.set()
        lanes.stop()


class Inbox:
    def __init__(self, stall: float = 0.0) -> None:
        self.stall, self.mails = stall, 0

    async def handle_DATA(self, server, session, envelope):  # noqa: ANN001, ANN201, N802
        self.mails += 1
        await asyncio.sleep(self.stall)  # a mail server that stalls after the whole message was sent
        return "250 OK"


def test_an_smtp_server_that_stalls_after_the_message_and_one_that_never_greets():
    stalling = Controller(Inbox(stall=30), hostname="127.0.0.1", port=free_port())
    stalling.start()
    mute = Peer(read=True)  # accepts and never sends its greeting: smtplib waits, having written nothing
    mail = "?from=lookout@example.com&to=ops@example.com"
    lanes, (stalled, silent), _ = lanes_for(f"mailto://127.0.0.1:{stalling.port}{mail}",
                                            f"mailto://127.0.0.1:{mute.port}{mail}")
    try:
        send(lanes, stalled)
        send(lanes, silent)
        got = {r.job.target_key: r for r in answers(lanes, 2, LATE)}
        assert got[stalled.key].verdict is Verdict.MAYBE and got[stalled.key].took < TIMEOUT + 1.0, got
        assert got[silent.key].verdict is Verdict.TIMED_OUT and got[silent.key].took < TIMEOUT + 1.0, got
        assert stalling.handler.mails == 1
    finally:
        lanes.stop()
        stalling.stop()
        mute.close()


def test_a_connect_after_the_deadline_fails_at_once():
    from lookout.listener.notifier.deadline import install

    install()
    peer = Peer()
    watch = SendWatch(time.monotonic() + 60)
    try:
        with watched(watch):
            first = socket.create_connection(("127.0.0.1", peer.port))
            watch.expire()
            assert first.recv(1) == b""  # shut down: the blocked read returns at once
            with pytest.raises(DeadlinePassed):
                socket.create_connection(("127.0.0.1", peer.port))
        first.close()
    finally:
        peer.close()
