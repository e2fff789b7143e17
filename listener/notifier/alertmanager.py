"""Alertmanager as a notification target: alerts go to its v2 API through the same outbox.

Each lookout alert is one Alertmanager alert with labels alertname, severity, instance (host),
group, name and kind (and cause, with [[dependencies]]), and annotations with the human text and
the log tail. Firing alerts are re-posted every alertmanager.resend_interval; their endsAt is
stamped when the message is sent (now + 4 x resend_interval), so a message delivered late by a
retry does not arrive already expired. A resolution posts endsAt = when it resolved. An
escalation (crashed -> crash-looping) also resolves the alertname it replaces.
"""

from __future__ import annotations

import hashlib
import json
import time
from datetime import datetime, timezone

from ...config import AlertmanagerSettings
from ...redact import safe_url
from ..rules.kinds import KINDS
from ..rules.models import (
    QUORUM,
    RESOLVED,
    Alert,
    display_name,
)
from ..store.delivery import PendingNotice
from .payload import Payload
from .render import Enrichment, dashboard_link, firing_block, headline
from .system import SystemMessage, system_title, words_of_test_alert
from .target import DeliveryError, Rendering


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).isoformat().replace("+00:00", "Z")


def _labels(alert: Alert, host: str, kind: str, severity: str) -> dict[str, str]:
    group, _, name = alert.namespec.partition(":")
    labels = {"alertname": KINDS[kind].alertname, "severity": severity, "instance": host, "group": group,
              "kind": kind, "source": "lookout"}
    if alert.family != QUORUM:
        labels["name"] = name
    if alert.probe:
        labels["probe"] = alert.probe
    if alert.cause:  # a dependant: its likely cause (prometheus/alertmanager.yml's inhibit_rules use it)
        labels["cause"], labels["dependant"] = display_name(alert.cause), "true"
    elif alert.impact:  # a need with dependants failing: the cause itself
        labels["cause"] = display_name(alert.namespec)
    return labels


def render_alertmanager(notices: list[PendingNotice], host: str, now: float, extra: Enrichment,
                        *, lines: int, annotations: dict[int, dict] | None = None) -> str:
    """The JSON list for POST /api/v2/alerts. Firing entries carry no endsAt: send() adds it.

    ``annotations`` maps alert ids to what was last posted for them: re-posts reuse it (a re-post
    does not fetch log tails again), and fresh renders update it.
    """
    annotations = {} if annotations is None else annotations
    out = []
    for n in notices:
        a = n.alert
        fresh = bool(extra.tails or extra.exits or extra.spawnerr or extra.unavailable) or a.id not in annotations
        if fresh:
            try:
                description = "\n".join(firing_block(n, host, now, extra, lines, whole=True))
            except Exception:  # one alert's details must not keep the others from Alertmanager
                description = "(details could not be rendered; see the listener's log)"
            annotations[a.id] = {  # type: ignore[index]
                "summary": headline(a, host),
                "description": description,
            }
            link = dashboard_link(extra.dashboard_url, a.namespec, host)
            if link:
                annotations[a.id]["dashboard"] = link  # type: ignore[index]
        entry = {
            "labels": _labels(a, host, a.kind, a.severity),
            "annotations": annotations[a.id],  # type: ignore[index]
            "startsAt": _iso(a.opened_at),
        }
        if n.kind == RESOLVED:
            entry["endsAt"] = _iso(a.resolved_at or now)
            annotations.pop(a.id, None)  # type: ignore[arg-type]
        elif a.previous_kind:
            out.append({
                "labels": _labels(a, host, a.previous_kind, a.previous_severity),
                "annotations": {"summary": f"{display_name(a.namespec)}: replaced by {KINDS[a.kind].alertname}"},
                "startsAt": _iso(a.opened_at),
                "endsAt": _iso(now),
            })
        out.append(entry)
    return json.dumps(out)


def system_alert(msg: SystemMessage, host: str) -> str:
    """An alert about lookout itself (its store), for Alertmanager; resolved by the same labels."""
    entry = {
        "labels": {"alertname": msg.alertname, "severity": msg.severity, "instance": host, "source": "lookout"},
        "annotations": {"summary": f"{msg.title} on {host}", "description": msg.text},
    }
    if msg.resolved:
        entry["endsAt"] = _iso(time.time())
    return json.dumps([entry])


class AlertmanagerTarget:
    """Alertmanager's v2 API: a message is the JSON list of alerts, labelled for its routing."""

    tags: frozenset[str] = frozenset()
    scheme = "alertmanager"
    reposts = True  # it forgets an alert at its endsAt: open ones are posted again (worker.py)

    def __init__(self, url: str, settings: AlertmanagerSettings) -> None:
        self.url = url.rstrip("/") + "/api/v2/alerts"
        self.settings = settings
        self.key = "am-" + hashlib.sha256(url.encode()).hexdigest()[:16]
        self.label = safe_url(url).replace("http", "alertmanager+http", 1)
        self._annotations: dict[int, dict] = {}  # alert id -> what was last posted for it (re-posts reuse it)

    @property
    def timeout(self) -> float:
        """Its lane's deadline for a whole request (alertmanager.timeout)."""
        return self.settings.timeout

    def wants(self, tags: object) -> bool:
        return True  # Alertmanager routes by label itself

    def render(self, notices: list[PendingNotice], now: float, extra: Enrichment, how: Rendering) -> Payload:
        body = render_alertmanager(notices, how.host, now, extra, lines=how.lines, annotations=self._annotations)
        return Payload("alertmanager", body, "")

    def render_system(self, msg: SystemMessage, host: str) -> Payload:
        return Payload(system_title(msg, host), system_alert(msg, host), "")

    def render_test(self, host: str) -> Payload:
        title, text = words_of_test_alert(host)
        return Payload(title, json.dumps([{"labels": {"alertname": "LookoutTestAlert", "severity": "info",
                                                      "instance": host, "source": "lookout"},
                                           "annotations": {"summary": text.strip()}}]), "info")

    def request_floor(self, body: str) -> int:
        return len(body.encode("utf-8"))  # the alerts go out as they are, endsAt added

    def send(self, title: str, body: str, notify_type: str) -> None:
        import requests

        alerts = json.loads(body)
        ends = _iso(time.time() + 4 * self.settings.resend_interval)
        for a in alerts:
            a.setdefault("endsAt", ends)
        try:
            r = requests.post(self.url, json=alerts, timeout=self.settings.timeout)
        except requests.RequestException as exc:
            raise DeliveryError(f"{self.label}: {type(exc).__name__}") from None
        if r.status_code // 100 != 2:
            raise DeliveryError(f"{self.label} answered HTTP {r.status_code}")
