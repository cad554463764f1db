"""Escalation: page more people while nobody acknowledges an alert.

When an alert with an escalation policy fires, :meth:`Escalator.ensure` stores
the policy's steps with the time each is due: a step's wait counts from the
previous step, the first step's from the moment the alert fired. The
escalator's task sleeps until the next step is due, or until it is woken
because steps were stored, and then reaches every due step (see
:meth:`tocsin.state.escalations.EscalationStore.reach`): past the first step,
an alert still ``triggered`` becomes ``escalated``, and the step's channels are
notified. Acknowledging, investigating, resolving or closing the alert cancels
its pending steps in the state database, so a step never pages anyone after
that, across restarts too.

Everything lives in the state database: after a restart the task picks up
the steps that came due meanwhile and reaches them at once.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable

from tocsin.clock import Clock
from tocsin.errors import StateError
from tocsin.logs import RateLimiter
from tocsin.schema import EscalationConfig
from tocsin.state.escalations import EscalationStore, Reached, step_reason
from tocsin.state.models import Alert

log = logging.getLogger(__name__)

#: Steps reached per read of the due ones; more are read until none is due.
_BATCH = 100

#: Pause after the state database refused a read or write, doubled while it
#: keeps refusing, up to the cap.
_STATE_RETRY = 1.0
_STATE_RETRY_MAX = 30.0


def plan(policy: EscalationConfig, fired_at: float) -> list[tuple[float, list[str]]]:
    """Return each step of ``policy`` as (due time, channels), in order.

    :param fired_at: when the alert fired; the first step's wait counts from it.
    """
    steps: list[tuple[float, list[str]]] = []
    due_at = fired_at
    for step in policy.steps:
        due_at += step.wait
        steps.append((due_at, list(step.channels)))

    return steps


class Escalator:
    """Schedule alerts' escalation steps and reach them when they are due.

    :param on_queued: called with the channels notifications were queued for,
        so that delivery looks at once (``Dispatcher.wake``).
    """

    def __init__(
        self,
        store: EscalationStore,
        clock: Clock,
        on_queued: Callable[[Iterable[str]], None],
    ) -> None:
        self.escalated = 0
        self.reached = 0
        self.cancelled = 0
        self._store = store
        self._clock = clock
        self._on_queued = on_queued
        self._wakeup = asyncio.Event()
        self._stopping = False
        self._limiter = RateLimiter(clock=clock.monotonic)

    async def ensure(self, alert: Alert, policy: EscalationConfig | None) -> bool:
        """Store the steps of ``policy`` for ``alert`` unless it has some.

        :param policy: the alert's policy; ``None`` does nothing.
        :return: whether steps were stored (and the task woken).
        :raises StateError: if the write fails.
        """
        if policy is None:
            return False
        steps = plan(policy, alert.spec.fired_at)
        scheduled = await self._store.schedule(alert.id, policy.name, steps)
        if scheduled:
            log.debug(
                "escalation scheduled",
                extra={
                    "alert": alert.uid,
                    "rule": alert.spec.rule,
                    "series": alert.spec.series,
                    "detail": policy.name,
                },
            )
            self.wake()

        return scheduled

    async def fire_due(self, now: float) -> int:
        """Reach every step due at ``now``; return how many were reached.

        Steps of alerts someone took meanwhile are cancelled, not counted.

        :raises StateError: if the state database refuses a read or write;
            the steps reached before it stay reached.
        """
        reached = 0
        channels: dict[str, None] = {}
        try:
            while True:
                due = await self._store.due(now, limit=_BATCH)
                for step in due:
                    outcome = await self._store.reach(step.id, at=now)
                    if outcome is None or outcome.step.state != "reached":
                        self.cancelled += outcome is not None
                        continue
                    reached += 1
                    self._report(outcome)
                    channels.update(dict.fromkeys(outcome.channels))
                if len(due) < _BATCH:
                    break
        finally:
            # Whatever was queued before a failure is worth delivering now.
            if channels:
                self._on_queued(list(channels))
        self.reached += reached

        return reached

    async def next_due(self) -> float | None:
        """Return when the next pending step is due, or ``None``."""
        return await self._store.next_due()

    def wake(self) -> None:
        """Make the task look at the due steps again at once."""
        self._wakeup.set()

    async def run(self) -> None:
        """Reach steps as they come due, until :meth:`stop`.

        A refusal of the state database is logged and retried with backoff;
        the task itself never fails on one.
        """
        refusals = 0
        while not self._stopping:
            self._wakeup.clear()
            try:
                await self.fire_due(self._clock.time())
                until = await self._store.next_due()
                refusals = 0
            except StateError as error:
                refusals += 1
                pause = min(_STATE_RETRY * 2 ** (refusals - 1), _STATE_RETRY_MAX)
                until = self._clock.time() + pause
                # A refusing database refuses every round: one line per interval.
                allowed, suppressed = self._limiter.allow("state")
                if allowed:
                    log.warning(
                        "escalation paused: the state database refused",
                        extra={"error": str(error), "suppressed": suppressed},
                    )
            if self._stopping:
                break
            await self._wait(until)

    def stop(self) -> None:
        """Make :meth:`run` return; safe to call more than once."""
        self._stopping = True
        self._wakeup.set()

    async def _wait(self, until: float | None) -> None:
        delay = None if until is None else max(0.0, until - self._clock.time())
        try:
            async with asyncio.timeout(delay):
                await self._wakeup.wait()
        except TimeoutError:
            pass

    def _report(self, outcome: Reached) -> None:
        alert, step = outcome.alert, outcome.step
        context = {
            "alert": alert.uid,
            "rule": alert.spec.rule,
            "series": alert.spec.series,
            "reason": step_reason(step, alert),
            "channels": outcome.channels,
        }
        if outcome.escalated:
            self.escalated += 1
            # INFO: someone was not there; the people paged next want to know.
            log.info("alert escalated", extra=context)
        else:
            log.debug("escalation step reached", extra=context)
