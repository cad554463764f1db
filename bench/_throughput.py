"""Delivery throughput: the SQLite outbox drained by the real dispatcher and
webhook channel, and a bare aiohttp client posting the same bodies.

A run starts from an outbox of ``count`` trigger notifications for one webhook
channel, written by the real :class:`~tocsin.state.alerts.AlertStore` into a
state database of its own (untimed). Tocsin's run is the daemon's delivery path
as it stands: :class:`~tocsin.channels.delivery.Dispatcher` and
:class:`~tocsin.channels.webhook.WebhookChannel` with its default settings, from the
dispatcher's start until the outbox has recorded the last delivery. The
baseline posts the very bodies the channel sends (read from the same outbox)
with the same headers and as many requests in flight, and does nothing else.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from tocsin.channels.base import ChannelContext
from tocsin.channels.delivery import Dispatcher
from tocsin.channels.payload import alert_payload, encode
from tocsin.channels.webhook import WebhookChannel
from tocsin.clock import SystemClock
from tocsin.schema import WebhookChannelConfig
from tocsin.state.alerts import AlertStore
from tocsin.state.db import Database
from tocsin.state.models import AlertSpec
from tocsin.state.outbox import Outbox

CHANNEL = "bench-hook"
#: Requests in flight: a webhook channel's default ``concurrency``, which the
#: dispatcher keeps to.
IN_FLIGHT = WebhookChannelConfig(name=CHANNEL).concurrency
#: Longest wait for a run to finish; reaching it is a failure, not a figure.
WAIT = 120.0


@dataclass
class Run:
    """One timed drain of ``count`` notifications."""

    count: int
    seconds: float

    @property
    def rate(self) -> float:
        return self.count / self.seconds


class _CountingOutbox(Outbox):
    """The outbox, telling when it has recorded ``target`` deliveries."""

    def __init__(self, *args, target: int, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.recorded = 0
        self.done = asyncio.Event()
        self._target = target

    async def record_all(self, attempts) -> None:
        attempts = list(attempts)
        await super().record_all(attempts)
        self.recorded += sum(1 for _, outcome, _ in attempts if outcome == "delivered")
        if self.recorded >= self._target:
            self.done.set()


def _spec(number: int, now: float) -> AlertSpec:
    """Return the spec of a typical alert of a model's drift rule."""
    model = f"m{number}"
    return AlertSpec(
        rule="prediction-drift",
        series=f"model={model}",
        labels={"model": model, "team": "ml-platform", "env": "prod"},
        severity="high",
        metric="model.drift.psi",
        aggregation="avg",
        window=600.0,
        op=">",
        threshold=0.2,
        value=0.31,
        samples=60,
        started_at=now - 30,
        fired_at=now,
        reason="avg(model.drift.psi) over 10m = 0.31 > 0.2",
        summary=f"Prediction drift on {model}",
        runbook="https://runbooks.example/drift",
        recommended_actions=["compare the input distribution", "retrain"],
        metadata={"owner": "ml-platform"},
    )


async def fill(path: Path, count: int) -> list[bytes]:
    """Queue ``count`` triggers for the channel in a new database at ``path``.

    :return: the bodies the channel will send, one per notification.
    """
    clock = SystemClock()
    database = await Database.open(path, clock=clock)
    try:
        store = AlertStore(database, clock)
        for number in range(count):
            await store.fire(_spec(number, clock.time()), [CHANNEL])
        queued = await Outbox(database, clock).due(CHANNEL, clock.time(), count)
    finally:
        await database.close()
    if len(queued) != count:
        raise RuntimeError(f"{count} notifications queued, {len(queued)} due")

    return [encode(alert_payload(notification)) for notification in queued]


async def drain_with_tocsin(
    path: Path, url: str, count: int, session: aiohttp.ClientSession
) -> Run:
    """Deliver the outbox at ``path`` to ``url`` through Tocsin; time it.

    :raises RuntimeError: if a notification failed, or one is left pending.
    """
    clock = SystemClock()
    database = await Database.open(path, clock=clock)
    try:
        outbox = _CountingOutbox(database, clock, target=count)
        config = WebhookChannelConfig(name=CHANNEL, url=url)
        channel = WebhookChannel(config, {"url": url}, ChannelContext(session, clock))
        dispatcher = Dispatcher(outbox, {CHANNEL: channel}, clock)
        began = time.perf_counter()
        dispatcher.start()
        await asyncio.wait_for(outbox.done.wait(), WAIT)
        elapsed = time.perf_counter() - began
        await dispatcher.stop(timeout=5.0)
        pending = await outbox.pending_count()
    finally:
        await database.close()
    failed = dispatcher.retried + dispatcher.dead_lettered
    if failed or pending or dispatcher.delivered != count:
        raise RuntimeError(
            f"Tocsin delivered {dispatcher.delivered} of {count}: "
            f"{failed} failed attempts, {pending} left pending"
        )

    return Run(count, elapsed)


async def post_bare(
    url: str, bodies: list[bytes], session: aiohttp.ClientSession
) -> Run:
    """POST ``bodies`` to ``url``, :data:`IN_FLIGHT` at a time; time it.

    :raises RuntimeError: if an answer was not a 2xx.
    """
    queue = iter(enumerate(bodies))

    async def worker() -> None:
        for number, body in queue:
            key = f"bench-{number}"
            headers = {
                "Content-Type": "application/json",
                "Idempotency-Key": key,
                "webhook-id": key,
                "webhook-timestamp": str(int(time.time())),
            }
            async with session.post(url, data=body, headers=headers) as reply:
                await reply.read()
                if reply.status // 100 != 2:
                    raise RuntimeError(f"the sink answered {reply.status}")

    began = time.perf_counter()
    await asyncio.wait_for(asyncio.gather(*(worker() for _ in range(IN_FLIGHT))), WAIT)

    return Run(len(bodies), time.perf_counter() - began)
