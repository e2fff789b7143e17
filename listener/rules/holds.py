"""HoldBook: the operator's holds (`lookout hold NAME` / `lookout release NAME`). Pure.

A held process is left as it is: lookout starts, stops and restarts nothing of it (the
crash-loop brake's start included) until the hold is released, or an operator starts it. What
lookout wanted meanwhile (a probe's restart) is remembered and asked again on release. Holds
are written by the `lookout` command into the store; the listener reads them (app) and hands
the current set here, which calls off what lookout had pending and marks them seen.
"""

from __future__ import annotations

from collections.abc import Iterable

from .actions import OwnActions
from .models import HistoryEntry, Hold, Outcome, ProcessRecord


class HoldBook:
    def __init__(self, actions: OwnActions) -> None:
        self.actions = actions
        self.holds: dict[str, Hold] = {}  # namespec -> the operator's hold

    def __contains__(self, namespec: str) -> bool:
        return namespec in self.holds

    def active(self) -> list[Hold]:
        return list(self.holds.values())

    def update(self, holds: Iterable[Hold], records: dict[str, ProcessRecord], now: float,
               out: Outcome) -> list[ProcessRecord]:
        """The holds as the store has them now; returns the records it changed."""
        changed = []
        wanted = {h.namespec: h for h in holds}
        for ns, hold in wanted.items():
            if ns in self.holds and self.holds[ns].id == hold.id:
                continue  # (another id: released and held again between two looks, a new hold to confirm)
            self.holds[ns] = hold
            out.holds_seen.append((hold.id, now))
            out.history.append(HistoryEntry(now, ns, "hold", "held by an operator: lookout leaves it as it is"
                                + (f" ({hold.reason})" if hold.reason else "")))
            rec = records.get(ns)
            if rec is not None:
                if rec.action is not None and rec.action.source.startswith("probe:") and not rec.action.cancelled:
                    rec.remediation_wanted = rec.action.source  # asked again on release (remediation)
                self.actions.cancel(rec, "an operator holds it", now, out)
                changed.append(rec)
        for ns in [ns for ns in self.holds if ns not in wanted]:
            del self.holds[ns]
            out.history.append(HistoryEntry(now, ns, "hold", "released: lookout may act on it again"))
            rec = records.get(ns)
            if rec is not None:
                if rec.braked and rec.brake_resume_at is not None:
                    rec.brake_resume_at = min(rec.brake_resume_at, now)  # the brake's start was only held back
                changed.append(rec)  # (the engine asks again what the hold held back)
        return changed

    def operator_started(self, namespec: str, now: float, out: Outcome) -> None:
        """An operator's start ends a hold: they have taken the process back."""
        if self.holds.pop(namespec, None) is not None:
            out.holds_released.append((namespec, "an operator started it", now))
            out.history.append(HistoryEntry(now, namespec, "hold", "released: an operator started it"))
