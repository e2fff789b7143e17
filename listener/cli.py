"""lookout-listener: run as a supervisord event listener, or manage silences and check setup.

    lookout-listener [-c lookout.toml]                  (from [eventlistener:lookout])
    lookout-listener --check-config | --test-alert
    lookout-listener silence 'trading_system:*' --for 30m --reason deploy
    lookout-listener silences
    lookout-listener unsilence ID
    lookout-listener probe [PATTERN]                    (run the health probes once, now)

The operator's everyday command is `lookout` (status, history, alerts, ...); these subcommands
stay for scripts written against them. Exit status 2 for a bad config, an unusable store or an
unreachable supervisord (one line naming the key).
"""

from __future__ import annotations

import argparse
import faulthandler
import logging
import os
import signal
import sys
import time
import xmlrpc.client

from .config import Config, ConfigError, UserError, cli_duration, format_duration, load_config, no_config_note, shown
from .redact import config_secrets, install_log_filter, safe_url
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


class OneLineParser(argparse.ArgumentParser):
    """Usage errors in one line, exit status 2, like every other bad input."""

    def error(self, message: str):  # noqa: ANN201
        self.exit(2, f"{self.prog}: {message} (see {self.prog.split()[0]} --help)\n")


def _parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog="lookout-listener", description=__doc__.split("\n\n")[0])
    p.add_argument("--version", action="version", version=f"lookout-listener {version()}")
    p.add_argument("-c", "--config", help="lookout.toml (default: $LOOKOUT_CONFIG, else /etc/lookout/lookout.toml)")
    p.add_argument("--check-config", action="store_true",
                   help="validate the config and supervisord access, print effective settings")
    p.add_argument("--test-alert", action="store_true", help="send a test message to every target")
    p.add_argument("--log-level", help="debug, info, warning, error (overrides listener.log_level)")
    sub = p.add_subparsers(dest="command", parser_class=OneLineParser)
    s = sub.add_parser("silence", help="mute alerts of matching processes for a while")
    s.add_argument("matcher", help=PATTERN_HELP)
    s.add_argument("--for", dest="duration", required=True, help="e.g. 30m, 2h")
    s.add_argument("--reason", default="", help="shown in `silences`")
    sub.add_parser("silences", help="list active silences")
    u = sub.add_parser("unsilence", help="end a silence now")
    u.add_argument("id", type=silence_id)
    pr = sub.add_parser("probe", help="run the matching health probes once, now, and print the results")
    pr.add_argument("pattern", nargs="?", default="*", help=PATTERN_HELP + " (default: all)")
    return p


PATTERN_HELP = ("a process as supervisorctl names it ('feed', 'group:name'), a whole group ('pool', 'pool:*'), "
                "or a glob ('pool_0*', '*:feed')")
SILENCE_MIN, SILENCE_MAX = 1.0, 365 * 86400.0


def silence_id(text: str) -> int:
    if not (text.isascii() and text.isdigit() and len(text) <= 18):
        raise argparse.ArgumentTypeError(f"{text[:40]!r} is not a silence id (see `silences`)")
    return int(text)


def silence_seconds(text: str) -> float:
    """--for, within bounds: a 400-digit duration must not become an endless silence."""
    from .config import UsageError

    seconds = cli_duration(text, "--for")
    if not SILENCE_MIN <= seconds <= SILENCE_MAX:
        raise UsageError("--for", f"{shown(text)} is out of bounds: must be between 1s and 365d")
    return seconds


def version() -> str:
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as installed

    try:
        return installed("supervisor-lookout")
    except PackageNotFoundError:  # run from a checkout that is not installed
        return "(not installed)"


