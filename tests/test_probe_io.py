"""Issue 13 (R7, a probe judges within its timeout): the probe machinery against real processes,
real sockets and real files. run_bounded reports a command's own exit status (EOF on its
stdout is not its exit), an HTTP probe has one deadline for everything, log_pattern reads on
across a rotation and says what it could not read, runs are spread over the period."""

from __future__ import annotations

import itertools
import os
import shutil
import socket
import ssl
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from lookout.bounded import scan_log
from lookout.config.probes import parse_probes
from lookout.listener.probes.checks import Check, run_bounded
from lookout.listener.probes.scheduler import ProbeScheduler
from lookout.listener.probes.target import ProbeTarget
from lookout.listener.workers.inbox import Inbox

from .harness import wait_for

TARGET = ProbeTarget("svc", "svc", os.getpid(), 0.0)


def probe(**entry: object):  # noqa: ANN201
    """A validated ProbeSpec, as the config makes it."""
    return parse_probes([{"match": "svc", **entry}])[0]


def alive(pid: int) -> bool:
    """Running, not a zombie waiting for init to reap it."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] not in "ZX"
    except (OSError, IndexError):
        return False


# ---- run_bounded ------------------------------------------------------------------------


def test_quick_commands_report_their_own_exit_status_a_thousand_times(tmp_path):
    """The bug: the group was killed at EOF, before the command had exited ("exit status -9" in
    up to half the runs of `cat FILE`). Four threads, as the scheduler's pool runs probes."""
    path = tmp_path / "file"
    path.write_text("line\n" * 20)
    commands = {"true": (["true"], b""), "echo": (["echo", "ok"], b"ok\n"),
                "cat": (["cat", str(path)], path.read_bytes()), "ls": (["ls", "/"], None)}

    def once(argv: list[str]) -> tuple[int | None, bytes, bool]:
        return run_bounded(argv, time.monotonic() + 10)

    started = time.monotonic()
    with ThreadPoolExecutor(4) as pool:
        for name, (argv, expected) in commands.items():
            results = list(pool.map(once, itertools.repeat(argv, 1000)))
            failed = [r for r in results if r[0] != 0 or r[2] or (expected is not None and r[1] != expected)]
            assert not failed, f"{name}: {len(failed)} of 1000 failed, e.g. {failed[:3]}"
            assert all(b"proc" in r[1] for r in results) if name == "ls" else True
    assert time.monotonic() - started < 60


def test_a_command_that_exits_while_a_grandchild_holds_the_pipe_succeeds_and_the_grandchild_goes():
    started = time.monotonic()
    code, output, timed_out = run_bounded(["sh", "-c", "sleep 300 & echo $!; exit 0"], time.monotonic() + 10)
    assert (code, timed_out) == (0, False) and time.monotonic() - started < 5  # no waiting for the pipe
    grandchild = int(output.split()[0])
    wait_for(lambda: not alive(grandchild), 5, "the grandchild killed")


def test_a_command_past_its_timeout_is_killed_with_its_whole_group():
    started = time.monotonic()
    code, output, timed_out = run_bounded(["sh", "-c", "echo $$; sleep 300 & echo $!; sleep 301"],
                                          time.monotonic() + 0.5)
    assert timed_out and code == -9 and time.monotonic() - started < 1.5
    shell, grandchild = map(int, output.split())
    wait_for(lambda: not alive(shell) and not alive(grandchild), 5, "the whole group killed")


def test_exit_after_eof_and_big_output_and_missing_commands():
    # Closes its stdout, then takes its time to exit: the status is awaited, not guessed.
    assert run_bounded(["sh", "-c", "exec >&-; sleep 0.3; exit 4"], time.monotonic() + 5)[::2] == (4, False)
    # Closes its stdout and never exits: timed out at the deadline.
    assert run_bounded(["sh", "-c", "exec >&-; sleep 30"], time.monotonic() + 0.3)[::2] == (-9, True)
    # More than a pipe holds: read while it runs, the first `keep` bytes kept.
    code, output, timed_out = run_bounded(["head", "-c", "1000000", "/dev/zero"], time.monotonic() + 5, keep=100)
    assert (code, len(output), timed_out) == (0, 100, False)
    code, output, timed_out = run_bounded(["/nonexistent/check"], time.monotonic() + 5)
    assert code is None and b"No such file" in output and not timed_out


def test_exec_probe_details():
    check = Check(None)
    ok = check.run(probe(exec=["echo", "fine"], timeout="2s"), TARGET, {})
    assert ok.ok and ok.detail == "exit status 0" and ok.evidence == "fine\n"
    bad = check.run(probe(exec=["sh", "-c", "echo broken; exit 3"]), TARGET, {})
    assert not bad.ok and bad.detail == "sh -c 'echo …': exit status 3 (output: 'broken')"
    killed = check.run(probe(exec=["sh", "-c", "kill -TERM $$"]), TARGET, {})
    assert not killed.ok and killed.detail == "sh -c 'kill …': killed by SIGTERM"
    slow = check.run(probe(exec=["sleep", "5"], timeout="300ms"), TARGET, {})
    assert slow.detail == "sleep: timed out after 300ms (killed with its process group)" and slow.duration < 1


