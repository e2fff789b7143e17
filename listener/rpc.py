"""A careful supervisord XML-RPC client, shared by the listener and the exporter.

supervisor's own SupervisorTransport has no timeout, and a transport reused across a reload
breaks for good (supervisor#653). So: every call has a timeout, and every call gets a fresh
connection. Unix sockets and http(s) with basic auth are both supported.
"""

from __future__ import annotations

import base64
import http.client
import re
import socket
import xmlrpc.client
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

from .config import SupervisorSettings
from .rules.engine import ProcessSnapshot

SHUTDOWN_STATE = 6  # supervisor.xmlrpc.Faults.SHUTDOWN_STATE: reloading or stopping
NO_FILE = 70


class SupervisorUnavailable(Exception):
    """supervisord did not answer (down, timeout, auth); str() is safe to log."""


class _UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self.path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self.path)
        except OSError:
            sock.close()
            raise
        self.sock = sock


class _Transport(xmlrpc.client.Transport):
    def __init__(self, settings: SupervisorSettings) -> None:
        super().__init__()
        self.settings = settings
        url = settings.serverurl
        self.unix_path = url[len("unix://"):] if url.startswith("unix://") else None
        self.parts = None if self.unix_path else urlsplit(url)
        user = settings.username or (self.parts.username if self.parts else None) or ""
        password = settings.password or (self.parts.password if self.parts else None) or ""
        self.auth = None
        if user:
            token = f"{unquote(user)}:{unquote(password)}".encode()
            self.auth = "Basic " + base64.b64encode(token).decode()

    def make_connection(self, host):  # noqa: ANN001 - xmlrpc's signature
        timeout = self.settings.timeout
        if self.unix_path is not None:
            return _UnixHTTPConnection(self.unix_path, timeout)
        assert self.parts is not None
        cls = http.client.HTTPSConnection if self.parts.scheme == "https" else http.client.HTTPConnection
        return cls(self.parts.hostname or "127.0.0.1", self.parts.port, timeout=timeout)

    def send_headers(self, connection, headers):  # noqa: ANN001
        if self.auth:
            headers = [*headers, ("Authorization", self.auth)]
        super().send_headers(connection, headers)


class SupervisorClient:
    def __init__(self, settings: SupervisorSettings) -> None:
        self.settings = settings

    def _proxy(self) -> xmlrpc.client.ServerProxy:
        return xmlrpc.client.ServerProxy("http://127.0.0.1/RPC2", transport=_Transport(self.settings))

    def call(self, method: str, *args):  # noqa: ANN201
        """One call on a fresh connection. Faults propagate; transport errors become
        SupervisorUnavailable with a message that never contains credentials."""
        proxy = self._proxy()
        try:
            return getattr(proxy, method)(*args)
        except xmlrpc.client.Fault:
            raise
        except xmlrpc.client.ProtocolError as exc:
            raise SupervisorUnavailable(f"HTTP {exc.errcode} {exc.errmsg}") from None
        except (OSError, http.client.HTTPException, xmlrpc.client.ResponseError) as exc:
            raise SupervisorUnavailable(f"{type(exc).__name__}: {exc}") from None
        finally:
            proxy("close")()

    def multicall(self, calls: list[tuple[str, tuple]]) -> list:
        """system.multicall without stdlib MultiCall, whose result handling breaks on supervisord."""
        results = self.call("system.multicall", [{"methodName": m, "params": list(p)} for m, p in calls])
        return [
            xmlrpc.client.Fault(r["faultCode"], r["faultString"])
            if isinstance(r, dict) and "faultCode" in r
            else r
            for r in results
        ]

    def all_process_info(self) -> list[ProcessSnapshot]:
        return [
            ProcessSnapshot(
                group=i["group"], name=i["name"], state=i["statename"], start=i["start"],
                stop=i["stop"], now=i["now"], pid=i["pid"], exitstatus=i["exitstatus"],
                spawnerr=i.get("spawnerr", "") or "",
            )
            for i in self.call("supervisor.getAllProcessInfo")
        ]

    def recent_exits(self, namespecs: Iterable[str]) -> dict[str, ExitInfo]:
        """The last exit of each process, from the tail of supervisord's main log (events do not
        carry exit statuses, and getProcessInfo's is reset by the respawn)."""
        by_name: dict[str, list[str]] = {}
        for ns in namespecs:
            by_name.setdefault(ns.split(":", 1)[-1], []).append(ns)  # the log names processes only
        text = self.call("supervisor.readLog", -65536, 0)
        return {ns: info for name, info in last_exits(text, set(by_name)).items() for ns in by_name[name]}

    def log_tail(self, namespec: str, max_bytes: int = 16384) -> str:
        """Recent stderr of a process, or stdout when stderr is redirected or not logged."""
        for method in ("supervisor.tailProcessStderrLog", "supervisor.tailProcessStdoutLog"):
            try:
                text, _, _ = self.call(method, namespec, 0, max_bytes)
            except xmlrpc.client.Fault:
                continue
            if text.strip():
                return text
        return ""


# supervisord's main log line for every exit (process.py, Subprocess.finish):
#   "exited: NAME (exit status 3; not expected)" / "(terminated by SIGKILL; not expected)"
_EXIT_LINE = re.compile(
    r"(?:exited|stopped): (?P<name>\S+) \((?P<how>exit status (?P<code>\d+)|terminated by (?P<sig>[^\s;)]+))"
)


@dataclass(frozen=True)
class ExitInfo:
    status: int  # -1 for a signal, as supervisord reports it
    text: str  # "exit status 3" or "killed by SIGKILL"


def last_exits(main_log: str, names: set[str] | None = None) -> dict[str, ExitInfo]:
    """The last exit of each process named in supervisord's main log (names without group)."""
    found: dict[str, ExitInfo] = {}
    for m in _EXIT_LINE.finditer(main_log):
        name = m.group("name")
        if names is not None and name not in names:
            continue
        if m.group("code") is not None:
            found[name] = ExitInfo(int(m.group("code")), f"exit status {m.group('code')}")
        else:
            sig = m.group("sig").replace(" (core dumped)", "")
            found[name] = ExitInfo(-1, f"killed by {sig}")
    return found
