"""Real parts for tests: a supervisord from PyPI, a webhook receiver, polling helpers.

Every wait is a poll on an observable condition with a deadline; nothing sleeps blindly.
"""

from __future__ import annotations

import base64
import itertools
import json
import os
import signal
import ssl
import subprocess
import sys
import textwrap
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

REPO = Path(__file__).resolve().parent.parent
SNIPPET = REPO / "conf.d" / "lookout.conf"


def wait_for(cond: Callable[[], Any], timeout: float, what: str = "condition", interval: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def stays(cond: Callable[[], Any], seconds: float, what: str = "condition", interval: float = 0.2) -> None:
    """Assert cond() holds for the whole observation window."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert cond(), f"{what} stopped holding"
        time.sleep(interval)


_PORTS_PER_WORKER, _PORT_STEP = 2500, 5
_next_port = itertools.count()


def web_program(port: int, name: str = "web", extra: str = "") -> str:
    """A [program:] of tests/programs/http_service.py: /healthz answers "ok" until a file hang.<name>
    or fail.<name> appears in supervisord's directory (see that program)."""
    return f"""\
[program:{name}]
command={sys.executable} {REPO / "tests" / "programs" / "http_service.py"} {port} %(here)s
startsecs=1
autorestart=true
stopwaitsecs=2
{extra}
"""


def free_port() -> int:
    """A port for a server a test starts later. Each xdist worker takes its own range below the
    kernel's ephemeral ports (32768+), stepping by 5 (room for port_base + process_num): a port
    picked by asking the kernel for any free one could be handed to a parallel test before our
    server binds it, and a scrape would then reach that test's server."""
    import socket

    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    index = int(worker[2:]) if worker[2:].isdigit() else 0
    base = 10000 + (index % 8) * _PORTS_PER_WORKER
    for _ in range(_PORTS_PER_WORKER // _PORT_STEP):
        port = base + (next(_next_port) * _PORT_STEP) % _PORTS_PER_WORKER
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port in {base}..{base + _PORTS_PER_WORKER}")


def http_get(url: str, timeout: float = 10) -> bytes | None:
    """The body of a GET, or None while the server is not (yet) answering."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.read()
    except OSError:
        return None


def ensure_debian_tool(tool: str, package: str) -> str:
    """The path of `tool`, installing Debian's `package` first when it is missing (CI runs as root)."""
    import shutil

    found = shutil.which(tool) or (f"/usr/bin/{tool}" if os.path.exists(f"/usr/bin/{tool}") else None)
    if found:
        return found
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        raise RuntimeError(f"{tool} is missing: install the Debian package {package}")
    import fcntl

    # Test workers run in parallel: one apt-get at a time, and the second finds the tool installed.
    with open("/tmp/lookout-tests-apt.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        found = shutil.which(tool)
        if not found:
            env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
            subprocess.run(["apt-get", "update", "-qq"], check=True, env=env, capture_output=True, timeout=600)
            subprocess.run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", package], check=True,
                           env=env, capture_output=True, timeout=900)
            found = shutil.which(tool)
    if not found:
        raise RuntimeError(f"installed {package} but {tool} is still missing")
    return found


# ---- webhook receiver (apprise json:// posts here) -------------------------------------


@dataclass
class Received:
    path: str
    title: str
    body: str
    type: str
    at: float
    raw: Any = None  # the parsed JSON (Alertmanager's webhook payload, for one)

    @property
    def text(self) -> str:
        return f"{self.title}\n{self.body}"


@dataclass
class Webhook:
    port: int = 0
    messages: list[Received] = field(default_factory=list)
    fail_status: int = 0  # answer this instead of 200 while set
    failed_attempts: int = 0
    delay: float = 0.0  # answer 200 only this many seconds after the request was read (a slow target)
    trickle: float = 0.0  # answer one byte every this many seconds (a stuck proxy); the message counts as received
    posts: int = 0  # every POST read, whatever the answer
    stopping: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)
    server: ThreadingHTTPServer | None = None

    def url(self, path: str = "hook", scheme: str = "json") -> str:
        return f"{scheme}://127.0.0.1:{self.port}/{path}"

    def start(self) -> Webhook:
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                raw = self.rfile.read(int(self.headers.get("Content-Length", 0) or 0))
                with hook.lock:
                    hook.posts += 1
                if hook.fail_status:
                    with hook.lock:
                        hook.failed_attempts += 1
                    self.send_response(hook.fail_status)
                    self.end_headers()
                    return
                try:
                    data = json.loads(raw or b"{}")
                except ValueError:
                    data = {"message": raw.decode("utf-8", "replace")}
                msg = Received(
                    self.path,
                    str(data.get("title", "")),
                    str(data.get("message", data.get("text", ""))),
                    str(data.get("type", "")),
                    time.time(),
                    data,
                )
                with hook.lock:
                    hook.messages.append(msg)
                if hook.delay:
                    hook.stopping.wait(hook.delay)  # the slow peer itself, not a test's wait
                if hook.trickle:
                    self._trickle(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}")
                    return
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(b"{}")

            def _trickle(self, answer: bytes) -> None:
                self.close_connection = True
                try:
                    for i in range(len(answer)):
                        if hook.stopping.wait(hook.trickle):
                            return
                        self.wfile.write(answer[i:i + 1])
                        self.wfile.flush()
                except OSError:
                    return  # the client gave up: as a real one does

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        self.stopping.set()
        if self.server:
            self.server.shutdown()
            self.server.server_close()

    def matching(self, *needles: str) -> list[Received]:
        with self.lock:
            return [m for m in self.messages if all(n in m.text for n in needles)]

    def entries(self) -> list[str]:
        """Every alert entry of every message body: a line at column 0 and its indented lines."""
        with self.lock:
            bodies = [m.body for m in self.messages]
        out: list[str] = []
        for body in bodies:
            for line in body.splitlines():
                if line and not line[0].isspace():
                    out.append(line)
                elif line and out:
                    out[-1] += "\n" + line
        return out

    def entries_for(self, namespec: str, *needles: str) -> list[str]:
        """Alert entries about one process, shown as supervisorctl shows it ('w1', not 'w1:w1')."""
        group, _, name = namespec.partition(":")
        shown = name if group == name else namespec
        return [
            e
            for e in self.entries()
            if e.split("\n")[0].split()[1:2] == [shown] and all(n in e for n in needles)
        ]

    def wait(self, *needles: str, timeout: float = 15.0, count: int = 1) -> list[Received]:
        return wait_for(
            lambda: (found := self.matching(*needles)) and len(found) >= count and found,
            timeout,
            f"{count} message(s) with {needles!r}; got {[m.title for m in self.messages]}",
        )


# ---- supervisord -----------------------------------------------------------------------

# Starting supervisord and the listener (imports of apprise and friends) takes a second or two, and
# over 20 s on a 2-core machine that runs other suites beside this one: the deadline is there for a
# start that never comes, not to judge a slow one.
STARTUP_DEADLINE = 90.0

SUPERVISORD_CONF = """\
[unix_http_server]
file=%(here)s/supervisor.sock

[supervisord]
logfile=%(here)s/supervisord.log
pidfile=%(here)s/supervisord.pid
childlogdir=%(here)s/logs
nodaemon=true
identifier=lookout-test
loglevel=info

[rpcinterface:supervisor]
supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface

[supervisorctl]
serverurl=unix://%(here)s/supervisor.sock
"""


def listener_snippet(config_path: Path, log_path: Path, extra: str = "") -> str:
    """The shipped conf.d/lookout.conf, pointed at this test's config and log."""
    text = SNIPPET.read_text()
    text = text.replace("command=lookout-listener", f"command={sys.executable} -m lookout.listener")
    text = text.replace("/etc/lookout/lookout.toml", str(config_path))
    text = text.replace("/var/log/supervisor/lookout.log", str(log_path))
    return text + extra


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {toml_value(v)}" for k, v in value.items()) + " }"
    raise TypeError(value)


