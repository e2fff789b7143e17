"""HTTP: '/' landing page, '/metrics' (optionally behind basic auth), '/healthz'; optional TLS."""

from __future__ import annotations

import base64
import hashlib
import hmac
import html
import logging
import ssl
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CollectorRegistry, ProcessCollector, generate_latest

from ..listener.config import Config
from .metrics import CONTENT_TYPE, LabelCache, build_families, encode
from .resources import usage_by_root
from .source import Source

log = logging.getLogger("lookout.exporter")


class Exporter:
    """Turns one scrape request into text; safe to call from many threads at once."""

    def __init__(self, config: Config, resource_metrics: bool | None = None) -> None:
        self.config = config
        self.source = Source(config)
        self.labels = LabelCache()
        self.resource_metrics = config.exporter.resource_metrics if resource_metrics is None else resource_metrics
        self.self_metrics = CollectorRegistry()
        ProcessCollector(namespace="lookout_exporter", registry=self.self_metrics)
        self.last_source, self.last_why = "", ""

    def scrape(self) -> str:
        started = time.perf_counter()
        data = self.source.read()
        usage = usage_by_root([p.pid for p in data.processes if p.pid]) if self.resource_metrics else None
        if data.source != self.last_source:
            log.info("serving process states from %s%s", data.source, f" ({data.why})" if data.why else "")
        self.last_source, self.last_why = data.source, data.why
        families = build_families(data, usage, self.labels, time.perf_counter() - started)
        return encode(families) + generate_latest(self.self_metrics).decode()

    def check_auth(self, header: str | None) -> bool:
        e = self.config.exporter
        if not e.basic_auth_user:
            return True
        if not header or not header.startswith("Basic "):
            return False
        try:
            user, _, password = base64.b64decode(header[6:]).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            return False
        digest = hashlib.sha256(password.encode()).hexdigest()
        return hmac.compare_digest(user, e.basic_auth_user) & hmac.compare_digest(
            digest, e.basic_auth_password_sha256.lower()
        )


LANDING = """<!doctype html><html><head><title>lookout-exporter</title></head><body>
<h1>lookout-exporter</h1>
<p>Prometheus metrics for the processes of supervisord at <code>{url}</code>.</p>
<ul><li><a href="/metrics">/metrics</a></li><li><a href="/healthz">/healthz</a></li></ul>
<p>Last scrape served from: <b>{source}</b>{why}</p>
<p>State from the lookout listener's store at <code>{store}</code> while the listener is healthy,
otherwise from supervisord's XML-RPC.</p></body></html>
"""


def make_server(exporter: Exporter, host: str, port: int) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        server_version = "lookout-exporter"

        def do_GET(self) -> None:  # noqa: N802
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                if not exporter.check_auth(self.headers.get("Authorization")):
                    self._reply(401, "unauthorized\n", "text/plain",
                                {"WWW-Authenticate": 'Basic realm="lookout-exporter"'})
                    return
                try:
                    body = exporter.scrape()
                except Exception:
                    log.exception("scrape failed")
                    self._reply(500, "scrape failed; see the exporter's log\n", "text/plain")
                    return
                self._reply(200, body, CONTENT_TYPE)
            elif path == "/healthz":
                self._reply(200, "ok\n", "text/plain")
            elif path == "/":
                url = exporter.config.supervisor.serverurl
                page = LANDING.format(
                    url=html.escape(url if url.startswith("unix://") else url.split("@")[-1]),
                    source=html.escape(exporter.last_source or "no scrape yet"),
                    why=f" ({html.escape(exporter.last_why)})" if exporter.last_why else "",
                    store=html.escape(exporter.config.state_path),
                )
                self._reply(200, page, "text/html; charset=utf-8")
            else:
                self._reply(404, "not found\n", "text/plain")

        def _reply(self, status: int, body: str, ctype: str, headers: dict | None = None) -> None:
            data = body.encode()
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(data)))
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, fmt: str, *args: object) -> None:
            log.debug("%s " + fmt, self.address_string(), *args)

    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    e = exporter.config.exporter
    if e.tls_cert:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(e.tls_cert, e.tls_key)
        server.socket = context.wrap_socket(server.socket, server_side=True)
    return server
