"""Which cells of the matrix a run takes, and the table it prints. Pure (but for the summary).

`make matrix` sets LOOKOUT_MATRIX=all: every capability under every perturbation. `make test`
leaves it unset: each capability under ONE perturbation, rotating by the day (capability i takes
perturbation (day + i) mod n, so one run covers many columns and a week and a day covers every
cell). LOOKOUT_MATRIX may also name a perturbation (its column), a capability (its row), or a
day number (that day's rotation). The choice is printed at the end of pytest's summary.
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Mapping, Sequence

ENV, DAY_ENV = "LOOKOUT_MATRIX", "LOOKOUT_MATRIX_DAY"
TEST = "test_matrix.py::test_capability_under_perturbation["


def today() -> int:
    return datetime.date.today().toordinal()


def pin_day(env: dict[str, str]) -> None:
    """The controller pins the day before xdist starts its workers: all of them collect the same
    cells, also across midnight."""
    env.setdefault(DAY_ENV, str(today()))


def cells(capabilities: Sequence[str], perturbations: Sequence[str], env: Mapping[str, str]) -> list[tuple[str, str]]:
    want = env.get(ENV, "").strip()
    if want == "all":
        return [(c, p) for c in capabilities for p in perturbations]
    if want in perturbations:
        return [(c, want) for c in capabilities]
    if want in capabilities:
        return [(want, p) for p in perturbations]
    if want and not want.isdigit():
        raise ValueError(f"{ENV}={want!r}: expected 'all', a day number, a perturbation ({', '.join(perturbations)}) "
                         f"or a capability ({', '.join(capabilities)})")
    day = int(want or env.get(DAY_ENV) or today())
    return [(c, perturbations[(day + i) % len(perturbations)]) for i, c in enumerate(capabilities)]


def cell_id(capability: str, perturbation: str) -> str:
    return f"{capability}-x-{perturbation}"


def summary(reports: Sequence[object], capabilities: Sequence[str], perturbations: Sequence[str]) -> list[str]:
    """Lines for pytest's terminal summary: which cells ran (and why these), and a table of
    pass/FAIL when more than one perturbation ran per capability."""
    outcome: dict[tuple[str, str], str] = {}
    for r in reports:
        nodeid, when = getattr(r, "nodeid", ""), getattr(r, "when", "")
        if TEST not in nodeid or when not in ("setup", "call", "teardown"):
            continue
        key = nodeid.split(TEST, 1)[1].rstrip("]")
        capability, _, perturbation = key.partition("-x-")
        if getattr(r, "failed", False):
            outcome[(capability, perturbation)] = "FAIL"
        elif when == "call" and getattr(r, "passed", False):
            outcome.setdefault((capability, perturbation), "pass")
        elif getattr(r, "skipped", False):
            outcome.setdefault((capability, perturbation), "skip")
    if not outcome:
        return []
    want = os.environ.get(ENV, "").strip()
    day = os.environ.get(DAY_ENV) or today()
    how = f"{ENV}={want}" if want else f"rotation of day {day}; {ENV}=all runs every cell"
    lines = [f"capability x perturbation cells run ({how}):"]
    ran = [p for p in perturbations if any(k[1] == p for k in outcome)]
    rows = [c for c in capabilities if any(k[0] == c for k in outcome)]
    if all(sum(k[0] == c for k in outcome) == 1 for c in rows):
        lines += [f"  {c} x {p}: {outcome[(c, p)]}" for c in rows for p in ran if (c, p) in outcome]
        return lines
    width = max(len(c) for c in rows)
    lines.append(" " * (width + 2) + " ".join(f"{p:>16}" for p in ran))
    for c in rows:
        lines.append(f"  {c:<{width}}" + " ".join(f"{outcome.get((c, p), '-'):>16}" for p in ran))
    return lines
