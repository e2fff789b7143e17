"""Where the configuration becomes notification targets: apprise's (notify.urls, notify.config)
and Alertmanager's (alertmanager.urls). The one place that knows which integrations there are;
everything after it uses the Target protocol (target.py)."""

from __future__ import annotations

import copy
from collections import Counter

from ...config import Config
from ...redact import install_log_filter
from .alertmanager import AlertmanagerTarget
from .apprise_target import build_targets as apprise_targets
from .target import Target


def configured_targets(config: Config) -> tuple[list[Target], set[str]]:
    """Every target the configuration names, told apart; and the secret fragments of their URLs
    (those of a notify.config file included), for the log filter."""
    found, secrets = apprise_targets(config.notify)
    targets: list[Target] = [*found]
    targets += [AlertmanagerTarget(url, config.alertmanager) for url in config.alertmanager.urls]
    return tell_apart(targets), secrets


def tell_apart(targets: list[Target]) -> list[Target]:
    """Two URLs with one safe form (two Slack webhooks: 'slack://***', two Alertmanagers on one
    host) get #1, #2 in list order, so that a log line or a check-config line says which one."""
    counts = Counter(t.label for t in targets)
    seen: Counter[str] = Counter()
    out = []
    for t in targets:
        if counts[t.label] > 1:
            seen[t.label] += 1
            t = copy.copy(t)  # built a moment ago and used nowhere yet
            object.__setattr__(t, "label", f"{t.label} #{seen[t.label]}")  # (apprise's are frozen dataclasses)
        out.append(t)
    return out


def build_targets(config: Config) -> list[Target]:
    """The targets, with the secrets of their URLs (a notify.config file's too) added to the log filter."""
    targets, secrets = configured_targets(config)
    install_log_filter(secrets)
    return targets
