"""The demo's miniature trading stack: one script, one role per supervisord program.

    feed      a market feed that loses its exchange connection after ~2 s and exits 3
    risk      a risk manager that recomputes limits every second
    executor  an order executor that sends a heartbeat every 2 s
    backtest  a backtest worker that chews through jobs forever
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


ROLES = {"feed": feed, "risk": risk, "executor": executor, "backtest": backtest}

if __name__ == "__main__":
    sys.exit(ROLES[sys.argv[1]]())
