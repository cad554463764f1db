"""``kill -9`` at random points while notifications flow to a slow receiver
that fails every third request, round after round.

After the last restart the outbox must drain, and the receiver's view and the
audit must agree: every notification queued was delivered, a repeat carries
the key (and the bytes) of the first send, each notification's audited
attempts are a subsequence of the answers the receiver gave for its key (an
attempt cut by the kill may be missing, never one invented), and no row is
left pending.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import sqlite3
from collections import defaultdict

import pytest

from tests.e2e.daemon import DAEMON_HEAD, WAIT, DaemonProcess
from tests.e2e.test_lifecycle import sender
from tests.standins.webhook import Reply, WebhookStandin
from tocsin.client import Client

HOOK_ENV = "TOCSIN_TEST_CHAOS_HOOK"
#: Kills, each followed by a restart.
ROUNDS = 6
#: New breaching series per round; the previous round's recover.
PER_ROUND = 4
#: The receiver's answer time: long enough that a kill often lands mid-send.
ANSWER_DELAY = 0.15
SEED = 20260117

CONFIG = (
    DAEMON_HEAD
    + """
[[channels]]
name = "hook"
type = "webhook"
url_env = "{hook_env}"
timeout = "2s"
backoff = "100ms"
max_backoff = "400ms"
max_attempts = 1000
concurrency = 2

[[rules]]
name = "latency"
metric = "model.latency"
group_by = ["model"]
aggregation = "last"
window = "1h"
threshold = 100
channels = ["hook"]
"""
)


class FlakyReceiver:
    """Answers every third request with 503, the others with 200, all late."""

    def __init__(self) -> None:
        self.count = 0

    def __call__(self) -> Reply:
        self.count += 1
        status = 503 if self.count % 3 == 0 else 200
        return Reply(status, delay=ANSWER_DELAY)


@pytest.fixture
async def hook():
    async with WebhookStandin() as standin:
        standin.responder = FlakyReceiver()
        yield standin


async def wait_drained(client: Client) -> None:
    async with asyncio.timeout(WAIT * 2):
        while (await asyncio.to_thread(client.status))["pending_notifications"]:
            await asyncio.sleep(0.05)


async def test_kill_9_at_random_points_loses_nothing_and_repeats_only_by_key(
    tmp_path, hook
):
    rng = random.Random(SEED)
    config = CONFIG.format(dir=tmp_path, hook_env=HOOK_ENV)
    daemon = DaemonProcess(tmp_path, config, {HOOK_ENV: hook.url})
    fired: list[str] = []
    try:
        for round_ in range(ROUNDS):
            await daemon.start()
            metrics = sender(tmp_path)
            # The previous round's series recover, new ones breach.
            for model in fired[-PER_ROUND:]:
                metrics.gauge("model.latency", 10, tags=[f"model:{model}"])
            new = [f"r{round_}m{index}" for index in range(PER_ROUND)]
            for model in new:
                metrics.gauge("model.latency", 250, tags=[f"model:{model}"])
            fired.extend(new)
            # Each decision is on disk before the kill: what is under test
            # is delivery, not a sample still in a socket buffer.
            await daemon.wait_for_log("alert fired", PER_ROUND)
            if round_:
                await daemon.wait_for_log("alert resolved", PER_ROUND)
            # Then a random point of the deliveries: after some requests
            # arrived, or a random moment.
            seen = len(hook.requests)
            with contextlib.suppress(TimeoutError):
                await hook.wait_for(seen + rng.randint(0, 4), timeout=rng.random())
            await daemon.kill()

        # The last start runs to the end of the queue and stops cleanly.
        await daemon.start()
        with Client(socket=str(tmp_path / "state" / "api.sock")) as client:
            await wait_drained(client)
        assert await daemon.stop() == 0
    finally:
        await daemon.close()

    with sqlite3.connect(tmp_path / "state" / "tocsin.db") as connection:
        rows = connection.execute(
            "SELECT o.id, o.key, o.event, o.state, a.series FROM outbox AS o"
            " JOIN alerts AS a ON a.id = o.alert_id ORDER BY o.id"
        ).fetchall()
        audit = defaultdict(list)
        for outbox_id, outcome, status in connection.execute(
            "SELECT outbox_id, outcome, status FROM delivery_attempts"
            " ORDER BY outbox_id, attempt"
        ):
            audit[outbox_id].append((outcome, status))

    # Nothing lost: a trigger for every series that breached, a resolve for
    # every one that recovered, each delivered, none left pending.
    events = sorted((series, event) for _, _, event, _, series in rows)
    recovered = fired[:-PER_ROUND]
    assert events == sorted(
        [(f"model={m}", "trigger") for m in fired]
        + [(f"model={m}", "resolve") for m in recovered]
    )
    assert {state for *_, state, _ in rows} == {"delivered"}

    # Repeats only under the key of the first send, with the same bytes.
    received = defaultdict(list)
    for request in hook.requests:
        received[request.headers["Idempotency-Key"]].append(request)
    assert set(received) == {key for _, key, *_ in rows}
    for requests in received.values():
        assert len({r.body for r in requests}) == 1

    # The audit agrees with the receiver: each recorded attempt is one the
    # receiver answered, in order; the last one is the 200 that delivered it.
    # A kill right after a request arrived (its answer comes later) cut at
    # least one send, whose repeat is then on the receiver's side only.
    cut = [key for o, key, *_ in rows if len(received[key]) > len(audit[o])]
    assert cut
    for outbox_id, key, *_ in rows:
        answers = [r.status for r in received[key]]
        recorded = audit[outbox_id]
        assert recorded[-1] == ("delivered", 200)
        assert all(outcome == "retry" for outcome, _ in recorded[:-1])
        assert is_subsequence([status for _, status in recorded], answers), (
            key,
            recorded,
            answers,
        )


def is_subsequence(part: list, whole: list) -> bool:
    remaining = iter(whole)
    return all(any(item == other for other in remaining) for item in part)
