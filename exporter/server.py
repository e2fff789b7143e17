"""HTTP: '/' landing page, '/metrics' (gzip when asked; TLS and basic auth from the web config),
'/healthz' (never behind auth: for supervisord-side checks). Connections: httpd.ConnectionServer."""

from __future__ import annotations

import gzip
import html
import io
import logging
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler

from prometheus_client import CollectorRegistry, ProcessCollector, generate_latest

from ..config import Config
from ..listener.rules.policy import PolicyBook
from ..procfs import usage_by_root
from .dependencies import dependency_families
from .httpd import ConnectionServer
from .metrics import CONTENT_TYPE, LabelCache, build_families, encode, health_families
from .source import Source
from .webconfig import WebConfig

log = logging.getLogger("lookout.exporter")
GZIP_LEVEL = 1  # 1 MB of text at 1000 programs: level 1 shrinks it ~8x in a few milliseconds


class Exporter:
    """Turns one scrape request into text; safe to call from many threads at once."""

    def __init__(self, config: Config, resource_metrics: bool | None = None) -> None:
        self.config = config
        self.source = Source(config)
        self.labels = LabelCache()
        self.policies = PolicyBook(config.alerts, config.probes)
        self.resource_metrics = config.exporter.resource_metrics if resource_metrics is None else resource_metrics
        self.self_metrics = CollectorRegistry()
        ProcessCollector(namespace="lookout_exporter", registry=self.self_metrics)
        self.last_source, self.last_why = "", ""
        self._flight = threading.Lock()  # one scrape at a time; those that waited share its answer
        self._last: tuple[float, str] = (0.0, "")

    def scrape(self) -> str:
        """The metrics; a flood of requests costs one scrape per round, not one each: a request
        that had to wait for a scrape in progress gets that scrape's answer."""
        asked = time.monotonic()
        with self._flight:
            done_at, text = self._last
            if done_at >= asked:
                return text
            text = self._scrape()
            self._last = (time.monotonic(), text)
            return text

    def _scrape(self) -> str:
        started = time.perf_counter()
        data = self.source.read()
        usage = usage_by_root([p.pid for p in data.processes if p.pid]) if self.resource_metrics else None
        if data.source != self.last_source:
            log.info("serving process states from %s%s", data.source, f" ({data.why})" if data.why else "")
        self.last_source, self.last_why = data.source, data.why
        families = build_families(data, usage, self.labels, time.perf_counter() - started)
        families += health_families(data, self.labels, self.policies)
        families += dependency_families(data, self.config, time.time())
        return encode(families) + generate_latest(self.self_metrics).decode()


LANDING = """<!doctype html><html><head><title>lookout-exporter</title></head><body>
<h1>lookout-exporter</h1>
<p>Prometheus metrics for the processes of supervisord at <code>{url}</code>.</p>
<ul><li><a href="{path}">{path}</a></li><li><a href="/healthz">/healthz</a></li></ul>
<p>Last scrape served from: <b>{source}</b>{why}</p>
<p>State from the lookout listener's store at <code>{store}</code> while the listener is healthy,
otherwise from supervisord's XML-RPC.</p></body></html>
"""


def accepts_gzip(header: str | None) -> bool:
    """Accept-Encoding with its q-values (RFC 9110): 'identity, gzip;q=0' refuses gzip; '*' counts
    for gzip unless gzip is named."""
    gzip_q = star_q = None
    for part in (header or "").split(","):
        name, _, params = part.strip().partition(";")
        q = 1.0
        for param in params.split(";"):
            key, _, value = param.strip().partition("=")
            if key.strip().lower() == "q":
                try:
                    q = float(value.strip())
                except ValueError:
                    q = 0.0
        name = name.strip().lower()
        if name in ("gzip", "x-gzip"):
            gzip_q = q if gzip_q is None else max(gzip_q, q)
        elif name == "*":
            star_q = q
    if gzip_q is not None:
        return gzip_q > 0
    return star_q is not None and star_q > 0


