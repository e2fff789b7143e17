"""Loss detection from supervisord's counters (pure).

'poolserial' counts events per listener pool: a jump means the pool's buffer overflowed and
dropped events; a step back means supervisord reloaded (the pool was rebuilt from 0). A new
supervisord pid (or server id) means a restart. Each is a reason to reconcile.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class StreamPosition:
    run: str  # "<server>:<supervisord pid>"
    pool: str
    poolserial: int
    serial: int = 0  # supervisord's global serial of the last event taken


def is_redelivery(previous: StreamPosition | None, run: str, serial: int) -> bool:
    """Already taken: a pool's events arrive in serial order, so a serial at or below the last
    one taken in this supervisord run is a redelivery (the in-flight event resent after a listener
    crash, or a copy re-buffered by supervisord's same-priority bug)."""
    return previous is not None and previous.run == run and serial <= previous.serial


def check_continuity(previous: StreamPosition | None, current: StreamPosition) -> str:
    """'' when the stream continues as expected, otherwise a sentence for the log."""
    if previous is None:
        return "no previous position (first start)"
    if previous.run != current.run:
        return f"supervisord restarted ({previous.run} -> {current.run})"
    if previous.pool != current.pool:
        return f"listener pool changed ({previous.pool} -> {current.pool})"
    if current.poolserial > previous.poolserial + 1:
        lost = current.poolserial - previous.poolserial - 1
        return (
            f"{lost} event(s) lost: poolserial jumped {previous.poolserial} -> "
            f"{current.poolserial} (event buffer overflowed)"
        )
    if current.poolserial <= previous.poolserial:
        return f"poolserial went back {previous.poolserial} -> {current.poolserial} (supervisord reloaded)"
    return ""
