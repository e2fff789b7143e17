"""The demo's miniature trading stack: one script, one role per supervisord program.

    feed      a market feed that loses its exchange connection after ~2 s and exits 3
    risk      a risk manager that recomputes limits every second
    executor  an order executor that sends a heartbeat every 2 s
    backtest  a backtest worker that chews through jobs forever
    quotes    a quote server (GET /healthz) that, in its first run, stops answering after ~12 s:
              RUNNING but hung, which only a health probe sees
"""

from __future__ import annotations

import os
import random
import sys
import time


def log(msg: str, err: bool = False) -> None:
    stream = sys.stderr if err else sys.stdout
    print(f"{time.strftime('%H:%M:%S')} {msg}", file=stream, flush=True)


def feed() -> int:
    log("market_feed: connecting to exchange feed wss://feed.example.exchange/v2 ...")
    for tick in range(8):
        log(f"market_feed: ESZ6 bid=6012.25 ask=6012.50 seq={1000 + tick}")
        time.sleep(0.25)
    log("market_feed: heartbeat missed (3 of 3), connection reset by peer (ECONNRESET)", err=True)
    log("market_feed: giving up on this session; exit 3", err=True)
    return 3


def risk() -> int:
    while True:
        log(f"risk_manager: gross exposure {random.uniform(0.2, 0.6):.2f} of limit, all limits OK")
        time.sleep(1)


def executor() -> int:
    while True:
        log("order_executor: heartbeat to broker OK, 0 orders pending")
        time.sleep(2)


def backtest() -> int:
    worker = os.environ.get("SUPERVISOR_PROCESS_NAME", "backtest_worker")
    job = 0
    while True:
        job += 1
        log(f"{worker}: backtest job {job} done, sharpe {random.uniform(0.5, 2.5):.2f}")
        time.sleep(3)


def quotes() -> int:
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    port, state_dir = int(sys.argv[2]), sys.argv[3]
    marker = os.path.join(state_dir, "quote_server.hung-once")
    hang_at = None if os.path.exists(marker) else time.time() + 12
    log(f"quote_server: serving quotes on port {port}")

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            if hang_at is not None and time.time() > hang_at:
                if not os.path.exists(marker):
                    open(marker, "w").close()
                    log("quote_server: upstream lock held by a stuck thread (deadlock)", err=True)
                time.sleep(3600)  # accepts, never answers: RUNNING but hung
            body = b"ok"
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.daemon_threads = True
    server.serve_forever()
    return 0


ROLES = {"feed": feed, "risk": risk, "executor": executor, "backtest": backtest, "quotes": quotes}

if __name__ == "__main__":
    sys.exit(ROLES[sys.argv[1]]())
