"""Issue 21: every capability under every perturbation, so that a new rule cannot silently undo an
old capability again. One table of capabilities (scenarios against a real supervisord, each
saying what "the same outcome" is), one of perturbations (perturbations.py), applied at each
scenario's mid-way point. `make matrix` runs every cell; `make test` one perturbation per
capability, rotating (selection.py); the cells run are printed at the end of the summary."""

from __future__ import annotations

import os
from collections.abc import Callable

import pytest

from ..harness import Webhook
from . import acting, alerting, dependencies
from .perturbations import PERTURBATIONS
from .run import Run
from .selection import cell_id, cells

CAPABILITIES: dict[str, Callable[[Run], None]] = {
    "crash_alert": alerting.crash_alert,
    "crash_loop": alerting.crash_loop,
    "fatal": alerting.fatal,
    "must_run": alerting.must_run,
    "fatal_recovery": acting.fatal_recovery,
    "brake": acting.brake,
    "probe_restart": acting.probe_restart,
    "quorum": alerting.quorum,
    "silence": alerting.silence,
    "hold_release": acting.hold_release,
    "orphans": acting.orphans,
    "deadman": alerting.deadman,
    "dependency_incident": dependencies.dependency_incident,
}
CELLS = cells(list(CAPABILITIES), list(PERTURBATIONS), os.environ)


@pytest.mark.matrix
@pytest.mark.long
@pytest.mark.parametrize("capability, perturbation", CELLS, ids=[cell_id(*c) for c in CELLS])
def test_capability_under_perturbation(capability, perturbation, supervisor_factory, webhook):
    other = Webhook().start()
    run = Run(PERTURBATIONS[perturbation], supervisor_factory, webhook, other)
    try:
        CAPABILITIES[capability](run)
        assert run.perturbed, f"{capability} never reached its mid-way point"
    except BaseException:
        print(run.describe())  # shown with the failure: what the target got, what the listener said
        raise
    finally:
        run.close()
        other.stop()
