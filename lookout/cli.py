"""lookout: the operator's command, for the terminal, cron and health checks.

    lookout status [PATTERN] [--json] [--check]   supervisorctl status plus restarts, exits, alerts
                   [--ignore-stopped]
    lookout history NAME [--since 24h] [--json]   one process's state changes, exits and alerts
    lookout alerts [PATTERN] [--json]             the open alerts
    lookout deps [--json]                         the [[dependencies]] graph, with the states of now
    lookout silence PATTERN --for 30m [--reason]  / silences / unsilence ID
    lookout hold NAME [--reason] / release NAME   keep lookout's hands off a process (the brake too)
    lookout probe [PATTERN]                       run the health probes once, now
    lookout test-alert                            one test message to every target
    lookout check-config                          validate lookout.toml, the store and supervisord
    lookout init DIR                              write the snippets, example config, dashboards, rules

PATTERN, NAME: as supervisorctl names processes ('feed', 'trading_system:feed', 'pool' or
'pool:*' for a whole group), or a glob ('pool_0*', '*:feed'); the same for every command.

The config is -c lookout.toml, else $LOOKOUT_CONFIG, else /etc/lookout/lookout.toml.
The daemons are lookout-listener and lookout-exporter; `lookout-listener`'s own subcommands
and flags keep working.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys

from .cli_args import PATTERN_HELP, OneLineParser, say_once_if_no_config, silence_id, version
from .config import UserError, cli_duration, load_config
from .listener.store.files import StoreUnavailable, owner_hint
from .redact import config_secrets, install_log_filter


def _parser(prog: str = "lookout") -> OneLineParser:
    p = OneLineParser(prog=prog, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-c", "--config", help="lookout.toml (default: $LOOKOUT_CONFIG, else /etc/lookout/lookout.toml)")
    p.add_argument("--version", action="version", version=f"{prog} {version()}")
    # Also before the command (`lookout --color status web`), as git takes it: only status colours.
    p.add_argument("--color", dest="global_color", nargs="?", const="always", default=None,
                   choices=("auto", "always", "never"), help="as status --color")
    sub = p.add_subparsers(dest="command", required=True, parser_class=OneLineParser, metavar="COMMAND")
    s = sub.add_parser("status", help="every process: state, health, restarts, last exit, alerts")
    s.add_argument("pattern", nargs="?", default="*", help=PATTERN_HELP + " (default: all)")
    s.add_argument("--json", action="store_true", help="a list of objects (see `lookout status --json-schema`)")
    s.add_argument("--json-schema", action="store_true", help="print the JSON schema of --json and exit")
    s.add_argument("--check", action="store_true",
                   help="exit 0 if all run (as `grep -v RUNNING` would say, one-shot programs that exited as "
                        "expected and never-started ones fine) and no alert is open, 1 if not (naming them), "
                        "2 if supervisord or the store cannot be read")
    s.add_argument("--ignore-stopped", action="store_true",
                   help="with --check: STOPPED and EXITED processes are fine (stopped on purpose)")
    s.add_argument("--color", nargs="?", const="always", default=None, choices=("auto", "always", "never"),
                   help="colour the states: auto (on a terminal, unless NO_COLOR), always (also --color alone), "
                        "never")
    h = sub.add_parser("history", help="one process's state changes, exits and alerts, in time order")
    h.add_argument("name", help="as supervisorctl names it: 'reconciler' or 'group:name' (a pattern naming one)")
    h.add_argument("--since", default="24h", help="how far back (default 24h)")
    h.add_argument("--json", action="store_true")
    a = sub.add_parser("alerts", help="the open alerts")
    a.add_argument("pattern", nargs="?", default="*", help=PATTERN_HELP + " (default: all)")
    a.add_argument("--json", action="store_true")
    d = sub.add_parser("deps", help="the [[dependencies]] graph: each dependant, its needs and their states")
    d.add_argument("--json", action="store_true")
    si = sub.add_parser("silence", help="mute alerts of matching processes for a while")
    si.add_argument("matcher", help=PATTERN_HELP)
    si.add_argument("--for", dest="duration", required=True, help="e.g. 30m, 2h")
    si.add_argument("--reason", default="")
    sub.add_parser("silences", help="the active silences")
    un = sub.add_parser("unsilence", help="end a silence now")
    un.add_argument("id", type=silence_id)
    ho = sub.add_parser("hold", help="lookout starts, stops and restarts nothing of NAME until `release` "
                                     "(or an operator starts it): keeps a braked program stopped")
    ho.add_argument("name", help=PATTERN_HELP)
    ho.add_argument("--reason", default="")
    re_ = sub.add_parser("release", help="end a hold: lookout may act again (a waiting brake starts it)")
    re_.add_argument("name", help=PATTERN_HELP)
    pr = sub.add_parser("probe", help="run the matching health probes once, now")
    pr.add_argument("pattern", nargs="?", default="*", help=PATTERN_HELP + " (default: all)")
    sub.add_parser("test-alert", help="send a test message to every target")
    sub.add_parser("check-config", help="validate lookout.toml, the store and supervisord access")
    i = sub.add_parser("init", help="write the supervisord snippets, example config, dashboards and rules")
    i.add_argument("directory")
    i.add_argument("--force", action="store_true", help="overwrite existing files")
    i.add_argument("--supervisord-conf", metavar="PATH",
                   help="this host's supervisord.conf (default: where supervisord itself looks without -c)")
    return p


def _bare_color(argv: list[str]) -> list[str]:
    """`--color feed` means --color=always for the pattern feed, not an invalid choice 'feed'."""
    out = list(argv)
    for i, arg in enumerate(out):
        bare = i + 1 == len(out) or out[i + 1] not in ("auto", "always", "never")
        if arg in ("--co", "--col", "--colo", "--color") and bare:
            out[i] = "--color=always"
    return out


def _whole_groups(args: argparse.Namespace) -> None:
    """supervisorctl's 'pool:' names the whole group: here it is 'pool:*'."""
    for field in ("pattern", "name", "matcher"):
        value = getattr(args, field, None)
        if isinstance(value, str) and value.endswith(":") and value.count(":") == 1:
            setattr(args, field, value + "*")