def _is_tables(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(v, dict) for v in value)


def lookout_toml(sections: dict[str, Any], programs: list[dict[str, Any]] = ()) -> str:
    """TOML for lookout: tables, and arrays of tables for lists of dicts ([[probes]], [[alerts.groups]])."""
    out: list[str] = []
    arrays: list[tuple[str, list[dict]]] = []
    for name, values in sections.items():
        if _is_tables(values):
            arrays.append((name, values))
            continue
        out.append(f"[{name}]")
        for k, v in values.items():
            if _is_tables(v):
                arrays.append((f"{name}.{k}", v))
            else:
                out.append(f"{k} = {toml_value(v)}")
        out.append("")
    arrays += [("alerts.programs", list(programs))] if programs else []
    for name, entries in arrays:
        for entry in entries:
            out.append(f"[[{name}]]")
            out.extend(f"{k} = {toml_value(v)}" for k, v in entry.items())
            out.append("")
    return "\n".join(out)


class Supervisor:
    """A real supervisord in a temp dir, with the lookout listener from conf.d/lookout.conf."""

    def __init__(
        self,
        root: Path,
        programs: str,
        settings: dict[str, dict[str, Any]],
        program_rules: list[dict[str, Any]] = (),
        listener: bool = True,
        loglevel: str = "info",
        wrapper: list[str] = (),
        state_path: Path | None = None,
        main_log: str = "%(here)s/supervisord.log",
        environment: dict[str, str] | None = None,
        clock_step: bool = False,
    ) -> None:
        self.root = root
        self.environment = dict(environment or {})  # for supervisord and so for its programs and the listener
        self.clock_offset_file = root / "clock_offset"
        if clock_step:  # tests/clockstep/sitecustomize.py: step_clock() moves time.time() of all of them
            self.clock_offset_file.write_text("0")
            self.environment["LOOKOUT_TEST_CLOCK_OFFSET_FILE"] = str(self.clock_offset_file)
            self.environment["PYTHONPATH"] = os.pathsep.join(
                p for p in (str(REPO / "tests" / "clockstep"), os.environ.get("PYTHONPATH", "")) if p)
        self.wrapper = list(wrapper)  # a command supervisord runs under (e.g. unshare with a tmpfs)
        self.invariants = True  # checked after the test (check_store_invariants); off where a test breaks the store
        (root / "logs").mkdir(parents=True, exist_ok=True)
        self.sock = root / "supervisor.sock"
        self.state_path = state_path or root / "lookout.db"
        self.listener_log = root / "lookout.log"
        self.config_path = root / "lookout.toml"
        base = {
            "supervisor": {"serverurl": f"unix://{self.sock}", "timeout": "5s"},
            "state": {"path": str(self.state_path)},
        }
        merged = {k: settings[k] if isinstance(settings.get(k), list) else {**base.get(k, {}), **settings.get(k, {})}
                  for k in {**base, **settings}}
        self.config_path.write_text(lookout_toml(merged, program_rules))
        conf = (SUPERVISORD_CONF.replace("loglevel=info", f"loglevel={loglevel}")
                .replace("logfile=%(here)s/supervisord.log", f"logfile={main_log}"
                         + ("" if main_log.startswith("%(here)s") else "\nlogfile_maxbytes=0"))
                + "\n" + textwrap.dedent(programs))
        if listener:
            conf += "\n" + listener_snippet(self.config_path, self.listener_log)
        self.conf = root / "supervisord.conf"
        self.conf.write_text(conf)
        self.proc: subprocess.Popen | None = None

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["PATH"] = f"{Path(sys.executable).parent}:{env.get('PATH', '')}"
        env["PYTHONUNBUFFERED"] = "1"
        env.update(self.environment)
        return env

    def step_clock(self, seconds: float) -> None:
        """Step the wall clock of supervisord, its listener and its Python programs by `seconds`
        (negative: back), as NTP or a VM restore does; their monotonic clock goes on. Needs
        clock_step=True. The file is replaced whole: each process's next time.time() reads it."""
        assert "LOOKOUT_TEST_CLOCK_OFFSET_FILE" in self.environment, "start the Supervisor with clock_step=True"
        offset = float(self.clock_offset_file.read_text() or 0) + seconds
        tmp = self.clock_offset_file.with_suffix(".tmp")
        tmp.write_text(repr(offset))
        os.replace(tmp, self.clock_offset_file)

    def children(self) -> list[int]:
        """The pids of supervisord's children (its programs and the listener), from /proc."""
        if self.proc is None:
            return []
        kids = []
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                with open(f"/proc/{pid}/stat", "rb") as f:
                    fields = f.read().rsplit(b")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == self.proc.pid:
                kids.append(int(pid))
        return kids

    def start(self, wait_listener: bool = True) -> Supervisor:
        self.proc = subprocess.Popen(
            [*self.wrapper, sys.executable, "-m", "supervisor.supervisord", "-c", str(self.conf)],
            cwd=self.root,
            env=self.env(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for(self._answers, STARTUP_DEADLINE, "supervisord to answer")
        if wait_listener:
            self.wait_state("lookout:lookout", "RUNNING", STARTUP_DEADLINE)
            wait_for(lambda: "ready" in self.listener_output(), STARTUP_DEADLINE, "listener ready")
        return self

    def _answers(self) -> bool:
        try:
            return self.rpc().call("supervisor.getState")["statename"] == "RUNNING"
        except Exception:
            return False

    def rpc(self):  # noqa: ANN201
        from lookout.config import SupervisorSettings
        from lookout.rpc import SupervisorClient

        return SupervisorClient(SupervisorSettings(serverurl=f"unix://{self.sock}", timeout=10))

    def info(self, namespec: str) -> dict[str, Any]:
        return self.rpc().call("supervisor.getProcessInfo", namespec)

    def state_of(self, namespec: str) -> str:
        try:
            return self.info(namespec)["statename"]
        except Exception:
            return "?"

    def wait_state(self, namespec: str, state: str, timeout: float = 15) -> None:
        wait_for(lambda: self.state_of(namespec) == state, timeout, f"{namespec} {state}")

    def lookout(self, *args: str) -> subprocess.CompletedProcess:
        """The `lookout` command on this supervisord's lookout.toml, in its environment."""
        return subprocess.run([sys.executable, "-m", "lookout", "-c", str(self.config_path), *args],
                              capture_output=True, text=True, timeout=60, env=self.env())

    def ctl(self, *args: str, check: bool = False) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "supervisor.supervisorctl", "-c", str(self.conf), *args],
            capture_output=True,
            text=True,
            env=self.env(),
            timeout=60,
            check=check,
        )

    def log(self) -> str:
        path = self.root / "supervisord.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def listener_output(self) -> str:
        return self.listener_log.read_text(errors="replace") if self.listener_log.exists() else ""

    def listener_pid(self) -> int:
        return int(self.info("lookout:lookout")["pid"])

    def listener_running_anew(self, old_pid: int) -> bool:
        """RUNNING with another pid than old_pid, from ONE answer: two calls could see the old state
        and the new pid of a listener that is still STARTING."""
        try:
            info = self.info("lookout:lookout")
        except Exception:
            return False
        return info["statename"] == "RUNNING" and info["pid"] not in (0, old_pid)

    def db(self):  # noqa: ANN201
        import sqlite3

        conn = sqlite3.connect(f"file:{self.state_path}?mode=ro", uri=True, timeout=5)
        conn.row_factory = sqlite3.Row
        return conn

    def open_alerts(self) -> list[tuple[str, str, str]]:
        """(family, namespec, kind) of every open alert in the store."""
        with self.db() as conn:
            rows = conn.execute("SELECT family, namespec, kind FROM alerts WHERE resolved_at IS NULL")
            return [tuple(r) for r in rows]

    def process_row(self, namespec: str) -> dict[str, Any] | None:
        with self.db() as conn:
            row = conn.execute("SELECT * FROM processes WHERE namespec = ?", (namespec,)).fetchone()
            return dict(row) if row else None

    def check_store_invariants(self) -> None:
        """What must hold after every test with a live listener (a test that passes while the store
        is broken is a test that lies): none of the listener's store files is "(deleted)" in its
        /proc/PID/fd; PRAGMA integrity_check is ok; and a fresh reader sees what the listener writes
        now (a hold for a name no process has: the listener marks it seen, the reader must see that)."""
        import sqlite3

        try:
            info = self.info("lookout:lookout")
        except Exception:
            return  # supervisord is gone: nothing runs that could still be writing
        if info["statename"] != "RUNNING" or not self.state_path.exists():
            return
        pid = info["pid"]
        store = str(self.state_path)
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            assert not (target.startswith(store) and target.endswith("(deleted)")), \
                f"the listener writes to a deleted store file: {target}"
        with self.db() as conn:
            assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        conn = sqlite3.connect(store, timeout=10)
        try:
            with conn:
                hold = conn.execute("INSERT INTO holds(namespec, created_at, reason) VALUES "
                                    "('lookout-invariant:check', ?, 'harness')", (time.time(),)).lastrowid
            try:
                wait_for(lambda: conn.execute("SELECT seen_at FROM holds WHERE id = ?", (hold,)).fetchone()[0],
                         20, "a fresh reader to see what the listener writes now")
            finally:
                with conn:
                    conn.execute("DELETE FROM holds WHERE id = ?", (hold,))
        finally:
            conn.close()

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


# ---- lookout-exporter ------------------------------------------------------------------


class ExporterProcess:
    def __init__(self, sup, *args: str, scheme: str = "http") -> None:
        self.sup, self.args, self.scheme = sup, args, scheme
        self.port = free_port()
        self.proc: subprocess.Popen | None = None

    def start(self) -> ExporterProcess:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "lookout.exporter", "-c", str(self.sup.config_path), "--listen",
             f"127.0.0.1:{self.port}", *self.args],
            stdout=subprocess.DEVNULL, stderr=open(self.sup.root / "exporter.log", "ab"),  # noqa: SIM115
        )
        wait_for(lambda: self._healthy(), 15, "exporter /healthz")
        return self

    def _healthy(self) -> bool:
        assert self.proc is not None and self.proc.poll() is None, "the exporter exited: see exporter.log"
        try:
            return self.get("/healthz")[0] == 200
        except OSError:
            return False

    def get(self, path: str, auth: tuple[str, str] | None = None) -> tuple[int, str]:
        req = urllib.request.Request(f"{self.scheme}://127.0.0.1:{self.port}{path}")
        if auth:
            req.add_header("Authorization", "Basic " + base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode())
        ctx = ssl._create_unverified_context() if self.scheme == "https" else None
        try:
            with urllib.request.urlopen(req, timeout=10, context=ctx) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()

    def metrics(self, auth: tuple[str, str] | None = None) -> dict[str, dict[tuple, float]]:
        status, body = self.get("/metrics", auth)
        assert status == 200, body
        out: dict[str, dict[tuple, float]] = {}
        for fam in text_string_to_metric_families(body):
            for s in fam.samples:
                out.setdefault(s.name, {})[tuple(sorted(s.labels.items()))] = s.value
        return out

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(10)


def about(text: str):  # noqa: ANN201
    """An outbox message's About in the short notation the delivery tests are written in: "a1 a2"
    (alerts), "system", "repost a1", "" (a row from a store before schema 5: everything)."""
    from lookout.listener.store.delivery import About
    from lookout.listener.store.schema import legacy_about

    ids, system, everything, repost = legacy_about(text)
    return About(tuple(ids), system, everything, repost)