def say_once_if_no_config(config: Config, prog: str) -> None:
    note = no_config_note(config)
    if note:
        print(f"{prog}: {note}", file=sys.stderr)


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
    args = _parser().parse_args(argv)
    try:
        config = load_config(args.config)
    except UserError as exc:
        print(f"lookout-listener: {exc}", file=sys.stderr)
        return 2
    _setup_logging(args.log_level or config.listener.log_level)
    install_log_filter(config_secrets(config))
    say_once_if_no_config(config, "lookout-listener")

    try:
        if args.command == "probe":
            from .probes.oneshot import run_once

            return run_once(config, args.pattern)
        if args.command:
            return _silence_command(config, args)
        if args.check_config:
            return check_config(config)
        if args.test_alert:
            return test_alert(config)
        if not os.environ.get("SUPERVISOR_ENABLED") and sys.stdin.isatty():
            print(REGISTER_HINT, file=sys.stderr, end="")
            return 2
        return _run(config)
    except UserError as exc:
        print(f"lookout-listener: {exc}", file=sys.stderr)
        return 2
    except StoreUnavailable as exc:
        hint = owner_hint(config.state_path)
        print(f"lookout-listener: state.path: {config.state_path}: {exc}" + (f"; {hint}" if hint else ""),
              file=sys.stderr)
        return 2


def _build_targets(config: Config):  # noqa: ANN202
    from .notifier.targets import configured_targets

    targets, secrets = configured_targets(config)  # with the secrets of a notify.config file
    install_log_filter(secrets)
    return targets


def _run(config: Config) -> int:
    from .app import Listener

    targets = _build_targets(config)
    return Listener(config, targets).run()


def _supervisor_state(config: Config) -> tuple[str, list[str]]:
    """getState() and the names of the processes, or a UserError that says what is wrong and names
    supervisor.serverurl (supervisord down is not a config error, but the URL may be wrong)."""
    from .rpc import SupervisorClient, SupervisorUnavailable

    client = SupervisorClient(config.supervisor)
    try:
        state = client.call("supervisor.getState")
        names = [p.namespec for p in client.all_process_info()]
    except SupervisorUnavailable as exc:
        raise UserError(f"{exc} (supervisor.serverurl = {_show_serverurl(config)})") from None
    except xmlrpc.client.Fault as exc:
        return f"answering with fault {exc.faultCode} ({exc.faultString})", []
    return str(state.get("statename", state)), names


def check_config(config: Config) -> int:
    from .store.files import writable_check

    problem = writable_check(config.state_path)
    if problem.startswith("it belongs to"):  # not the config's fault: the user's
        raise UserError(f"lookout's store {config.state_path}: {problem}")
    if problem:
        raise ConfigError("state.path", f"{config.state_path}: {problem}")
    targets = _build_targets(config)
    state, names = _supervisor_state(config)
    a, n = config.alerts, config.notify
    lines = [
        f"config: {config.source}",
        f"supervisor.serverurl = {_show_serverurl(config)}  ({state})",
        f"supervisor.username = {config.supervisor.username or '(none)'}",
        f"supervisor.password = {'***' if config.supervisor.password else '(none)'}",
        f"state.path = {config.state_path}",
        f"notify targets = {len(targets)}",
        *(f"  - {t.label}" + (f"  tags={sorted(t.tags)}" if t.tags else "") for t in targets),
        f"notify.timeout = {format_duration(n.timeout)}; retries from {format_duration(n.retry_initial)}"
        f" up to {format_duration(n.retry_max)} apart, for {format_duration(n.retry_for)}",
        f"alerts.group_wait = {format_duration(a.group_wait)}",
        f"alerts.repeat_interval = {format_duration(a.repeat_interval)}",
        f"alerts.stable_after = {format_duration(a.stable_after)}",
        f"alerts.crash_loop = {a.crash_loop.restarts} failures within {format_duration(a.crash_loop.within)}",
        f"alerts.host = {config.hostname}",
        *(
            f"alerts.programs[{i}] match={r.match!r} severity={r.severity or 'default'} ignore={r.ignore}"
            + (f" crash_loop={r.crash_loop.restarts}/{format_duration(r.crash_loop.within)}"
               if r.crash_loop else "")
            + (f" tags={list(r.tags)}" if r.tags else "")
            for i, r in enumerate(a.programs)
        ),
    ]
    if config.probes:
        from .probes.oneshot import describe_probes

        lines += describe_probes(config)
    lines += _deadman_lines(config)
    if not targets:
        lines.append("warning: no notify targets: alerts will only be logged")
    lines += unmatched_sections(config, names)
    print("\n".join(lines))
    return 0


