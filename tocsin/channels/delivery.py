"""Delivery: outbox workers that send, retry with backoff, and dead-letter.

One worker task per channel reads that channel's due notifications from the
outbox and hands them to the channel, at most the channel's ``concurrency`` at
a time and no more than its rate limit lets start (see
:mod:`tocsin.channels.pacing`), so a slow, dead or rate-limited destination
only ever delays itself. A worker sleeps until the next notification is due
(or the rate limit has room again) or until :meth:`Dispatcher.wake` says new
rows were written; the wake path is what keeps a breach-to-arrival time of
milliseconds.

A notification still pending ``max_age`` seconds after it was queued is
dead-lettered on its next turn, reason ``expired``, whatever attempts remain:
an alert hours late misleads more than it helps. Expiry is no attempt, so it
adds no row to the audit of attempts; the outbox row says when and why.

An attempt's outcome is kept in memory until the outbox has recorded it. While
the state database refuses the write (a full disk, a lock another process
holds), the worker retries that write alone, with backoff, and takes no new
notification for the channel: a notification the destination acknowledged is
never sent again because its record failed, and a failed attempt counts
towards backoff and ``max_attempts`` even so.

Delivery is at least once: a notification whose outcome was never recorded (a
crash, or a shutdown while the database still refused the write or cut the send
short) is sent again after the next start, with the same idempotency key, so
the destination can drop the repeat.

Notifications of one alert (or, for a grouped message, of one group) reach a
channel in the order they were queued; the outbox hands them out so.

A resolve goes only to a channel that received the alert's trigger (for a
grouped message, a trigger of its group). One whose
trigger was dead-lettered there (or never queued there, for a channel added to
the rule later) is skipped and recorded as such: the destination never heard
of the alert and has nothing to resolve, which is also why Alertmanager sends
no resolved notification for an alert it never notified as firing.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections import deque
from collections.abc import Iterable, Mapping
from typing import NamedTuple

from tocsin.channels.attempt import bounded_send
from tocsin.channels.base import Channel
from tocsin.channels.health import DeliveryWatch
from tocsin.channels.pacing import SlidingWindow
from tocsin.channels.sent import capture
from tocsin.clock import Clock
from tocsin.errors import DeliveryError, StateError
from tocsin.logs import RateLimiter, redact
from tocsin.state.models import Notification
from tocsin.state.outbox import Outbox, Outcome

log = logging.getLogger(__name__)

#: Each retry waits between this fraction of its backoff and the full backoff,
#: so destinations that failed together do not get retried in lockstep.
JITTER = 0.25

#: Pause of a worker after the state database refused a read or write,
#: doubled while it keeps refusing, up to the cap.
_STATE_RETRY = 1.0
_STATE_RETRY_MAX = 30.0

#: Why a resolve was skipped, as recorded in the outbox and logged.
_TRIGGER_NOT_DELIVERED = "trigger_not_delivered"
#: Why a notification pending longer than its channel's ``max_age`` was
#: dead-lettered.
EXPIRED = "expired"


class Dispatcher:
    """Deliver the outbox to the channels.

    Each channel's own ``concurrency``, ``rate_limit``/``rate_period`` and
    ``max_age`` apply to it alone.

    :param channels: the channels by name; rows for any other name stay queued.
    :param rng: source of jitter; tests pass a seeded one.
    :param watch: told of every outcome once it is recorded.
    """

    def __init__(
        self,
        outbox: Outbox,
        channels: Mapping[str, Channel],
        clock: Clock,
        *,
        rng: random.Random | None = None,
        record_payloads: bool = False,
        watch: DeliveryWatch | None = None,
    ) -> None:
        self.watch = watch or DeliveryWatch()
        self.delivered = 0
        self.retried = 0
        self.dead_lettered = 0
        self.expired = 0
        self.skipped = 0
        #: Notifications by (channel, outcome): ``delivered``, ``retried`` (an
        #: attempt failed; another follows), ``dead_lettered`` (the last
        #: attempt failed), ``expired`` and ``skipped``.
        self.outcomes: dict[tuple[str, str], int] = {}
        self._outbox = outbox
        self._channels: dict[str, Channel] = {}
        self._clock = clock
        self._rng = rng or random.Random()
        # Whether each attempt's record keeps the body it sent (see sent.py).
        self._record_payloads = record_payloads
        self._wakeups: dict[str, asyncio.Event] = {}
        self._in_flight: dict[str, dict[int, Notification]] = {}
        self._unrecorded: dict[str, deque[_Attempt]] = {}
        self._pacing: dict[str, SlidingWindow] = {}
        for name, channel in channels.items():
            self._register(name, channel)
        self._last_failure: dict[str, tuple[str, int | None]] = {}
        self._limiter = RateLimiter(clock=clock.monotonic)
        self._tasks: list[asyncio.Task] = []
        self._stopping = False
        self._stopped = asyncio.Event()

    def start(self) -> None:
        """Start one worker per channel; each first sends what is already due."""
        for name, channel in self._channels.items():
            self._wakeups[name].set()
            task = asyncio.create_task(self._work(channel), name=f"delivery-{name}")
            self._tasks.append(task)
        self._tasks.append(
            asyncio.create_task(self._report_unknown(), name="delivery-check")
        )
        log.info("delivery started", extra={"channels": list(self._channels)})

    def add_channel(self, name: str, channel: Channel) -> None:
        """Start delivering to a channel added while Tocsin runs.

        :raises ValueError: if a channel of that name is delivered to already.
        """
        if name in self._channels:
            raise ValueError(f"channel {name!r} exists")
        self._register(name, channel)
        self._wakeups[name].set()
        task = asyncio.create_task(self._work(channel), name=f"delivery-{name}")
        self._tasks.append(task)
        log.info("delivery started", extra={"channels": [name]})

    def _register(self, name: str, channel: Channel) -> None:
        self._channels[name] = channel
        self._wakeups[name] = asyncio.Event()
        self._in_flight[name] = {}
        self._unrecorded[name] = deque()
        self._pacing[name] = SlidingWindow(
            channel.rate_limit, channel.rate_period, self._clock
        )

    @property
    def channel_names(self) -> list[str]:
        """Return the name of every channel delivered to."""
        return list(self._channels)

    def in_flight(self, name: str) -> int:
        """Return how many attempts to the channel ``name`` are being made."""
        return len(self._in_flight.get(name, ()))

    def channel(self, name: str) -> Channel | None:
        """Return the channel called ``name``, or ``None``."""
        return self._channels.get(name)

    def wake(self, channels: Iterable[str] | None = None) -> None:
        """Tell workers that new notifications were written; they look at once.

        :param channels: the channels concerned; every channel when ``None``.
        """
        names = self._wakeups if channels is None else channels
        for name in names:
            wakeup = self._wakeups.get(name)
            if wakeup is not None:
                wakeup.set()

    async def stop(self, timeout: float) -> None:
        """Let in-flight sends finish for up to ``timeout`` seconds, then cancel.

        Notifications cut short stay queued and go out after the next start.
        Later and concurrent calls wait for the first one to finish.
        """
        if self._stopping:
            await self._stopped.wait()
            return
        self._stopping = True
        self.wake()
        try:
            if self._tasks:
                await self._drain(timeout)
            await self._record_last_outcomes()
        finally:
            self._stopped.set()
        log.info("delivery stopped")

    async def run_once(self, now: float) -> int:
        """Deliver everything due at ``now``, channel by channel; for tests.

        Times written to the outbox are read from the clock. A channel whose
        rate limit is reached keeps the rest of its due notifications queued
        for a later call.

        :return: how many notifications were attempted or skipped.
        """
        attempts = 0
        for channel in self._channels.values():
            while count := await self._deliver_due(channel, now):
                attempts += count

        return attempts

    def retry_delay(
        self, channel: Channel, attempt: int, retry_after: float | None
    ) -> float:
        """Return the pause after failed attempt number ``attempt`` (from 1).

        The backoff doubles with each attempt up to ``max_backoff``, less up to
        :data:`JITTER` of it, and is never shorter than the destination's
        ``Retry-After``.
        """
        # Doubling step by step stops at the cap, where 2**n would overflow.
        backoff = channel.backoff
        for _ in range(attempt - 1):
            if backoff >= channel.max_backoff:
                break
            backoff *= 2
        backoff = min(backoff, channel.max_backoff)
        delay = backoff * self._rng.uniform(1 - JITTER, 1.0)
        if retry_after is not None:
            delay = max(delay, retry_after)

        return delay

    async def _work(self, channel: Channel) -> None:
        name = channel.name
        wakeup = self._wakeups[name]
        refusals = 0
        while not self._stopping:
            wakeup.clear()
            try:
                handled = await self._deliver_due(channel, self._clock.time())
                next_at = None if handled else await self._outbox.next_due(name)
                if refusals:
                    # The WARNING said it was retrying; this says it is over.
                    log.info(
                        "delivery records written again",
                        extra={"channel": name, "refusals": refusals},
                    )
                refusals = 0
                if handled:
                    continue
                if next_at is not None:
                    # Due, but over the rate limit: wait for room, not for
                    # the due time that has already come.
                    paced = self._clock.time() + self._pacing[name].wait()
                    next_at = max(next_at, paced)
            except StateError as error:
                # Retried with backoff: a database that stays unavailable must
                # not write a line per second per channel.
                refusals += 1
                allowed, suppressed = self._limiter.allow(f"state:{name}")
                if allowed:
                    log.warning(
                        "cannot read or record deliveries; retrying",
                        extra={
                            "channel": name,
                            "error": str(error),
                            "unrecorded": len(self._unrecorded[name]),
                            "suppressed": suppressed,
                        },
                    )
                next_at = self._clock.time() + _state_pause(refusals)
            except Exception:
                # A bug must not end the channel's deliveries for good, nor
                # fill the log while it keeps failing.
                allowed, suppressed = self._limiter.allow(f"bug:{name}")
                if allowed:
                    log.exception(
                        "delivery worker failed",
                        extra={"channel": name, "suppressed": suppressed},
                    )
                next_at = self._clock.time() + _STATE_RETRY
            await _wait(wakeup, next_at, self._clock)

    async def _deliver_due(self, channel: Channel, now: float) -> int:
        """Send, skip or expire one batch of due notifications; return its size.

        The batch holds at most the channel's ``concurrency``, and no more
        than its rate limit has room for; ``0`` when the limit is reached.
        Outcomes of earlier attempts not yet recorded are recorded first: until
        they are, the outbox still lists those notifications as due.

        :raises StateError: if the outbox cannot be read or an outcome cannot
            be recorded; the outcome is kept and recorded on the next call.
        """
        await self._record_outcomes(channel.name)
        window = self._pacing[channel.name]
        room = window.room()
        size = channel.concurrency if room is None else min(channel.concurrency, room)
        if size <= 0:
            return 0
        batch = await self._outbox.due(channel.name, now, size)
        if not batch:
            return 0

        # Expiry and skips first: neither is an attempt, nor takes a place
        # under the rate limit.
        sends = []
        for notification in batch:
            if not notification.announced:
                await self._skip(channel, notification)
            elif _is_expired(channel, notification, now):
                await self._expire(channel, notification, now)
            else:
                sends.append(notification)
        window.take(len(sends))
        results = await asyncio.gather(
            *(self._deliver(channel, notification) for notification in sends),
            return_exceptions=True,
        )
        # Keep every outcome before raising anything: each one is an attempt
        # the destination has seen.
        unrecorded = self._unrecorded[channel.name]
        unrecorded.extend(r for r in results if isinstance(r, _Attempt))
        for result in results:
            if isinstance(result, BaseException):
                raise result
        await self._record_outcomes(channel.name)

        return len(batch)

    async def _record_outcomes(self, channel: str) -> None:
        """Record the outcomes kept for ``channel``, oldest first.

        An outcome leaves memory only once written. Whatever the error, it is
        kept: a channel that stops while its records fail is better than a
        destination that gets the same notification every second.
        """
        unrecorded = self._unrecorded[channel]
        if not unrecorded:
            return
        # One transaction for the batch: each outcome is in it or none is.
        await self._outbox.record_all(
            (attempt.notification, attempt.outcome, attempt.fields)
            for attempt in unrecorded
        )
        # A dead letter is told once it is one on disk, where the API and
        # ``tocsin deadletters`` read it.
        for attempt in unrecorded:
            fields = attempt.fields
            self.watch.attempted(
                channel, attempt.outcome, fields["at"], fields.get("reason")
            )
            if attempt.error_line is not None:
                message, context = attempt.error_line
                log.error(message, extra=context)
        unrecorded.clear()

    async def _record_last_outcomes(self) -> None:
        """Try once more to record what the workers could not; log the rest."""
        for channel, unrecorded in self._unrecorded.items():
            if not unrecorded:
                continue
            try:
                await self._record_outcomes(channel)
            except Exception as error:
                for attempt in unrecorded:
                    context = _context(channel, attempt.notification)
                    log.warning(
                        "delivery outcome not recorded; it is sent again after restart",
                        extra={
                            **context,
                            "outcome": attempt.outcome,
                            "error": str(error),
                        },
                    )
                unrecorded.clear()

    async def _deliver(self, channel: Channel, notification: Notification) -> _Attempt:
        """Make one attempt and return its outcome, for the outbox to record."""
        attempt = notification.attempts + 1
        flight = self._in_flight[channel.name]
        flight[notification.id] = notification
        started = self._clock.monotonic()
        status: int | None = None
        failure: DeliveryError | None = None
        try:
            with capture(self._record_payloads) as sent:
                status = await bounded_send(channel, notification)
        except DeliveryError as error:
            failure = error
        except Exception as error:
            log.exception(
                "channel raised an unexpected error",
                extra={"channel": channel.name, "notification": notification.key},
            )
            failure = DeliveryError(
                "internal",
                f"channel {channel.name}: unexpected {type(error).__name__}",
                retryable=True,
            )
        finally:
            del flight[notification.id]
        duration_ms = round((self._clock.monotonic() - started) * 1000, 3)
        ended = self._clock.time()

        # Success.
        if failure is None:
            self.delivered += 1
            self._count(channel.name, "delivered")
            self._recovered(channel.name)
            log.debug(
                "notification delivered",
                extra=_context(channel.name, notification, status=status),
            )
            fields = {"status": status, "duration_ms": duration_ms, "at": ended}
            fields["payload"] = sent.payload()
            return _Attempt(notification, "delivered", fields)

        # A failure: retry later, or give up.
        record = {
            "status": failure.status,
            "reason": failure.reason,
            "error": redact(str(failure)),
        }
        context = _context(channel.name, notification, **record, elapsed_ms=duration_ms)
        fields = {**record, "duration_ms": duration_ms, "at": ended}
        fields["payload"] = sent.payload()
        if failure.retryable and attempt < channel.max_attempts:
            delay = self.retry_delay(channel, attempt, failure.retry_after)
            self.retried += 1
            self._count(channel.name, "retried")
            self._warn_once(
                channel.name, failure, {**context, "delay_s": round(delay, 3)}
            )
            fields["next_attempt_at"] = ended + delay
            return _Attempt(notification, "retry", fields)
        self.dead_lettered += 1
        self._count(channel.name, "dead_lettered")
        if failure.retryable:
            said = f"notification dead-lettered after {attempt} attempts"
        else:
            said = "notification dead-lettered: final error"

        return _Attempt(notification, "dead", fields, (said, context))

    def _count(self, channel: str, outcome: str) -> None:
        key = (channel, outcome)
        self.outcomes[key] = self.outcomes.get(key, 0) + 1

    async def _skip(self, channel: Channel, notification: Notification) -> None:
        """Record a resolve of an alert the channel never received as skipped."""
        await self._outbox.skipped(notification, reason=_TRIGGER_NOT_DELIVERED)
        self.skipped += 1
        self._count(channel.name, "skipped")
        context = _context(channel.name, notification, reason=_TRIGGER_NOT_DELIVERED)
        del context["attempt"]
        # A WARNING, not an ERROR: the failure was the trigger's, already
        # logged as an error when it was dead-lettered; this line says that
        # the destination will not hear of the alert's end either.
        log.warning(
            "resolve not sent: the channel never received the alert's trigger",
            extra=context,
        )

    async def _expire(
        self, channel: Channel, notification: Notification, now: float
    ) -> None:
        """Dead-letter a notification pending for longer than ``max_age``."""
        await self._outbox.expired(notification, reason=EXPIRED, at=now)
        self.expired += 1
        self.dead_lettered += 1
        self._count(channel.name, "expired")
        self.watch.expired(channel.name, now)
        age = now - notification.created_at
        context = _context(
            channel.name, notification, reason=EXPIRED, age_s=round(age, 3)
        )
        # No attempt is made: the line names the attempts already made.
        context["attempt"] = notification.attempts
        log.error(
            "notification dead-lettered: pending longer than max_age", extra=context
        )

    def _warn_once(self, channel: str, failure: DeliveryError, context: dict) -> None:
        # One WARNING per change of error: an outage of an hour must not
        # produce an hour of identical lines.
        key = (failure.reason, failure.status)
        if self._last_failure.get(channel) == key:
            log.debug("delivery failed again; retrying", extra=context)
            return
        self._last_failure[channel] = key
        log.warning("delivery failed; retrying", extra=context)

    def _recovered(self, channel: str) -> None:
        if self._last_failure.pop(channel, None) is not None:
            log.info("channel delivers again", extra={"channel": channel})

    async def _drain(self, timeout: float) -> None:
        _, pending = await asyncio.wait(self._tasks, timeout=timeout)
        if pending:
            cut = [
                (channel, notification)
                for channel, flight in self._in_flight.items()
                for notification in flight.values()
            ]
            for channel, notification in cut:
                log.warning(
                    "delivery cut short by shutdown; it is sent again after restart",
                    extra=_context(channel, notification),
                )
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
            log.warning("gave up waiting for deliveries", extra={"count": len(cut)})

    async def _report_unknown(self) -> None:
        """Warn about queued notifications for channels no longer configured."""
        try:
            waiting = await self._outbox.pending_channels()
        except StateError as error:
            log.warning(
                "cannot count queued notifications", extra={"error": str(error)}
            )
            return
        for name, count in waiting.items():
            if name not in self._channels:
                log.warning(
                    "notifications queued for a channel that is not configured",
                    extra={"channel": name, "count": count},
                )


class _Attempt(NamedTuple):
    """An attempt made, with the fields its outbox record takes."""

    notification: Notification
    outcome: Outcome
    fields: dict
    #: The ERROR line (message, context) logged once the outcome is recorded.
    error_line: tuple[str, dict] | None = None


def _is_expired(channel: Channel, notification: Notification, now: float) -> bool:
    """Tell whether ``notification`` waited longer than the channel's ``max_age``
    (``0`` keeps it until its attempts run out)."""
    return 0 < channel.max_age <= now - notification.created_at


def _state_pause(refusals: int) -> float:
    """Return the pause after the state database refused ``refusals`` times in a row."""
    # 2**10 seconds is past the cap already; a larger power could overflow.
    doublings = min(refusals - 1, 10)

    return min(_STATE_RETRY * 2**doublings, _STATE_RETRY_MAX)


def _context(channel: str, notification: Notification, **more: object) -> dict:
    grouped = {"group": notification.group_key} if notification.group_key else {}
    return {
        **grouped,
        "channel": channel,
        "alert": notification.alert.uid,
        "rule": notification.alert.spec.rule,
        "series": notification.alert.spec.series,
        "notification": notification.key,
        "attempt": notification.attempts + 1,
        **more,
    }


async def _wait(wakeup: asyncio.Event, until: float | None, clock: Clock) -> None:
    """Wait for ``wakeup``, or until the wall-clock time ``until`` if one is given."""
    delay = None if until is None else max(0.0, until - clock.time())
    try:
        async with asyncio.timeout(delay):
            await wakeup.wait()
    except TimeoutError:
        pass
