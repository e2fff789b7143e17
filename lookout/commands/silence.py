"""`lookout silence PATTERN --for 30m [--reason]`, `silences`, `unsilence ID`: mute the alerts of
matching processes for a while (rows of the store's silences table; the notifier holds back what
they cover and sends what is still open when they end)."""

from __future__ import annotations

import argparse
import os
import sys
import time

from ..config import Config, UsageError, cli_duration, format_duration, shown
from ..listener.store.delivery import DeliveryStore
from ..listener.store.reads import StoreReader
from ..listener.store.schema import connect
from ..patterns import ProcessPattern, select

SILENCE_MIN, SILENCE_MAX = 1.0, 365 * 86400.0


def silence_seconds(text: str) -> float:
    """--for, within bounds: a 400-digit duration must not become an endless silence."""
    seconds = cli_duration(text, "--for")
    if not SILENCE_MIN <= seconds <= SILENCE_MAX:
        raise UsageError("--for", f"{shown(text)} is out of bounds: must be between 1s and 365d")
    return seconds


def silence_command(config: Config, args: argparse.Namespace) -> int:
    seconds = silence_seconds(args.duration) if args.command == "silence" else 0.0  # bounds first
    if args.command == "silence":
        try:
            ProcessPattern.parse(args.matcher)
        except ValueError as exc:
            raise UsageError("PATTERN", str(exc)) from None
    if args.command == "silences" and _no_store_yet(config.state_path):
        print("no active silences (no store yet)")
        return 0
    store = DeliveryStore(connect(config.state_path, readonly=args.command == "silences"))  # a listing only reads
    now = time.time()
    if args.command == "silence":
        sid = store.add_silence(args.matcher, now, now + seconds, args.reason)
        until = time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(now + seconds))  # the zone said
        print(f"silence {sid}: {args.matcher} until {until}")
        if not _matches_something(store.conn, args.matcher):
            print(f"note: no process matches {args.matcher!r} now; the silence holds for any that appears before "
                  "it ends")
        return 0
    if args.command == "silences":
        active = store.silences(now)
        if not active:
            print("no active silences")
        for s in active:
            print(f"{s.id:>4}  {s.matcher:<30} {format_duration(s.ends_at - now):>8} left  {s.reason}")
        return 0
    if store.end_silence(args.id, now):
        print(f"silence {args.id} ended; what it held back and is still open will be sent now")
        return 0
    print(f"no active silence with id {args.id}", file=sys.stderr)
    return 1


def _no_store_yet(path: str) -> bool:
    try:
        os.stat(path)
    except FileNotFoundError:
        return True
    except OSError:
        return False  # there, but hidden from this user: opening it says whose it is
    return False


def _matches_something(conn, matcher: str) -> bool:  # noqa: ANN001
    """Whether the silence names a process the store knows supervisord runs (patterns.py, as the
    notifier's Silence.covers asks)."""
    return bool(select(matcher, StoreReader(conn).namespecs()))
