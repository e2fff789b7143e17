"""lookout-listener: supervisord's event listener (started by [eventlistener:lookout]).

    lookout-listener [-c lookout.toml] [--log-level LEVEL]

Every operator command is `lookout`'s (status, history, silence, probe, check-config, ...). The
listener's old forms stay as aliases into the same code, with lookout's help and answers:
`lookout-listener silence|silences|unsilence|probe ...` and `--check-config`, `--test-alert`.
Exit status 2 for a bad config, an unusable store or an unreachable supervisord (one line naming
the key).
"""

from __future__ import annotations

import argparse
import faulthandler
import logging
import os
import signal
import sys

from ..cli_args import OneLineParser, say_once_if_no_config, version
from ..config import Config, UserError, load_config
from ..redact import config_secrets, install_log_filter
from .store.files import StoreUnavailable, owner_hint

REGISTER_HINT = """\
lookout-listener is a supervisord event listener: supervisord starts it and talks to it over
stdin/stdout, so it does nothing useful on a terminal. `lookout init DIR` writes the snippet
supervisord needs (DIR/conf.d/lookout.conf: this command by its absolute path, -c DIR/lookout.toml,
its log in DIR/log/); include or copy it into supervisord's configuration, then
`supervisorctl reread && supervisorctl update`. To check the setup from a terminal:
  lookout -c DIR/lookout.toml check-config
  lookout -c DIR/lookout.toml test-alert
(README, "Install", has every step.)
"""


OPERATOR_FLAGS = {"--check-config": "check-config", "--test-alert": "test-alert"}
OPERATOR_COMMANDS = ("silence", "silences", "unsilence", "probe")


def _parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog="lookout-listener", description=__doc__.split("\n\n")[0],
                      epilog="Aliases of `lookout`'s commands: silence, silences, unsilence, probe, --check-config, "
                             "--test-alert (`lookout --help` has them all).")
    p.add_argument("--version", action="version", version=f"lookout-listener {version()}")
    p.add_argument("-c", "--config", help="lookout.toml (default: $LOOKOUT_CONFIG, else /etc/lookout/lookout.toml)")
    p.add_argument("--log-level", help="debug, info, warning, error (overrides listener.log_level)")
    return p


def operator_alias(argv: list[str]) -> list[str] | None:
    """The `lookout` command line an old operator form of lookout-listener stands for, or None
    when it is the daemon's: `-c X --check-config` -> `-c X check-config`, `-c X silence ...` as is
    (--log-level, the daemon's own, is dropped)."""
    out: list[str] = []
    command = None
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--log-level" or arg.startswith("--log-level="):
            i += 2 if arg == "--log-level" else 1
            continue
        if arg in OPERATOR_FLAGS and command is None:
            command = OPERATOR_FLAGS[arg]
        elif command is None and arg in OPERATOR_COMMANDS:
            return out + argv[i:]
        else:
            out.append(arg)
            if arg in ("-c", "--config") and i + 1 < len(argv):
                out.append(argv[i + 1])
                i += 1
        i += 1
    return None if command is None else out + [command]


def _setup_logging(level: str) -> None:
    logging.basicConfig(
        stream=sys.stderr,
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


def main(argv: list[str] | None = None) -> int:
    # 'supervisorctl signal USR1 lookout' writes every thread's stack to the listener's stderr log:
    # what a listener that says nothing is waiting for (stdout stays the protocol's alone). First
    # thing, before the slow imports of a start: a USR1 that came sooner would end the process.
    faulthandler.register(signal.SIGUSR1, file=2, all_threads=True)  # fd 2: whatever sys.stderr is now
    argv = list(sys.argv[1:] if argv is None else argv)
    alias = operator_alias(argv)
    if alias is not None:
        from ..cli import main as operator_main

        return operator_main(alias, prog="lookout-listener")
    args = _parser().parse_args(argv)
    try:
        config = load_config(args.config)
    except UserError as exc:
        print(f"lookout-listener: {exc}", file=sys.stderr)
        return 2
    _setup_logging(args.log_level or config.listener.log_level)
    install_log_filter(config_secrets(config))
    say_once_if_no_config(config, "lookout-listener")
    if not os.environ.get("SUPERVISOR_ENABLED") and sys.stdin.isatty():
        print(REGISTER_HINT, file=sys.stderr, end="")
        return 2
    try:
        return _run(config)
    except UserError as exc:
        print(f"lookout-listener: {exc}", file=sys.stderr)
        return 2
    except StoreUnavailable as exc:
        hint = owner_hint(config.state_path)
        print(f"lookout-listener: state.path: {config.state_path}: {exc}" + (f"; {hint}" if hint else ""),
              file=sys.stderr)
        return 2


def _run(config: Config) -> int:
    from .loop.listener import Listener
    from .notifier.targets import build_targets

    return Listener(config, build_targets(config)).run()


if __name__ == "__main__":
    sys.exit(main())
