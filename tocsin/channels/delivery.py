"""Delivery: outbox workers that send, retry with backoff, and dead-letter.

One worker task per channel reads that channel's due notifications from the
outbox and hands them to the channel, at most ``concurrency`` at a time, so a
slow or dead destination only ever delays itself. A worker sleeps until the
next notification is due or until :meth:`Dispatcher.wake` says new rows were
written; the wake path is what keeps a breach-to-arrival time of milliseconds.

Delivery is at least once: a notification whose outcome could not be recorded
(a crash, a refused write, a shutdown that cut it short) is sent again later,
with the same idempotency key, so the destination can drop the repeat.

A resolve goes only to a channel that received the alert's trigger. One whose
trigger was dead-lettered there (or never queued there, for a channel added to
the rule later) is skipped and recorded as such: the destination never heard
of the alert and has nothing to resolve, which is also why Alertmanager sends
no resolved notification for an alert it never notified as firing.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Iterable, Mapping

from tocsin.channels.base import Channel
from tocsin.clock import Clock
from tocsin.errors import DeliveryError, StateError
from tocsin.logs import RateLimiter, redact
from tocsin.state.models import Notification
from tocsin.state.outbox import Outbox

log = logging.getLogger(__name__)

#: Each retry waits between this fraction of its backoff and the full backoff,
#: so destinations that failed together do not get retried in lockstep.
JITTER = 0.25

#: Pause of a worker after the state database refused a read or write.
_STATE_RETRY = 1.0

#: Why a resolve was skipped, as recorded in the outbox and logged.
_TRIGGER_NOT_DELIVERED = "trigger_not_delivered"


class Dispatcher:
    """Deliver the outbox to the channels.

    :param channels: the channels by name; rows for any other name stay queued.
    :param concurrency: most notifications in flight per channel.
    :param rng: source of jitter; tests pass a seeded one.
    """

    def __init__(
        self,
        outbox: Outbox,
        channels: Mapping[str, Channel],
        clock: Clock,
        *,
        concurrency: int = 4,
        rng: random.Random | None = None,
    ) -> None:
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        self.delivered = 0
        self.retried = 0
        self.dead_lettered = 0
        self.skipped = 0
        self._outbox = outbox
        self._channels = dict(channels)
        self._clock = clock
        self._concurrency = concurrency
        self._rng = rng or random.Random()
        self._wakeups = {name: asyncio.Event() for name in self._channels}
        self._in_flight: dict[str, dict[int, Notification]] = {
            name: {} for name in self._channels
        }
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
        finally:
            self._stopped.set()
        log.info("delivery stopped")

    async def run_once(self, now: float) -> int:
        """Deliver everything due at ``now``, channel by channel; for tests.

        Times written to the outbox are read from the clock.

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
        wakeup = self._wakeups[channel.name]
        while not self._stopping:
            wakeup.clear()
            try:
                if await self._deliver_due(channel, self._clock.time()):
                    continue
                next_at = await self._outbox.next_due(channel.name)
            except StateError as error:
                # Retried every second: a database that stays unavailable must
                # not write a line per second per channel.
                allowed, suppressed = self._limiter.allow(f"state:{channel.name}")
                if allowed:
                    log.warning(
                        "cannot read or record deliveries; retrying",
                        extra={
                            "channel": channel.name,
                            "error": str(error),
                            "suppressed": suppressed,
                        },
                    )
                next_at = self._clock.time() + _STATE_RETRY
            except Exception:
                # A bug must not end the channel's deliveries for good, nor
                # fill the log while it keeps failing.
                allowed, suppressed = self._limiter.allow(f"bug:{channel.name}")
                if allowed:
                    log.exception(
                        "delivery worker failed",
                        extra={"channel": channel.name, "suppressed": suppressed},
                    )
                next_at = self._clock.time() + _STATE_RETRY
            await _wait(wakeup, next_at, self._clock)

    async def _deliver_due(self, channel: Channel, now: float) -> int:
        """Send (or skip) one batch of due notifications; return its size."""
        batch = await self._outbox.due(channel.name, now, self._concurrency)
        if not batch:
            return 0
        results = await asyncio.gather(
            *(
                self._deliver(channel, notification)
                if notification.announced
                else self._skip(channel, notification)
                for notification in batch
            ),
            return_exceptions=True,
        )
        for result in results:
            if isinstance(result, BaseException):
                raise result

        return len(batch)

    async def _deliver(self, channel: Channel, notification: Notification) -> None:
        """Make one attempt and record its outcome."""
        attempt = notification.attempts + 1
        flight = self._in_flight[channel.name]
        flight[notification.id] = notification
        started = self._clock.monotonic()
        status: int | None = None
        failure: DeliveryError | None = None
        try:
            status = await channel.send(notification)
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

        # Success.
        if failure is None:
            await self._outbox.delivered(
                notification, status=status, duration_ms=duration_ms
            )
            self.delivered += 1
            self._recovered(channel.name)
            log.debug(
                "notification delivered",
                extra=_context(channel.name, notification, status=status),
            )
            return

        # A failure: retry later, or give up.
        record = {
            "status": failure.status,
            "reason": failure.reason,
            "error": redact(str(failure)),
        }
        context = _context(channel.name, notification, **record, elapsed_ms=duration_ms)
        if failure.retryable and attempt < channel.max_attempts:
            delay = self.retry_delay(channel, attempt, failure.retry_after)
            next_at = self._clock.time() + delay
            await self._outbox.retry(
                notification,
                next_attempt_at=next_at,
                duration_ms=duration_ms,
                **record,
            )
            self.retried += 1
            self._warn_once(
                channel.name, failure, {**context, "delay_s": round(delay, 3)}
            )
            return
        await self._outbox.dead(notification, duration_ms=duration_ms, **record)
        self.dead_lettered += 1
        if failure.retryable:
            log.error(
                "notification dead-lettered after %d attempts", attempt, extra=context
            )
        else:
            log.error("notification dead-lettered: final error", extra=context)

    async def _skip(self, channel: Channel, notification: Notification) -> None:
        """Record a resolve of an alert the channel never received as skipped."""
        await self._outbox.skipped(notification, reason=_TRIGGER_NOT_DELIVERED)
        self.skipped += 1
        context = _context(channel.name, notification, reason=_TRIGGER_NOT_DELIVERED)
        del context["attempt"]
        # A WARNING, not an ERROR: the failure was the trigger's, already
        # logged as an error when it was dead-lettered; this line says that
        # the destination will not hear of the alert's end either.
        log.warning(
            "resolve not sent: the channel never received the alert's trigger",
            extra=context,
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


def _context(channel: str, notification: Notification, **more: object) -> dict:
    return {
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
