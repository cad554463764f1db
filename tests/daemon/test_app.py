"""The daemon's own parts that need no process: the shutdown budget."""

from __future__ import annotations

from tocsin.clock import ManualClock
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
