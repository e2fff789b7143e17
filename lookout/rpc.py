"""A careful supervisord XML-RPC client, shared by the listener and the exporter.

supervisor's own SupervisorTransport has no timeout, and a transport reused across a reload
breaks for good (supervisor#653). So: every call has a timeout, and every call gets a fresh
connection. Unix sockets and http(s) with basic auth are both supported.

Answers are hostile input too: supervisord copies log text into them unescaped, so a colour
code makes them ill-formed XML. They are cleaned before parsing (text.clean_xml), and anything
that still cannot be read, or has the wrong shape, is reported as SupervisorUnavailable, the
same error as a supervisord that does not answer: callers have one failure to handle.
"""

from __future__ import annotations

import base64
import http.client
import logging
import os
import socket
import xmlrpc.client
from dataclasses import replace
from urllib.parse import unquote, urlsplit

from .config import SupervisorSettings
from .redact import safe_url
from .snapshot import ProcessSnapshot
from .text import clean_name, clean_xml

# supervisor.xmlrpc.Faults
SHUTDOWN_STATE = 6  # reloading or stopping
ALREADY_STARTED = 60
NOT_RUNNING = 70
log = logging.getLogger("lookout.rpc")
MAX_ANSWER_BYTES = 64 * 1024 * 1024  # getAllProcessInfo at 1000 programs is about 1 MB


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

    def parse_response(self, response):  # noqa: ANN001, ANN201
        body = response.read(MAX_ANSWER_BYTES + 1)
        if len(body) > MAX_ANSWER_BYTES:
            raise SupervisorUnavailable(f"answer larger than {MAX_ANSWER_BYTES} bytes")
        parser, unmarshaller = self.getparser()
        parser.feed(clean_xml(body))
        parser.close()
        return unmarshaller.close()


class SupervisorClient:
    def __init__(self, settings: SupervisorSettings) -> None:
        self.settings = settings

    def patient(self, timeout: float) -> SupervisorClient:
        """The same client with a longer timeout, for calls that wait (stopProcess with wait=True
        lasts up to stopwaitsecs, startProcess up to startsecs)."""
        return SupervisorClient(replace(self.settings, timeout=max(timeout, self.settings.timeout)))

    def _proxy(self) -> xmlrpc.client.ServerProxy:
        return xmlrpc.client.ServerProxy("http://127.0.0.1/RPC2", transport=_Transport(self.settings))

    def call(self, method: str, *args):  # noqa: ANN201
        """One call on a fresh connection. Faults propagate; transport errors and answers that
        cannot be parsed become SupervisorUnavailable with a message that never contains
        credentials."""
        proxy = self._proxy()
        try:
            return getattr(proxy, method)(*args)
        except (xmlrpc.client.Fault, SupervisorUnavailable):
            raise
        except xmlrpc.client.ProtocolError as exc:
            if exc.errcode == 401:
                raise SupervisorUnavailable("supervisord refused the credentials (supervisor.username, "
                                            "supervisor.password)") from None
            raise SupervisorUnavailable(f"HTTP {exc.errcode} {exc.errmsg}") from None
        except (OSError, http.client.HTTPException) as exc:
            raise SupervisorUnavailable(self._unreachable(exc)) from None
        except Exception as exc:  # expat, a bad int or date, a truncated answer: hostile input
            raise SupervisorUnavailable(f"malformed answer to {method}: {type(exc).__name__}") from None
        finally:
            proxy("close")()

    def _unreachable(self, exc: BaseException) -> str:
        """Why supervisord cannot be reached, in words that say what to do."""
        url = self.settings.serverurl
        if url.startswith("unix://"):
            path = url[len("unix://"):]
            if isinstance(exc, FileNotFoundError) or not os.path.exists(path):
                return (f"supervisord is not running? (no socket at {path}): if it listens elsewhere, set "
                        "supervisor.serverurl in lookout.toml (unix:// + supervisord.conf's [unix_http_server] file=)")
            if isinstance(exc, ConnectionRefusedError):
                return f"supervisord is not running? ({path} refuses connections)"
            if isinstance(exc, PermissionError):
                return (f"no permission to use supervisord's socket {path} (run as a user who may, or see chmod "
                        f"and chown in supervisord's [unix_http_server])")
        if isinstance(exc, ConnectionRefusedError):
            return f"supervisord is not running? ({safe_url(url)} refuses connections)"
        if isinstance(exc, (TimeoutError, socket.timeout)):
            return f"supervisord did not answer within {self.settings.timeout:g}s (supervisor.timeout)"
        return f"cannot reach supervisord at {safe_url(url) if not url.startswith('unix://') else url}: " \
               f"{type(exc).__name__}: {exc}"

    def multicall(self, calls: list[tuple[str, tuple]]) -> list:
        """system.multicall without stdlib MultiCall, whose result handling breaks on supervisord."""
        results = self.call("system.multicall", [{"methodName": m, "params": list(p)} for m, p in calls])
        if not isinstance(results, list) or len(results) != len(calls):
            raise SupervisorUnavailable("malformed answer to system.multicall")
        return [
            xmlrpc.client.Fault(r["faultCode"], r["faultString"])
            if isinstance(r, dict) and "faultCode" in r
            else r
            for r in results
        ]

    def all_process_info(self) -> list[ProcessSnapshot]:
        """getAllProcessInfo; an entry of the wrong shape is left out (and counted in the log),
        an answer that is not a list at all is SupervisorUnavailable."""
        infos = self.call("supervisor.getAllProcessInfo")
        if not isinstance(infos, list):
            raise SupervisorUnavailable("malformed answer to getAllProcessInfo: not a list")
        out = [snap for snap in map(snapshot_from_info, infos) if snap is not None]
        if len(out) != len(infos):
            log.warning("getAllProcessInfo: %d malformed entr(ies) ignored", len(infos) - len(out))
        return out

    def read_main_log(self, length: int = 65536) -> str:
        text = self.call("supervisor.readLog", -length, 0)
        if not isinstance(text, str):
            raise SupervisorUnavailable("malformed answer to readLog")
        return text


def _int(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(value)
    return value


def snapshot_from_info(info: object) -> ProcessSnapshot | None:
    """One getAllProcessInfo/getProcessInfo entry, or None when it does not have supervisord's shape."""
    if not isinstance(info, dict):
        return None
    try:
        group, name, state = info["group"], info["name"], info["statename"]
        if not (isinstance(group, str) and isinstance(name, str) and isinstance(state, str) and group and name):
            return None
        group, name = clean_name(group), clean_name(name)  # as events bring them: one record per program
        return ProcessSnapshot(
            group=group, name=name, state=state, start=_int(info["start"]), stop=_int(info["stop"]),
            now=_int(info["now"]), pid=_int(info["pid"]), exitstatus=_int(info["exitstatus"]),
            spawnerr=str(info.get("spawnerr", "") or ""),
            stdout_logfile=str(info.get("stdout_logfile", "") or ""),
            stderr_logfile=str(info.get("stderr_logfile", "") or ""),
        )
    except (KeyError, TypeError):
        return None
