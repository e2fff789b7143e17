"""`lookout check-config`: the config, the store, supervisord's answer and every target, each
checked and shown as lookout understood it (secrets masked); a warning for each section that
matches no process supervisord runs now."""

from __future__ import annotations

import xmlrpc.client

from ..config import Config, ConfigError, UserError, format_duration
from ..listener.notifier.targets import build_targets
from ..redact import safe_url


def _supervisor_state(config: Config) -> tuple[str, list[str]]:
    """getState() and the names of the processes, or a UserError that says what is wrong and names
    supervisor.serverurl (supervisord down is not a config error, but the URL may be wrong)."""
    from ..rpc import SupervisorClient, SupervisorUnavailable

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
    from ..listener.store.files import writable_check

    problem = writable_check(config.state_path)
    if problem.startswith("it belongs to"):  # not the config's fault: the user's
        raise UserError(f"lookout's store {config.state_path}: {problem}")
    if problem:
        raise ConfigError("state.path", f"{config.state_path}: {problem}")
    targets = build_targets(config)
    state, names = _supervisor_state(config)
    a, n = config.alerts, config.notify
    lines = [
        f"config: {config.source}",
        f"supervisor.serverurl = {_show_serverurl(config)}  ({state})",
        f"supervisor.username = {config.supervisor.username or '(none)'}",
        f"supervisor.password = {'***' if config.supervisor.password else '(none)'}",
        f"state.path = {config.state_path}  (the store: writable)",
        f"notify targets = {len(targets)}",
        *(f"  - {t.label}" + (f"  tags={sorted(t.tags)}" if t.tags else "") for t in targets),
        f"notify.timeout = {format_duration(n.timeout)}; retries from {format_duration(n.retry_initial)}"
        f" up to {format_duration(n.retry_max)} apart, for {format_duration(n.retry_for)}",
        f"alerts.group_wait = {format_duration(a.group_wait)}",
        f"alerts.group_interval = {format_duration(a.group_interval)}",
        f"alerts.repeat_interval = {format_duration(a.repeat_interval)}",
        f"alerts.stable_after = {format_duration(a.stable_after)}",
        f"alerts.crash_loop = {a.crash_loop.restarts} failures within {format_duration(a.crash_loop.within)}",
        f"alerts.host = {config.hostname}",
        *(
            f"alerts.programs[{i}] match={r.match!r} severity={r.severity or 'default'} ignore={r.ignore}"
            + (f" crash_loop={r.crash_loop.restarts}/{format_duration(r.crash_loop.within)}"
               if r.crash_loop else "")
            + (f" tags={list(r.tags)}" if r.tags else "")
            + (f" must_run (grace {format_duration(r.grace)})" if r.must_run else "")
            + (" oneshot" if r.oneshot else "")
            for i, r in enumerate(a.programs)
        ),
        *(
            f"alerts.groups[{i}] match={g.match!r} min_running={g.min_running} for={format_duration(g.sustain)}"
            f" stable_after={format_duration(g.stable_after)} severity={g.severity}"
            for i, g in enumerate(a.groups)
        ),
    ]
    if config.probes:
        from ..listener.probes.oneshot import describe_probes

        lines += describe_probes(config)
    lines += _deadman_lines(config)
    lines += dependency_lines(config, names)
    if not targets:
        lines.append("warning: no notify targets: alerts will only be logged")
    lines += unmatched_sections(config, names)
    print("\n".join(lines))
    return 0


def _deadman_lines(config: Config) -> list[str]:
    from ..listener.workers.deadman import fail_form

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


def dependency_lines(config: Config, names: list[str]) -> list[str]:
    """Each [[checks]] and [[dependencies]] entry as lookout reads it, and a warning for a need that
    names no process (it never holds anything back) and for start = true on a program supervisord
    starts by itself (autostart=true: it does not wait for its needs)."""
    from ..dependency_graph import Graph
    from ..patterns import matches
    from ..rpc import SupervisorClient
    from .running_supervisord import autostarted_of

    lines = [f"checks[{c.index}] {c.match}: {c.kind} every {format_duration(c.period)}" for c in config.checks]
    for d in config.dependencies:
        needs = ", ".join(f"{n.pattern} ({n.ready})" for n in d.needs) or "nothing"
        lines.append(f"{d.source}: {d.program!r} needs {needs}" + (" start = true" if d.start else "")
                     + f"; grace {format_duration(d.grace)}"
                     + (f", start_timeout {format_duration(d.start_timeout)}" if d.start else ""))
    if not config.dependencies:
        return lines
    from ..listener.rules.models import display_name

    graph = Graph.build(config.dependencies, names)
    if graph.cycles:  # patterns that overlap without naming each other: a cycle only the processes show
        shown = "; ".join(" -> ".join(display_name(ns) for ns in c) for c in graph.cycles)
        raise ConfigError("dependencies", f"a cycle among the processes supervisord runs now: {shown}")
    lines += [f"warning: dependencies: need {p!r} matches no process supervisord runs now (it holds nothing back)"
              for p in graph.unmatched]
    lines += [f"warning: {d.source}: program = {d.program!r} matches no process supervisord runs now"
              for d in config.dependencies if not any(matches(d.program, ns) for ns in names)]
    auto = autostarted_of(SupervisorClient(config.supervisor)) if any(d.start for d in config.dependencies) else set()
    lines += [f"warning: dependencies: {display_name(ns)} has start = true but autostart=true in supervisord.conf: "
              "supervisord starts it without waiting for its needs (set autostart=false)"
              for ns in sorted(auto) if graph.start.get(ns)]
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