class _Writer(io.RawIOBase):
    """The response goes out with sendall (a partial send must not cut a scrape)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:  # noqa: ANN001
        self.sock.sendall(data)
        return len(data)


class Handler(BaseHTTPRequestHandler):
    """One request per connection (HTTP/1.0): a connection never holds a worker while idle. The
    request head was read by the server's selector thread (httpd); the handler reads it from there."""

    server_version = "lookout-exporter"
    sys_version = ""  # no Python version in the Server header
    exporter: Exporter
    web: WebConfig
    telemetry_path = "/metrics"

    def __init__(self, sock: socket.socket, addr: tuple, head: bytes) -> None:
        self.head = head
        super().__init__(sock, addr, None)

    def setup(self) -> None:
        self.connection = self.request
        self.rfile = io.BytesIO(self.head)
        self.wfile = _Writer(self.request)

    def parse_request(self) -> bool:
        if not super().parse_request():
            return False
        if self.request_version == "HTTP/0.9":  # no status line, no headers: nothing a scraper wants
            self.send_error(400, "HTTP/0.9 is not served")
            return False
        return True

    def do_HEAD(self) -> None:  # noqa: N802
        self.head_only = True
        self.do_GET()

    def do_GET(self) -> None:  # noqa: N802
        path = self.path.split("?", 1)[0]
        if path != "/healthz" and not self.web.authorized(self.headers.get("Authorization")):
            self._reply(401, b"unauthorized\n", "text/plain", {"WWW-Authenticate": 'Basic realm="lookout-exporter"'})
            return
        if path == self.telemetry_path:
            try:
                body = self.exporter.scrape().encode()
            except Exception:
                log.exception("scrape failed")
                self._reply(500, b"scrape failed; see the exporter's log\n", "text/plain")
                return
            self._reply(200, body, CONTENT_TYPE, compress=True)
        elif path == "/healthz":
            self._reply(200, b"ok\n", "text/plain")
        elif path == "/":
            e = self.exporter
            url = e.config.supervisor.serverurl
            page = LANDING.format(
                url=html.escape(url if url.startswith("unix://") else url.split("@")[-1]),
                path=html.escape(self.telemetry_path),
                source=html.escape(e.last_source or "no scrape yet"),
                why=f" ({html.escape(e.last_why)})" if e.last_why else "",
                store=html.escape(e.config.state_path),
            )
            self._reply(200, page.encode(), "text/html; charset=utf-8")
        else:
            self._reply(404, b"not found\n", "text/plain")

    def _reply(self, status: int, data: bytes, ctype: str, headers: dict | None = None,
               compress: bool = False) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        if compress:
            self.send_header("Vary", "Accept-Encoding")
        if compress and accepts_gzip(self.headers.get("Accept-Encoding")):
            data = gzip.compress(data, compresslevel=GZIP_LEVEL)
            self.send_header("Content-Encoding", "gzip")
        self.send_header("Content-Length", str(len(data)))
        for k, v in {**self.web.headers, **(headers or {})}.items():
            self.send_header(k, v)
        self.end_headers()
        if not getattr(self, "head_only", False):
            self.wfile.write(data)

    def log_message(self, fmt: str, *args: object) -> None:
        log.debug("%s " + fmt, self.address_string(), *args)


def make_server(exporter: Exporter, host: str, port: int, web: WebConfig | None = None,
                telemetry_path: str = "") -> ConnectionServer:
    web = web or WebConfig()
    handler = type("ExporterHandler", (Handler,), {
        "exporter": exporter, "web": web,
        "telemetry_path": telemetry_path or exporter.config.exporter.telemetry_path,
    })

    def serve(sock, addr, head) -> None:  # noqa: ANN001
        handler(sock, addr, head)

    settings = exporter.config.exporter
    return ConnectionServer(host, port, serve, ssl_context=web.ssl_context, head_timeout=settings.head_timeout,
                            per_client=settings.per_client)
