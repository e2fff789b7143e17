"""lookout-exporter [-c lookout.toml] [--listen 127.0.0.1:9876]: Prometheus metrics for supervisord.

Reads [supervisor], [state] and [exporter] of the listener's lookout.toml. Exit status 2 for a
bad config (one line naming the key).
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import ssl
import sys
import threading

from ..listener.config import ConfigError, load_config
from ..listener.redact import install_log_filter


def parse_listen(value: str, key: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) < 65536:
        raise ConfigError(key, f"{value!r} is not HOST:PORT")
    return host.strip("[]") or "0.0.0.0", int(port)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="lookout-exporter", description=__doc__.split("\n\n")[0])
    p.add_argument("-c", "--config", help="lookout.toml (default: $LOOKOUT_CONFIG)")
    p.add_argument("--listen", help="HOST:PORT (default: exporter.listen)")
    p.add_argument("--no-resource-metrics", action="store_true", help="skip CPU, memory and fd metrics")
    p.add_argument("--log-level", default="info")
    args = p.parse_args(argv)
    logging.basicConfig(stream=sys.stderr, level=getattr(logging, args.log_level.upper(), logging.INFO),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        config = load_config(args.config)
        host, port = parse_listen(args.listen or config.exporter.listen,
                                  "--listen" if args.listen else "exporter.listen")
        for key in ("tls_cert", "tls_key"):
            path = getattr(config.exporter, key)
            if path and not os.path.isfile(path):
                raise ConfigError(f"exporter.{key}", f"{path}: no such file")
        e = config.exporter
        if e.basic_auth_user and len(e.basic_auth_password_sha256) != 64:
            raise ConfigError("exporter.basic_auth_password_sha256", "must be the sha256 hex digest of the password")
    except ConfigError as exc:
        print(f"lookout-exporter: {exc}", file=sys.stderr)
        return 2
    if config.supervisor.password:
        install_log_filter({config.supervisor.password})

    from .server import Exporter, make_server

    exporter = Exporter(config, resource_metrics=False if args.no_resource_metrics else None)
    try:
        server = make_server(exporter, host, port)
    except (OSError, ssl.SSLError) as exc:
        print(f"lookout-exporter: cannot listen on {host}:{port}: {exc}", file=sys.stderr)
        return 2

    def stop(*_: object) -> None:
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    scheme = "https" if config.exporter.tls_cert else "http"
    logging.getLogger("lookout.exporter").info("listening on %s://%s:%d/metrics", scheme, host, port)
    server.serve_forever()
    server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
