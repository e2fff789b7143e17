"""Keep secrets out of logs, alert bodies, metric labels and error messages.

apprise URLs carry tokens in the user-info, the path and the query (slack://T/B/C,
json://user:pass@host, ...). We only ever show 'scheme://host', and only when the host looks
like a host name; a LogFilter also scrubs every secret fragment we know of from log records,
so a third-party library that logs a full URL cannot leak it either. What is scrubbed is what
can be secret (user-info, path segments, the values of query keys that hold secrets, anything
that looks like a token); hosts, ports and plain values (`smtp=127.0.0.1`, `port=25`) never: a
scrubbed host would hide the host of every other target and every log line that names it.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from typing import TYPE_CHECKING
from urllib.parse import unquote, urlsplit

if TYPE_CHECKING:
    from .config import Config

_HOSTLIKE = re.compile(r"^(localhost|[\d.]+|\[[0-9a-fA-F:]+\]|[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)+)$")


# Query keys of apprise URLs whose values are secrets (and the usual suspects of other services)
SECRET_KEYS = frozenset({
    "token", "key", "apikey", "api_key", "secret", "password", "pass", "pwd", "passwd", "auth", "access_token",
    "accesstoken", "webhook", "webhook_id", "sid", "client_secret", "private_key", "privatekey", "passphrase",
    "user", "username", "app_token", "apptoken", "bot_token", "routing_key", "integration_key", "oauth",
    "credentials", "signature", "sig", "code",
})


def _looks_like_token(value: str) -> bool:
    """A long run of letters and digits (both), no dots: a token, not a host, a port or a word."""
    return (len(value) >= 16 and "." not in value and any(c.isdigit() for c in value)
            and any(c.isalpha() for c in value) and re.fullmatch(r"[A-Za-z0-9_\-+/=]+", value) is not None)


# Path words of webhook routes: not secrets, and masking one would blank that word in every
# alert and log line ('status', 'alerts'). Any other segment of a notification URL is a secret
# from 6 characters on (an ntfy topic, a gotify token, a json:// hook's key).
ROUTE_WORDS = frozenset({
    "alert", "alerts", "alertmanager", "api", "apprise", "event", "events", "health", "healthz", "hook", "hooks",
    "incoming", "lookout", "message", "messages", "notification", "notifications", "notify", "ping", "post",
    "push", "send", "service", "services", "status", "webhook", "webhooks",
})


def _path_secret(segment: str, tokens_only: bool) -> bool:
    """A path segment that may be a secret: one that looks like a token (a digit, or 16+
    characters) anywhere; in a notification URL also any other one of 6+ characters that is not
    a route word. A probe URL's path is shown in its alerts ('GET http://host/status'): only
    tokens are masked there."""
    if len(segment) < 6 or segment.lower() in ROUTE_WORDS:
        return False
    return not tokens_only or any(c.isdigit() for c in segment) or len(segment) >= 16


def scheme_of(url: str) -> str:
    return url.split("://", 1)[0].lower() if "://" in url else "unknown"


def safe_url(url: str) -> str:
    """'json://user:tok@example.com:8080/x?y=1' -> 'json://example.com:8080'."""
    scheme = scheme_of(url)
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = parts.port
    except ValueError:
        host, port = "", None
    if not _HOSTLIKE.match(host or "-"):
        return f"{scheme}://***"
    return f"{scheme}://{host}:{port}" if port else f"{scheme}://{host}"


def secrets_in_url(url: str, tokens_only: bool = False) -> set[str]:
    """Every fragment of a URL that may be secret: user-info, token-like path segments, the values
    of secret query keys and token-like values, each as written and decoded (a log may quote either)."""
    found: set[str] = set()
    sure: set[str] = set()  # secrets whatever their length: a password, a secret key's value
    try:
        parts = urlsplit(url)
    except ValueError:
        return {url}
    user_info = parts.netloc.rpartition("@")[0]
    if user_info:
        user, _, password = user_info.partition(":")
        found.update((user, unquote(user)))
        sure.update((password, unquote(password)) if password else ())
    host = parts.netloc.rpartition("@")[2].split(":")[0]  # as written: hostname would lowercase a token
    if host and not _HOSTLIKE.match(host):
        found.add(host)  # slack://TOKEN_A/... puts a token where the host goes
    for segment in parts.path.split("/"):
        if _path_secret(unquote(segment), tokens_only):  # /T1JJ3T3L2/..., /ping/<uuid>, ntfy topics
            found.update((segment, unquote(segment)))
    for raw in parts.query.split("&"):
        raw_key, _, raw_value = raw.partition("=")
        key, value = unquote(raw_key).lstrip("-+").lower(), unquote(raw_value.replace("+", " "))
        if value and key in SECRET_KEYS:  # apprise's ?-token= / ?+header= forms too
            sure.update((value, raw_value))
        elif value and _looks_like_token(value):
            found.update((value, raw_value))
    if found or sure:  # a URL with nothing secret in it (http://127.0.0.1:9093) may be shown as it is
        found.add(url)
    # Short fragments ('json', 'v1', 'hook') are not secrets and would mangle every log line; a
    # password or a secret key's value is masked from 4 characters on.
    return {s for s in found if len(s) >= 6} | {s for s in sure if len(s) >= 4}


class SecretFilter(logging.Filter):
    """Replaces known secret fragments in every log record with '***'."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        self.secrets: list[str] = []
        self.add(secrets)

    def add(self, secrets: Iterable[str]) -> None:
        merged = set(self.secrets) | {s for s in secrets if s}
        self.secrets = sorted(merged, key=len, reverse=True)  # longest first: URL before token

    def scrub(self, text: str) -> str:
        for secret in self.secrets:
            if secret in text:
                text = text.replace(secret, "***")
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        if self.secrets:
            message = record.getMessage()
            scrubbed = self.scrub(message)
            if scrubbed != message:
                record.msg, record.args = scrubbed, None
            if record.exc_info and record.exc_info[1] is not None:
                record.exc_text = self.scrub(logging.Formatter().formatException(record.exc_info))
                record.exc_info = None
        return True


_FILTER = SecretFilter()


def config_secrets(config: Config) -> set[str]:
    """Every secret lookout.toml itself holds (target URLs, supervisord's password): one list
    for all three programs. Secrets inside a notify.config file are added by build_targets."""
    urls = (*config.notify.urls, *config.alertmanager.urls, config.deadman.url, config.deadman.fail_url)
    probes = [p.params["url"] for p in config.probes if p.kind == "http"]  # a probe URL's token shows in logs
    found = {s for url in urls if url for s in secrets_in_url(url) if "{" not in s}
    found |= {s for url in probes for s in secrets_in_url(url, tokens_only=True) if "{" not in s}
    if config.supervisor.password:
        found.add(config.supervisor.password)
    return found


def install_log_filter(secrets: Iterable[str]) -> SecretFilter:
    """Attach one process-wide filter to every root handler (call after logging is set up)."""
    _FILTER.add(secrets)
    for handler in logging.getLogger().handlers:
        if _FILTER not in handler.filters:
            handler.addFilter(_FILTER)
    return _FILTER


def scrub(text: str) -> str:
    return _FILTER.scrub(text)
