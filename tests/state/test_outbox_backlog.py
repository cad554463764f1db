"""The outbox's due query on a long backlog: its cost grows with the backlog,
not with the backlog's square."""

from __future__ import annotations

import sqlite3

from tests.state.test_alerts import T0, make_spec
from tocsin.state.alerts import AlertStore
from tocsin.state.db import Database
from tocsin.state.outbox import _DUE

#: SQLite instructions between two calls of the progress handler.
STEP = 10


async def backlog(path, clock, count: int) -> None:
    """Queue ``count`` triggers of distinct alerts for channel ``ops``."""
    database = await Database.open(path, clock=clock)
    try:
        store = AlertStore(database, clock)
        for number in range(count):
            await store.fire(make_spec(series=f"model=m{number}"), ["ops"])
    finally:
        await database.close()


def due_cost(path) -> tuple[int, int]:
    """Return (rows, SQLite instructions / STEP) of one due query for ``ops``."""
    calls = 0

    def count() -> int:
        nonlocal calls
        calls += 1
        return 0

    connection = sqlite3.connect(path)
    try:
        connection.set_progress_handler(count, STEP)
        rows = connection.execute(_DUE, ("ops", T0 + 1, 4)).fetchall()
    finally:
        connection.close()

    return len(rows), calls


async def test_due_over_a_backlog_twice_as_long_costs_about_twice_as_much(
    tmp_path, clock
):
    # After an outage a channel can have thousands of notifications queued;
    # every batch of a worker runs this query, so a cost in the square of the
    # backlog would make the drain crawl just when it matters.
    costs = {}
    for count in (200, 400):
        path = tmp_path / f"backlog-{count}.db"
        await backlog(path, clock, count)
        rows, costs[count] = due_cost(path)
        assert rows == 4

    assert costs[400] < 2.6 * costs[200]