# ---- HTTP and TCP under one deadline -------------------------------------------------------


class TrickleServer:
    """Answers every connection with one byte every `interval` of a header that never ends: each
    read of a client is quick, the answer never completes. `trickle=False`: never says a word."""

    def __init__(self, interval: float = 0.3, context: ssl.SSLContext | None = None, trickle: bool = True,
                 port: int = 0) -> None:
        self.interval, self.context, self.trickle = interval, context, trickle
        self.sock = socket.create_server(("127.0.0.1", port))
        self.port = self.sock.getsockname()[1]
        self.accepted: list[float] = []  # when each connection came in
        self.stopped = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted.append(time.time())
            threading.Thread(target=self._answer, args=(conn,), daemon=True).start()

    def _answer(self, conn: socket.socket) -> None:
        try:
            if self.context is not None:
                conn = self.context.wrap_socket(conn, server_side=True)
            if not self.trickle:
                self.stopped.wait()
                return
            for byte in itertools.chain(b"HTTP/1.1 200 OK\r\nX-Slow: ", itertools.repeat(ord("a"))):
                if self.stopped.wait(self.interval):
                    return
                conn.sendall(bytes([byte]))
        except OSError:
            return  # the probe gave up and closed
        finally:
            conn.close()

    def close(self) -> None:
        self.stopped.set()
        self.sock.close()


def self_signed(directory: Path) -> ssl.SSLContext:
    """A server context with a throwaway certificate for 127.0.0.1 (openssl CLI)."""
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                    "-keyout", str(key), "-out", str(cert), "-days", "2", "-subj", "/CN=127.0.0.1"],
                   check=True, capture_output=True, timeout=60)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(str(cert), str(key))
    return context


needs_openssl = pytest.mark.skipif(not shutil.which("openssl"), reason="needs the openssl command")


@pytest.mark.parametrize("scheme", ["http", pytest.param("https", marks=needs_openssl)])
def test_a_trickling_endpoint_is_judged_within_the_timeout(scheme, tmp_path):
    """http.client's timeout is per read: one byte every 0.3 s kept a 1 s probe going forever."""
    server = TrickleServer(context=self_signed(tmp_path) if scheme == "https" else None)
    try:
        url = f"{scheme}://127.0.0.1:{server.port}/healthz"
        spec = probe(http={"url": url, "insecure": True}, timeout="1s")
        started = time.monotonic()
        result = Check(None).run(spec, TARGET, {})
        elapsed = time.monotonic() - started
        assert not result.ok and elapsed < 1.3, (elapsed, result.detail)
        assert result.detail.startswith(f"GET {url}: timed out after 1s reading the response headers ("), result.detail
    finally:
        server.close()


@needs_openssl
def test_a_silent_tls_endpoint_times_out_in_the_handshake_and_a_silent_http_one_plainly(tmp_path):
    server = TrickleServer(trickle=False)
    try:
        for scheme, detail in (("https", "timed out after 500ms in the TLS handshake"),
                               ("http", "timed out after 500ms")):
            spec = probe(http={"url": f"{scheme}://127.0.0.1:{server.port}/", "insecure": True}, timeout="500ms")
            started = time.monotonic()
            result = Check(None).run(spec, TARGET, {})
            detail = f"GET {scheme}://127.0.0.1:{server.port}/: {detail}"
            assert result.detail == detail and time.monotonic() - started < 0.8, result.detail
    finally:
        server.close()


