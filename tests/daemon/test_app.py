"""The daemon's own parts that need no process: the shutdown budget."""

from __future__ import annotations

import logging

from tocsin.clock import ManualClock
from tocsin.daemon import app
from tocsin.daemon.app import ShutdownBudget


def test_the_shutdown_budget_bounds_every_step_together():
    clock = ManualClock()
    budget = ShutdownBudget(10.0, clock)
    # Before shutdown begins, nothing has been spent.
    assert budget.remaining() == 10.0

    budget.start()
    clock.advance(4.0)
    assert budget.remaining() == 6.0
    assert budget.remaining(0.5) == 3.0
    budget.start()
    assert budget.remaining() == 6.0

    clock.advance(7.0)
    assert budget.remaining() == 0.0


def test_what_the_rules_left_out_is_reported_once_per_period(caplog):
    before = {"late_samples": 2, "future_samples": 0, "non_finite_samples": 1}
    totals = {**before, "late_samples": 5, "refused_series": 0, "held_fires": 9}
    with caplog.at_level(logging.WARNING, logger="tocsin.daemon.app"):
        assert app._report_dropped(totals, before) is totals
        app._report_dropped(totals, totals)
    (record,) = caplog.records
    assert record.detail == {"late_samples": 3}
