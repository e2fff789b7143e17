"""The dead man's switch against hostile or broken endpoints: whatever the far end answers is one
failed call, counted and logged; the thread lives on; one deadline bounds each call; a call still
out makes the next interval's skipped, not queued; user:password in the URL is basic auth."""

from __future__ import annotations

import base64
import socket
import threading
import time

import pytest

from lookout.config import ConfigError
from lookout.config.load import parse_config
from lookout.config.model import DeadmanSettings
from lookout.listener.workers.deadman import DeadmanSwitch, call

from .harness import wait_for


class Endpoint:
    """A TCP server answering each connection with `behave(conn)`; records what it was sent."""

    def __init__(self, behave) -> None:  # noqa: ANN001
        self.behave, self.requests = behave, []
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._one, args=(conn,), daemon=True).start()

    def _one(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(10)
            try:
                self.requests.append(conn.recv(65536).decode("latin-1"))
                self.behave(conn)
            except OSError:
                pass

    def close(self) -> None:
        self.sock.close()


def ok(conn: socket.socket) -> None:
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nOK")


def drip(conn: socket.socket) -> None:
    for byte in b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nOK":
        conn.sendall(bytes([byte]))
        time.sleep(0.3)


@pytest.mark.parametrize("answer", [b"SSH-2.0-OpenSSH_9.2\r\n", b"HTTP/1.1 200 OK\r\n" + b"X: y\r\n" * 150 + b"\r\n",
                                    b"HTTP/1.1 abc nonsense\r\n\r\n", b"\x00\xff garbage\r\n\r\n", b""],
                         ids=["ssh banner", "too many headers", "bad status", "garbage", "closed at once"])
def test_a_hostile_answer_is_one_counted_error_and_the_thread_lives(answer):
    end = Endpoint(lambda conn: conn.sendall(answer))
    deaths: list[str] = []
    switch = DeadmanSwitch(DeadmanSettings(url=f"http://127.0.0.1:{end.port}/ping", interval=1.0, timeout=2.0),
                           time.monotonic, on_death=lambda: deaths.append("died"))
    switch.start()
    try:
        switch.due(time.monotonic(), "")
        wait_for(lambda: not switch._busy, 10, "the call done")
        switch.next_at = 0.0
        switch.due(time.monotonic(), "")
        wait_for(lambda: not switch._busy and switch.stats()["deadman_error"] == 2, 10, "two errors counted")
        assert switch.thread.died == "" and not deaths
    finally:
        end.close()


def test_one_deadline_for_the_whole_call_and_a_busy_switch_skips():
    end = Endpoint(drip)  # a byte every 0.3 s: each read is quick, the whole call is not
    switch = DeadmanSwitch(DeadmanSettings(url=f"http://127.0.0.1:{end.port}/ping", interval=1.0, timeout=1.0),
                           time.monotonic)
    switch.start()
    try:
        started = time.monotonic()
        switch.due(started, "")
        switch.next_at = 0.0
        switch.due(started, "")  # while the first is out: skipped and counted, not queued behind it
        assert switch.stats()["deadman_error"] == 1
        wait_for(lambda: not switch._busy, 10, "the call given up")
        assert time.monotonic() - started < 3.0  # the 1 s deadline, not 0.3 s per read
        assert switch.stats()["deadman_error"] == 2 and len(end.requests) == 1
    finally:
        end.close()


def test_user_and_password_in_the_url_are_basic_auth():
    end = Endpoint(ok)
    try:
        assert call(f"http://lookout:s%40cret@127.0.0.1:{end.port}/ping/x?k=1", 5.0) == 200
        request = end.requests[0]
        assert request.startswith("GET /ping/x?k=1 HTTP/1.1\r\n"), request
        assert f"Authorization: Basic {base64.b64encode(b'lookout:s@cret').decode()}" in request
        assert "s%40cret" not in request.split("\r\n")[1]  # not in the Host line
    finally:
        end.close()


@pytest.mark.parametrize("url, problem", [
    ("http://example.com/a b", "spaces"), ("http://example.com/\x07", "control"), ("ftp://example.com/", "http"),
    ("http:///path", "no host"), ("http://example.com:99999/", "port")])
def test_a_url_lookout_cannot_call_is_refused_when_the_config_loads(url, problem):
    with pytest.raises(ConfigError, match=problem) as caught:
        parse_config({"deadman": {"url": url}})
    assert "deadman.url" in str(caught.value) and "example.com" not in str(caught.value)