def main(argv: list[str] | None = None, prog: str = "lookout") -> int:
    """`lookout`, and lookout-listener's old operator subcommands and flags (prog says which)."""
    if hasattr(signal, "SIGPIPE") and argv is None:
        signal.signal(signal.SIGPIPE, signal.SIG_DFL)  # `lookout history x | head` ends quietly
    args = _parser(prog).parse_args(_bare_color(sys.argv[1:] if argv is None else argv))
    _whole_groups(args)
    if args.command == "init":
        from .commands.init import init_command

        return init_command(args.directory, args.force, args.supervisord_conf)
    if args.command == "status" and args.json_schema:
        from .commands.status_schema import STATUS_SCHEMA

        print(json.dumps(STATUS_SCHEMA, indent=2))
        return 0
    config = None
    try:
        config = load_config(args.config)
        install_log_filter(config_secrets(config))
        say_once_if_no_config(config, prog)
        return _run(config, args)
    except UserError as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return 2
    except StoreUnavailable as exc:
        hint = owner_hint(config.state_path) if config else ""
        where = config.state_path if config else "state.path"
        print(f"{prog}: lookout's store {where}: {exc}" + (f"; {hint}" if hint else ""), file=sys.stderr)
        return 2


def _run(config, args) -> int:  # noqa: ANN001
    if args.command == "status":
        from .commands.status import status_command

        choice = args.color or args.global_color or "auto"  # after the command wins over before it
        colour = choice == "always" or (choice == "auto" and sys.stdout.isatty() and not os.environ.get("NO_COLOR"))
        return status_command(config, args.pattern, args.json, args.check, colour, args.ignore_stopped)
    if args.command == "history":
        from .commands.history import history_command

        return history_command(config, args.name, cli_duration(args.since, "--since"), args.json)
    if args.command == "alerts":
        from .commands.alerts import alerts_command

        return alerts_command(config, args.pattern, args.json)
    if args.command == "deps":
        from .commands.deps import deps_command

        return deps_command(config, args.json)
    if args.command in ("silence", "silences", "unsilence"):
        from .commands.silence import silence_command

        return silence_command(config, args)
    if args.command in ("hold", "release"):
        from .commands.hold import hold_command

        return hold_command(config, args.name, getattr(args, "reason", ""), args.command == "release")
    if args.command == "probe":
        from .listener.probes.oneshot import run_once

        return run_once(config, args.pattern)
    if args.command == "test-alert":
        from .commands.test_alert import test_alert

        return test_alert(config)
    from .commands.check_config import check_config

    return check_config(config)


if __name__ == "__main__":
    sys.exit(main())
