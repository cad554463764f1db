"""The lifecycle of an alert: which moves people may make, what each ends,
and the transition every move writes.

People (through the API, or a destination such as PagerDuty acknowledging on
their behalf) move an alert along the table below. Tocsin itself makes three
more moves, each in its own store method: the engine resolves an alert from
any open state when its rule clears, reopens a resolved alert that breaches
again within the reopen window, and closes alerts resolved long enough; the
escalation timer escalates alerts nobody acknowledged.
"""

from __future__ import annotations

from collections import deque
from typing import get_args

from tocsin.errors import LifecycleError
from tocsin.state.db import Transaction
from tocsin.state.models import AlertState, Transition

#: The actor of transitions Tocsin makes on its own.
ENGINE = "engine"

#: Every state an alert can be in.
STATES: tuple[AlertState, ...] = get_args(AlertState)

#: The moves people may make, from each state, in the order messages list them.
MANUAL_MOVES: dict[AlertState, tuple[AlertState, ...]] = {
    "triggered": ("acknowledged", "escalated"),
    "acknowledged": ("investigating", "escalated"),
    "escalated": ("acknowledged", "investigating", "resolved"),
    "investigating": ("resolved",),
    "resolved": ("closed",),
    "closed": (),
}

#: Reaching one of these states means someone owns the alert (or it is over):
#: its pending escalation steps are cancelled in the same transaction.
ENDS_ESCALATION: frozenset[AlertState] = frozenset(
    {"acknowledged", "investigating", "resolved", "closed"}
)


def check_move(alert_id: int, state: AlertState, to_state: str) -> None:
    """Refuse a manual move the table does not allow.

    :param alert_id: the alert's id, for the message.
    :param state: the state the alert is in.
    :param to_state: the state asked for.
    :raises ValueError: if ``to_state`` is not a state at all.
    :raises LifecycleError: if the alert cannot move there from ``state``.
    """
    if to_state not in STATES:
        raise ValueError(
            f"unknown alert state {to_state!r}; one of {', '.join(STATES)}"
        )
    allowed = MANUAL_MOVES[state]
    if to_state not in allowed:
        raise LifecycleError(alert_id, state, to_state, allowed)


async def cancel_escalation(tx: Transaction, alert_id: int, at: float) -> None:
    """Cancel the alert's pending escalation steps; they stay, for its history.

    Every move into :data:`ENDS_ESCALATION` calls this in its own transaction.
    """
    await tx.execute(
        "UPDATE escalation_steps SET state = 'cancelled', cancelled_at = ?"
        " WHERE alert_id = ? AND state = 'pending'",
        (at, alert_id),
    )


async def write_transition(
    tx: Transaction,
    alert_id: int,
    from_state: AlertState | None,
    to_state: AlertState,
    at: float,
    reason: str,
    *,
    actor: str = ENGINE,
    comment: str = "",
) -> Transition:
    """Write one transition of an alert and return it.

    :param actor: who made the move; Tocsin's own moves are :data:`ENGINE`'s.
    """
    transition_id = await tx.insert(
        "INSERT INTO transitions (alert_id, from_state, to_state, at, actor, reason,"
        " comment) VALUES (?, ?, ?, ?, ?, ?, ?)",
        (alert_id, from_state, to_state, at, actor, reason, comment),
    )
    return Transition(
        id=transition_id,
        alert_id=alert_id,
        from_state=from_state,
        to_state=to_state,
        at=at,
        actor=actor,
        reason=reason,
        comment=comment,
    )


def path_to(state: AlertState, target: AlertState) -> list[AlertState] | None:
    """Return the shortest run of manual moves from ``state`` to ``target``
    (without ``state``, ending with ``target``), or ``None`` if there is none.

    A service that only knows "resolved" (PagerDuty, a Slack button) reaches
    it through the moves a person would make, each of them recorded. The
    path never passes through ``escalated``, which would page someone.
    """
    paths: dict[AlertState, list[AlertState]] = {state: []}
    queue = deque([state])
    while queue:
        current = queue.popleft()
        if current == target:
            return paths[current]
        for following in MANUAL_MOVES[current]:
            passes_escalated = following == "escalated" and following != target
            if following not in paths and not passes_escalated:
                paths[following] = [*paths[current], following]
                queue.append(following)

    return None
