"""The process a probe looks at, and the placeholders of its URLs, paths, addresses and argv."""

from __future__ import annotations

import re
from dataclasses import dataclass

from ...config import ProbeSpec

_LAST_NUMBER = re.compile(r"(\d+)(?!.*\d)")


def process_num(name: str) -> int:
    """supervisord does not report process_num, but requires %(process_num) in the process_name
    of a numprocs pool: it is the last number in the name (0 when there is none)."""
    m = _LAST_NUMBER.search(name)
    return int(m.group(1)) if m else 0


@dataclass(frozen=True)
class ProbeTarget:
    group: str
    name: str
    pid: int
    started_mono: float  # this start, on the monotonic clock (no wall-clock step moves the schedule)

    @property
    def namespec(self) -> str:
        return f"{self.group}:{self.name}"

    def fields(self, spec: ProbeSpec) -> dict[str, object]:
        num = process_num(self.name)
        return {"group": self.group, "name": self.name, "pid": self.pid, "process_num": num,
                "port": (spec.port_base or 0) + num}

    def fill(self, template: str, spec: ProbeSpec) -> str:
        return template.format(**self.fields(spec))
