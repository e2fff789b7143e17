"""Which cells `make test` and `make matrix` take (selection.py): pure, no supervisord."""

from __future__ import annotations

import pytest

from .perturbations import PERTURBATIONS
from .selection import DAY_ENV, ENV, cells
from .test_matrix import CAPABILITIES

CAPS, PERTS = list(CAPABILITIES), list(PERTURBATIONS)


def test_make_test_takes_one_perturbation_per_capability_and_a_run_of_days_covers_every_cell():
    seen: set[tuple[str, str]] = set()
    for day in range(738000, 738000 + len(PERTS)):
        chosen = cells(CAPS, PERTS, {DAY_ENV: str(day)})
        assert [c for c, _ in chosen] == CAPS  # each capability once, in the table's order
        assert len({p for _, p in chosen}) == min(len(CAPS), len(PERTS))  # many columns in one run
        seen.update(chosen)
    assert seen == {(c, p) for c in CAPS for p in PERTS}


def test_the_environment_picks_every_cell_a_column_a_row_or_a_day():
    assert len(cells(CAPS, PERTS, {ENV: "all"})) == len(CAPS) * len(PERTS)
    assert cells(CAPS, PERTS, {ENV: "reload"}) == [(c, "reload") for c in CAPS]
    assert cells(CAPS, PERTS, {ENV: "brake"}) == [("brake", p) for p in PERTS]
    assert cells(CAPS, PERTS, {ENV: "5", DAY_ENV: "9"}) == cells(CAPS, PERTS, {DAY_ENV: "5"})


def test_a_name_that_is_neither_is_refused_with_the_names_there_are():
    with pytest.raises(ValueError, match="clock-1h") as refused:
        cells(CAPS, PERTS, {ENV: "reloda"})
    assert "reloda" in str(refused.value) and "hold_release" in str(refused.value)