class _Answers(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802
        body = b"ok"
        self.send_response(200 if self.path == "/healthz" else 404)
        self.send_header("Content-Length", str(len(body)) if self.path != "/slow-body" else "100")
        self.end_headers()
        self.wfile.write(body)
        self.wfile.flush()
        if self.path == "/slow-body":
            try:
                for _ in range(20):  # one byte every 0.2 s of the 98 promised
                    time.sleep(0.2)
                    self.wfile.write(b"x")
                    self.wfile.flush()
            except OSError:
                pass  # the probe gave up and closed

    def log_message(self, *args: object) -> None:
        pass


@needs_openssl
def test_healthy_answers_over_http_and_https_and_a_slow_body(tmp_path):
    servers = []
    for context in (None, self_signed(tmp_path)):
        server = ThreadingHTTPServer(("127.0.0.1", 0), _Answers)
        server.daemon_threads = True
        if context is not None:
            server.socket = context.wrap_socket(server.socket, server_side=True)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
    try:
        check = Check(None)
        for scheme, server in zip(("http", "https"), servers):
            url = f"{scheme}://127.0.0.1:{server.server_address[1]}"
            ok = check.run(probe(http={"url": f"{url}/healthz", "body": "^ok$", "insecure": True}), TARGET, {})
            assert ok.ok and ok.detail == "HTTP 200", ok.detail
            missing = check.run(probe(http={"url": f"{url}/nothing", "insecure": True}), TARGET, {})
            assert missing.detail == f"GET {url}/nothing: HTTP 404 (body: 'ok')"
            slow = check.run(probe(http={"url": f"{url}/slow-body", "insecure": True}, timeout="1s"), TARGET, {})
            assert slow.detail == f"GET {url}/slow-body: timed out after 1s reading the body" and slow.duration < 1.3, \
                slow.detail
        verified = check.run(probe(http={"url": f"https://127.0.0.1:{servers[1].server_address[1]}/healthz"}),
                             TARGET, {})
        assert not verified.ok and "CERTIFICATE_VERIFY_FAILED" in verified.detail  # insecure = false verifies
    finally:
        for server in servers:
            server.shutdown()
            server.server_close()


def test_a_connection_that_cannot_be_made_times_out_connecting():
    """A listener whose accept queue is full drops SYNs: connect() waits, bounded by the deadline."""
    full = socket.create_server(("127.0.0.1", 0), backlog=0)
    port = full.getsockname()[1]
    fillers: list[socket.socket] = []
    try:
        while True:  # connect until one is not answered: the queue (never accepted) is full
            s = socket.socket()
            fillers.append(s)
            s.settimeout(0.2)
            try:
                s.connect(("127.0.0.1", port))
            except (TimeoutError, socket.timeout):
                break
            assert len(fillers) < 20, "the accept queue never filled"
        check = Check(None)
        for spec, detail in ((probe(tcp=f"127.0.0.1:{port}", timeout="300ms"),
                              f"tcp 127.0.0.1:{port}: timed out after 300ms connecting"),
                             (probe(http={"url": f"http://127.0.0.1:{port}/"}, timeout="300ms"),
                              f"GET http://127.0.0.1:{port}/: timed out after 300ms connecting")):
            result = check.run(spec, TARGET, {})
            assert result.detail == detail and result.duration < 0.6, result.detail
    finally:
        for s in fillers:
            s.close()
        full.close()


# ---- log_pattern: read on from where the last run stopped, across rotation, within a budget --


class OneLog:
    """ProcessLogs.paths for a process that logs stdout to one file."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def paths(self, namespec: str) -> tuple[str, str]:
        return self.path, ""


def rotate(path: Path, backups: int = 5) -> None:
    """supervisord's RotatingFileHandler.doRollover: path.1 -> path.2 ..., path -> path.1, a new path."""
    for n in range(backups - 1, 0, -1):
        if Path(f"{path}.{n}").exists():
            os.replace(f"{path}.{n}", f"{path}.{n + 1}")
    os.replace(path, f"{path}.1")
    path.write_bytes(b"")


def append(path: Path, data: bytes) -> None:
    with open(path, "ab") as f:
        f.write(data)


def test_scan_log_reads_on_across_rotations_and_truncation(tmp_path):
    log = tmp_path / "svc.log"
    log.write_bytes(b"before the first look\n")
    positions: dict = {}
    lines: list[str] = []

    def scan() -> list[str]:
        lines.clear()
        assert scan_log(str(log), positions, lines.append, time.monotonic() + 5) == 0
        return list(lines)

    assert scan() == []  # the first look notes where the file ends
    append(log, b"one\nCRITICAL crossed maxbytes\n")
    rotate(log)  # supervisord rotates right after writing the line that crossed maxbytes
    append(log, b"two\n")
    assert scan() == ["one", "CRITICAL crossed maxbytes", "two"]
    append(log, b"three\npar")  # two rotations between runs, and a line cut across them
    rotate(log)
    append(log, b"tial\nfour\n")
    rotate(log)
    append(log, b"five\nsix")
    assert scan() == ["three", "partial", "four", "five"]
    append(log, b" and the rest\n")  # a partial line waits for the next run
    assert scan() == ["six and the rest"]
    log.write_bytes(b"seven\n")  # truncated in place (supervisord with backups = 0)
    assert scan() == ["seven"]
    append(log, b"eight\n")
    rotate(log)
    for n in range(1, 6):  # the file read last time is gone: the new one from its start
        Path(f"{log}.{n}").unlink(missing_ok=True)
    append(log, b"nine\n")
    assert scan() == ["nine"]


def test_scan_log_skips_beyond_its_budget_and_says_how_much(tmp_path):
    log = tmp_path / "svc.log"
    log.write_bytes(b"")
    positions: dict = {}
    scan_log(str(log), positions, lambda line: None, time.monotonic() + 5)
    first, filler = b"CRITICAL before the burst\n", b"x" * 99 + b"\n"
    append(log, first + filler * 30_000)  # 3 MB
    lines: list[str] = []
    unread = scan_log(str(log), positions, lines.append, time.monotonic() + 5, budget=1_000_000)
    assert lines[0] == "CRITICAL before the burst" and len(lines) == 1 + (1_000_000 - len(first)) // 100
    assert unread == len(first) + 30_000 * 100 - (len(first) + (len(lines) - 1) * 100)
    append(log, b"after\n")
    lines.clear()
    assert scan_log(str(log), positions, lines.append, time.monotonic() + 5, budget=1_000_000) == 0
    assert lines == ["after"]  # skipped to the end, then on from there


def test_log_pattern_alerts_on_the_line_before_a_burst_and_says_what_it_did_not_read(tmp_path):
    log = tmp_path / "svc.log"
    log.write_bytes(b"")
    check = Check(OneLog(log))  # type: ignore[arg-type]
    spec = probe(log_pattern={"regex": "CRITICAL", "count": 1, "within": "1m"}, timeout="10s")
    memory: dict = {}
    assert check.run(spec, TARGET, memory).ok  # the first look
    append(log, b"CRITICAL order book crossed\n" + (b"y" * 99 + b"\n") * 30_000)  # then 3 MB at once
    result = check.run(spec, TARGET, memory)
    assert not result.ok and "CRITICAL order book crossed" in result.evidence and "not read" not in result.detail
    append(log, (b"z" * 999 + b"\n") * 9_000)  # 9 MB: more than one run reads
    result = check.run(spec, TARGET, memory)
    assert "bytes not read (more than 8.0 MB of new log per file and run" in result.detail, result.detail


def test_log_pattern_count_is_bounded_by_what_is_kept(tmp_path):
    from lookout.config import ConfigError
    from lookout.config.probes import LOG_PATTERN_KEPT

    assert probe(log_pattern={"regex": "E", "count": LOG_PATTERN_KEPT}).params["count"] == LOG_PATTERN_KEPT
    with pytest.raises(ConfigError, match=r"probes\[0\]\.log_pattern\.count"):
        probe(log_pattern={"regex": "E", "count": LOG_PATTERN_KEPT + 1})
    log = tmp_path / "svc.log"
    log.write_bytes(b"")
    check = Check(OneLog(log))  # type: ignore[arg-type]
    spec = probe(log_pattern={"regex": "E", "count": LOG_PATTERN_KEPT, "within": "1h"}, timeout="10s")
    memory: dict = {}
    check.run(spec, TARGET, memory)
    append(log, b"E\n" * (LOG_PATTERN_KEPT * 3))
    result = check.run(spec, TARGET, memory)
    assert not result.ok and result.detail.startswith(f"{LOG_PATTERN_KEPT} log line(s) matching /E/")


# ---- the scheduler spreads runs over the period ------------------------------------------


def test_runs_are_spread_over_the_period_with_fixed_offsets():
    now = [1_700_000_000.25]
    read_fd, write_fd = os.pipe()
    scheduler = ProbeScheduler(Check(None), Inbox(write_fd, b"p"), clock=lambda: now[0])
    try:
        specs = parse_probes([{"match": "*", "http": {"url": "http://127.0.0.1:1/"}, "period": "1s"},
                              {"match": "*", "tcp": "127.0.0.1:1", "period": "1s", "initial_delay": "3s"}])
        started = now[0] - 0.1
        names = [f"pool:pool_{i:03d}" for i in range(100)]
        for i, name in enumerate(names):  # 100 workers started together, two probes each
            scheduler.set_process(name, ProbeTarget("pool", name[5:], 1000 + i, started), specs)
        due = {(name, p): inst.next_at for name in names for p, inst in scheduler._instances[name].items()}
        for (_, p), at in due.items():  # never before initial_delay, at most a period after it
            earliest = max(now[0], started + (3.0 if p == "tcp" else 0.0))
            assert earliest <= at < earliest + 1.0
        phases = sorted(at % 1.0 for at in due.values())
        gaps = [b - a for a, b in zip(phases, phases[1:])] + [1.0 - phases[-1] + phases[0]]
        assert len(phases) == 200 and max(gaps) < 2 * (1.0 / 200), max(gaps) * 200
        # A restart of one worker: a new first run, at the same place in the period.
        now[0] += 60.4
        before = due[(names[7], "http")] % 1.0
        scheduler.set_process(names[7], ProbeTarget("pool", names[7][5:], 2000, now[0]), specs)
        assert scheduler._instances[names[7]]["http"].next_at % 1.0 == pytest.approx(before, abs=1e-6)
    finally:
        scheduler.pool.shutdown()
        os.close(read_fd)
        os.close(write_fd)
