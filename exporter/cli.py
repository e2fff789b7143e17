"""lookout-exporter [-c lookout.toml] [--web.listen-address HOST:PORT] [--web.config.file FILE]:
Prometheus metrics for supervisord.

Reads [supervisor], [state] and [exporter] of the listener's lookout.toml. Exit status 2 for a
bad config (one line naming the key). The --web.* flags are the names every Prometheus
exporter uses; --listen is the older spelling of --web.listen-address.
"""

from __future__ import annotations

import argparse
import errno
import logging
import signal
import sys
import threading
import time

from ..cli_args import OneLineParser, version
from ..config import ConfigError, UserError, load_config
from ..redact import config_secrets, install_log_filter


def parse_listen(value: str, key: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isascii() or not port.isdigit() or len(port) > 5 or not 0 <= int(port) < 65536:
        raise ConfigError(key, f"{value[:60]!r} is not HOST:PORT")
    return host.strip("[]") or "0.0.0.0", int(port)


def _parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog="lookout-exporter", description=__doc__.split("\n\n")[0])
    p.add_argument("--version", action="version", version=f"lookout-exporter {version()}")
    p.add_argument("-c", "--config", help="lookout.toml (default: $LOOKOUT_CONFIG, else /etc/lookout/lookout.toml)")
    p.add_argument("--web.listen-address", "--listen", dest="listen", help="HOST:PORT (default: exporter.listen)")
    p.add_argument("--web.telemetry-path", dest="telemetry_path",
                   help="path of the metrics (default: exporter.telemetry_path, /metrics)")
    p.add_argument("--web.config.file", dest="web_config",
                   help="exporter-toolkit web config: TLS, client CA, bcrypt basic auth, headers")
    p.add_argument("--no-resource-metrics", action="store_true", help="skip CPU, memory and fd metrics")
    p.add_argument("--log-level", default="info", choices=("debug", "info", "warning", "error"))
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(stream=sys.stderr, level=getattr(logging, args.log_level.upper(), logging.INFO),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        config = load_config(args.config)
        host, port = parse_listen(args.listen or config.exporter.listen,
                                  "--web.listen-address" if args.listen else "exporter.listen")
        path = args.telemetry_path or config.exporter.telemetry_path
        if not path.startswith("/") or path == "/":
            raise ConfigError("--web.telemetry-path", "must be a path below / such as /metrics")
        from .webconfig import web_config

        web = web_config(config.exporter, args.web_config or "")
    except UserError as exc:
        print(f"lookout-exporter: {exc}", file=sys.stderr)
        return 2
    install_log_filter(config_secrets(config))

    from .handover import BIND_WAIT, Handover, under_supervisord
    from .server import Exporter, make_server

    exporter = Exporter(config, resource_metrics=False if args.no_resource_metrics else None)
    supervised = under_supervisord()
    deadline = time.monotonic() + BIND_WAIT
    while True:
        try:
            server = make_server(exporter, host, port, web, path)
            break
        except OSError as exc:
            if supervised and exc.errno == errno.EADDRINUSE and time.monotonic() < deadline:
                if deadline - time.monotonic() > BIND_WAIT - 0.6:
                    logging.getLogger("lookout.exporter").warning(
                        "%s:%d is in use: waiting up to %.0fs for it (an exporter left by a supervisord that died "
                        "hands it over)", host, port, BIND_WAIT)
                time.sleep(0.5)
                continue
            print(f"lookout-exporter: cannot listen on {host}:{port}: {exc.strerror or exc}", file=sys.stderr)
            return 2

    def stop(*_: object) -> None:
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    if supervised:
        Handover(exporter.source.client, stop).start()
    scheme = "https" if web.tls else "http"
    logging.getLogger("lookout.exporter").info("listening on %s://%s:%d%s", scheme, host, port, path)
    server.serve_forever()
    server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