def _deadman_lines(config: Config) -> list[str]:
    from .deadman import fail_form

    d = config.deadman
    if not d.url:
        return ["deadman = (none): nothing outside this host hears of it if the host, supervisord or lookout dies"]
    fail = fail_form(d.url, d.fail_url)
    lines = [f"deadman.url = {safe_url(d.url)}, called every {format_duration(d.interval)}"]
    if d.fail_url:
        lines.append(f"deadman.fail_url = {safe_url(fail)}, called instead while lookout is degraded")
    elif fail:
        kind = ("Uptime Kuma's status=down" if "status=down" in fail else "Cronitor's state=fail"
                if "state=fail" in fail else "healthchecks.io's /fail")
        lines.append(f"deadman fail form: {kind}, worked out from the URL, called while lookout is degraded")
    else:
        lines.append("warning: deadman: no fail form known for this URL (healthchecks.io, Uptime Kuma and Cronitor "
                     "have one): a degraded lookout only stops calling; set deadman.fail_url to say so sooner")
    return lines


def unmatched_sections(config: Config, names: list[str]) -> list[str]:
    """A warning for every [[alerts.programs]] and [[alerts.groups]] entry that matches no process
    supervisord runs now (a typo, or a program still to come); describe_probes does [[probes]]."""
    from ..patterns import ProcessPattern

    if not names:
        return []
    out = []
    sections = [(f"alerts.programs[{i}]", r.match, False) for i, r in enumerate(config.alerts.programs)]
    sections += [(f"alerts.groups[{i}]", g.match, True) for i, g in enumerate(config.alerts.groups)]
    groups = {ns.partition(":")[0] for ns in names}
    for key, pattern, is_group in sections:
        wanted = ProcessPattern.parse(pattern)
        if is_group and not any(wanted.names_group(g) for g in groups):
            out.append(f"warning: {key}: match = {pattern!r} matches no group supervisord has now")
        elif not is_group and not any(wanted.matches(ns) for ns in names):
            out.append(f"warning: {key}: match = {pattern!r} matches no process supervisord runs now")
    return out


def _show_serverurl(config: Config) -> str:
    url = config.supervisor.serverurl
    return url if url.startswith("unix://") else safe_url(url)


def test_alert(config: Config) -> int:
    """One test message to every target at once, each on its lane, as the listener sends them:
    a target that hangs is reported at its deadline and keeps no other waiting."""
    import threading

    from .notifier.lanes import Job, Lanes, Result, Verdict

    targets = _build_targets(config)
    if not targets:
        print("no notify targets configured (notify.urls, notify.config, $LOOKOUT_NOTIFY_URLS)")
        return 1
    failed = 0
    wake = threading.Event()
    lanes = Lanes(targets, config.notify.timeout, wake)
    lanes.start()
    for t in targets:
        payload = t.render_test(config.hostname)
        lanes.submit(Job(t.key, payload.title, payload.body, payload.notify_type, None))
    answers: dict[str, Result] = {}
    while len(answers) < len(targets):  # each lane answers by its deadline (and a grace) at the latest
        wake.wait(0.5)
        wake.clear()
        answers.update((r.job.target_key, r) for r in lanes.results())
    lanes.stop()
    for t in targets:
        result = answers[t.key]
        if result.verdict is Verdict.SENT:
            print(f"ok      {t.label}")
            continue
        failed += 1  # the reason the delivery library gave, secrets scrubbed
        maybe = " (maybe delivered)" if result.verdict is Verdict.MAYBE else ""
        print(f"FAILED  {t.label}: {result.error}{maybe}")
    return 1 if failed else 0


def _silence_command(config: Config, args: argparse.Namespace) -> int:
    from .store.delivery import DeliveryStore
    from .store.schema import connect

    seconds = silence_seconds(args.duration) if args.command == "silence" else 0.0  # bounds first
    if args.command == "silence":
        from ..patterns import ProcessPattern
        from .config import UsageError

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
    from ..patterns import select
    from .store.reads import StoreReader

    return bool(select(matcher, StoreReader(conn).namespecs()))


if __name__ == "__main__":
    sys.exit(main())
