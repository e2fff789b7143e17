"""apprise as a notification target: one apprise service per target, so each retries and
succeeds on its own.

Targets come from ``notify.urls`` (untagged: they get every alert) and from an apprise config
file (``notify.config``) whose tags route alerts: a target tagged ``critical`` gets critical
alerts, one tagged ``pager`` gets alerts of programs with ``tags = ["pager"]``, ``all`` gets all.
They take the human message (text_target.py); chat services that render markdown get it with
code blocks.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import re
import threading
from dataclasses import dataclass
from typing import Any

from ...config import ConfigError, NotifySettings
from ...redact import safe_url, scheme_of, scrub, secrets_in_url
from .target import DeliveryError
from .text_target import TextTarget

log = logging.getLogger("lookout.notifier")
MARKDOWN_SCHEMES = frozenset({"slack", "mmost", "mmosts", "discord", "msteams", "rocket", "rockets", "matrix",
                              "matrixs", "zulip", "tgram"})


@dataclass(frozen=True)
class AppriseTarget(TextTarget):
    key: str  # stable id across restarts (hash of the URL); the outbox refers to it
    label: str  # 'scheme://host': the only form ever shown
    scheme: str
    tags: frozenset[str]
    service: Any  # an apprise NotifyBase instance

    @property
    def markdown(self) -> bool:  # type: ignore[override]
        """Chat services that render markdown get log tails as code blocks."""
        return self.scheme in MARKDOWN_SCHEMES

    def request_floor(self, body: str) -> int:
        """Bytes a whole request carries at least: the body, as far as the plugin keeps it."""
        size = len(body.encode("utf-8", "replace"))
        keeps = getattr(self.service, "body_maxlen", 0)
        return min(size, keeps) if isinstance(keeps, int) and keeps > 0 else size

    def send(self, title: str, body: str, notify_type: str) -> None:
        """Raises DeliveryError, with the reason apprise gave, when the service did not accept it."""
        with _apprise_says() as said:
            try:
                ok = self.service.notify(body=body, title=title, notify_type=notify_type or "info",
                                         body_format="markdown" if self.markdown else "text")
            except Exception as exc:  # a plugin bug must not kill the worker
                raise DeliveryError(f"{type(exc).__name__} in the {self.scheme} plugin") from None
        if not ok:
            raise DeliveryError(_reason(said) or "not accepted (apprise gave no reason)")


class _Said(logging.Handler):
    """What apprise logs in a thread that sends: lanes send in parallel and the apprise logger is
    process-wide, so each sending thread captures its own records; others' warnings pass on to
    the root logger as before."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.local = threading.local()

    def emit(self, record: logging.LogRecord) -> None:
        said = getattr(self.local, "said", None)
        if said is not None:
            with contextlib.suppress(Exception):
                said.append(record.getMessage())
        elif record.levelno >= logging.WARNING:
            logging.getLogger().handle(record)


_SAID = _Said()
_SAID_LOCK = threading.Lock()


@contextlib.contextmanager
def _apprise_says():
    """What apprise logs while it sends in this thread: its reasons ("SMTP AUTH extension not
    supported by server") are mostly at DEBUG level, so they are captured here, not let through
    to our log."""
    apprise_log = logging.getLogger("apprise")
    with _SAID_LOCK:  # (again each time: build_targets sets the level while it instantiates)
        if _SAID not in apprise_log.handlers:
            apprise_log.addHandler(_SAID)
        apprise_log.setLevel(logging.DEBUG)
        apprise_log.propagate = False
    said: list[str] = []
    _SAID.local.said = said
    try:
        yield said
    finally:
        _SAID.local.said = None


def _reason(said: list[str]) -> str:
    """The last warning and the exception detail apprise logged, in one line, secrets scrubbed."""
    detail = [m.split("Exception:", 1)[1].strip() for m in said if "Exception:" in m]
    warnings = [m for m in said if m and not m.startswith(("Socket Exception", "Response Details"))
                and any(w in m.lower() for w in ("fail", "error", "refused", "denied", "not ", "invalid"))]
    parts = ([warnings[-1]] if warnings else []) + ([detail[-1]] if detail else [])
    text = " ".join(" ".join(parts).split())
    errno = re.search(r"\[Errno -?\d+\] [^\"')\]]+", text)  # requests' "Max retries exceeded ... (Caused by ...)"
    if errno and len(text) > 160:
        text = f"{text.split('. ')[0].rstrip('.')}: {errno.group(0).strip()}"
    if "AUTH extension not supported" in text:
        text += " (the server offers no login: remove user:password from the mailto URL)"
    return scrub(text[:300])


def _target(url: str, service: Any) -> AppriseTarget:
    return AppriseTarget(
        key=hashlib.sha256(url.encode()).hexdigest()[:16],
        label=safe_url(url),
        scheme=scheme_of(url),
        tags=frozenset(getattr(service, "tags", ()) or ()),
        service=service,
    )


def build_targets(settings: NotifySettings) -> tuple[list[AppriseTarget], set[str]]:
    """Instantiate every target; returns them and the secret fragments of their URLs.

    A URL apprise cannot use is a ConfigError naming notify.urls[i] and showing the safe form.
    """
    import apprise  # 0.5 s and ~40 MB: only when targets are really needed

    apprise_log = logging.getLogger("apprise")
    apprise_log.setLevel(logging.CRITICAL)  # our ConfigError says it in one line; sends log again
    try:
        return _instantiate(apprise, settings)
    finally:
        apprise_log.setLevel(logging.WARNING)


def _instantiate(apprise: Any, settings: NotifySettings) -> tuple[list[AppriseTarget], set[str]]:
    asset = apprise.AppriseAsset(plugin_paths=list(settings.plugin_paths) or None)
    targets: list[AppriseTarget] = []
    secrets: set[str] = set()
    for i, url in enumerate(settings.urls):
        secrets |= secrets_in_url(url)
        service = apprise.Apprise.instantiate(url, asset=asset)
        if service is None:
            raise ConfigError(f"notify.urls[{i}]", f"{safe_url(url)} is not a URL apprise can use")
        _apply_timeout(service, settings.timeout)
        targets.append(_target(url, service))
    if settings.config:
        config = apprise.AppriseConfig(asset=asset)
        if not config.add(settings.config):
            raise ConfigError("notify.config", f"{settings.config}: cannot read this apprise config")
        services = config.servers()
        if not services:
            raise ConfigError("notify.config", f"{settings.config}: no usable URLs in it")
        for service in services:
            url = service.url()
            secrets |= secrets_in_url(url)
            _apply_timeout(service, settings.timeout)
            targets.append(_target(url, service))
    seen: set[str] = set()
    unique = []
    for t in targets:
        if t.key not in seen:
            seen.add(t.key)
            unique.append(t)
    return unique, secrets


def _apply_timeout(service: Any, timeout: float) -> None:
    """apprise's HTTP plugins read these; SMTP uses socket_connect_timeout / read timeout."""
    for attr in ("socket_connect_timeout", "socket_read_timeout"):
        if hasattr(service, attr):
            setattr(service, attr, timeout)
