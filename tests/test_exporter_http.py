"""Issue 7, acceptance 8: idle clients cannot starve scrapes (plain HTTP and TLS), and a user
name that is not ASCII gets a 401, not a dropped connection."""

from __future__ import annotations

import hashlib
import socket
import subprocess
import time

import pytest

from .conftest import fast_alerts

PROGRAMS = "[program:svc]\ncommand=sleep 1000\n"


def _self_signed(tmp_path) -> tuple[str, str]:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out",
                    str(cert), "-days", "2", "-subj", "/CN=127.0.0.1"], check=True, capture_output=True, timeout=60)
    return str(cert), str(key)


@pytest.mark.parametrize("scheme", ["http", "https"])
def test_200_idle_connections_do_not_block_scrapes(supervisor_factory, webhook, exporter_factory, tmp_path,
                                                   scheme):
    settings = fast_alerts(webhook)
    if scheme == "https":
        cert, key = _self_signed(tmp_path)
        settings["exporter"] = {"tls_cert": cert, "tls_key": key}
    sup = supervisor_factory(PROGRAMS, settings).start()
    exp = exporter_factory(sup, scheme=scheme)
    idle = []
    try:
        for _ in range(200):
            idle.append(socket.create_connection(("127.0.0.1", exp.port), timeout=5))  # connect, say nothing
        for _ in range(5):
            started = time.monotonic()
            status, body = exp.get("/metrics")
            took = time.monotonic() - started
            assert status == 200 and "supervisor_process_up" in body
            assert took < 1.0, f"a scrape took {took:.2f}s with 200 idle connections open"
        # A slow client that sent half a request line does not hold things up either.
        slow = socket.create_connection(("127.0.0.1", exp.port), timeout=5)
        slow.sendall(b"GET /met")
        idle.append(slow)
        started = time.monotonic()
        assert exp.get("/metrics")[0] == 200 and time.monotonic() - started < 1.0
    finally:
        for s in idle:
            s.close()
    assert exp.proc.poll() is None


def test_non_ascii_user_name_gets_401(supervisor_factory, webhook, exporter_factory):
    settings = fast_alerts(webhook)
    settings["exporter"] = {"basic_auth_user": "prom",
                            "basic_auth_password_sha256": hashlib.sha256(b"s3cret").hexdigest()}
    sup = supervisor_factory(PROGRAMS, settings).start()
    exp = exporter_factory(sup)
    assert exp.get("/metrics", ("prömetheus", "s3cret"))[0] == 401
    assert exp.get("/metrics", ("prom", "sécret"))[0] == 401
    assert exp.get("/metrics", ("prom", "s3cret"))[0] == 200
    assert exp.get("/healthz")[0] == 200  # liveness checks need no credentials
