"""ProcessSnapshot: what supervisord says of one process (a getAllProcessInfo() entry), as the
supervisord client returns it and the listener's rules, the exporter and `lookout status` read it."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ProcessSnapshot:
    """One getAllProcessInfo() entry, reduced to what the rules use (times: server epoch)."""

    group: str
    name: str
    state: str
    start: int
    stop: int
    now: int
    pid: int
    exitstatus: int
    spawnerr: str
    stdout_logfile: str = ""  # where the log reader finds its output ("" when not logged)
    stderr_logfile: str = ""

    @property
    def namespec(self) -> str:
        return f"{self.group}:{self.name}"
