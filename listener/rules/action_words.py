"""How lookout's own actions are said: in its alerts ("lookout is restarting it (2nd of 3 allowed in
1h)", "restarted by lookout, ...") and why one was called off. Pure wording, for actions.py."""

from __future__ import annotations

from ...config import RemediationSettings, format_duration
from .models import ActionResult, ProcessRecord, display_name


def ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def doing(rec: ProcessRecord, kind: str, settings: RemediationSettings) -> str:
    """What lookout is doing, while its action is in flight."""
    if kind == "restart":
        n, m = len(rec.lookout_restarts), settings.max_restarts
        return f"lookout is restarting it ({ordinal(n)} of {m} allowed in {format_duration(settings.within)})"
    return f"lookout is {'stopping' if kind == 'stop' else 'starting'} it"


def done(rec: ProcessRecord, kind: str, settings: RemediationSettings, source: str = "") -> str:
    """What lookout did, once its action succeeded."""
    if source == "brake":
        return f"{'stopped' if kind == 'stop' else 'started again'} by lookout's crash-loop brake"
    if kind == "restart":
        n, m = max(1, len(rec.lookout_restarts)), settings.max_restarts
        return f"restarted by lookout, {ordinal(n)} of {m} allowed in {format_duration(settings.within)}"
    if kind == "stop":
        return f"stopped by lookout; resume with `supervisorctl start {display_name(rec.namespec)}`"
    if source == "dependency":  # (start-up's first start, or a recovery's)
        return "started by lookout, its needs ready"
    return "started again by lookout"


def answered(result: ActionResult) -> str:
    """Why a step's answer called the action off, in words."""
    return result.detail or {"not_running": "it was not running (an operator or a crash came first)",
                             "moved_on": "it is not the process lookout judged any more",
                             "already_started": "an operator started it first"}.get(result.outcome, result.outcome)
