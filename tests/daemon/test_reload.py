"""Live reload: what a changed config file does to the running rules, and what
a refused one leaves alone."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import stat
import threading
from typing import NamedTuple

import pytest

from tocsin import config
from tocsin.clock import ManualClock
from tocsin.daemon.app import Daemon
from tocsin.daemon.dogstatsd import DogStatsDParser
from tocsin.daemon.reload import Reloader, ReloadOutcome, restart_sections
from tocsin.rules.decisions import Decision

from .conftest import NOW

CHANNELS = """
[[channels]]
name = "log"
type = "log"
"""

RULE = """
[[rules]]
name = "{name}"
metric = "m.{name}"
threshold = {threshold}
channels = ["log"]
"""


def config_text(
    *rules: tuple[str, float], channels: str = CHANNELS, extra: str = ""
) -> str:
    """Return a config with the rules ``(name, threshold)`` and ``channels``."""
    text = '[daemon]\nstate_dir = "./state"\n' + extra + channels
    for name, threshold in rules:
        text += RULE.format(name=name, threshold=threshold)
    return text


class FakeResult(NamedTuple):
    kept: list[str]
    added: list[str]
    changed: list[str]
    removed: list[str]
    decisions: list[Decision]


def removal(rule: str, now: float) -> Decision:
    return Decision(
        action="resolve",
        rule=rule,
        series="",
        labels={},
        value=None,
        threshold=None,
        samples=0,
        at=now,
        since=now,
        reason=f"rule {rule!r} removed from the configuration",
    )


class FakeEngine:
    """Sorts the rules of each reload as the engine does, by name and config."""

    def __init__(self, rules) -> None:
        self.rules = {rule.name: rule for rule in rules}
        self.calls: list[tuple[list[str], float, int]] = []

    def reload(self, rules, now: float, *, max_series: int) -> FakeResult:
        self.calls.append(([rule.name for rule in rules], now, max_series))
        new = {rule.name: rule for rule in rules}
        old = self.rules
        self.rules = new
        removed = [name for name in old if name not in new]
        return FakeResult(
            kept=[name for name in new if old.get(name) == new[name]],
            added=[name for name in new if name not in old],
            changed=[name for name in new if name in old and old[name] != new[name]],
            removed=removed,
            decisions=[removal(name, now) for name in removed],
        )


class FakePipeline:
    def __init__(self) -> None:
        self.rules: dict | None = None
        self.submitted: list[Decision] = []

    def set_rules(self, rules, *, internal_channels) -> None:
        self.rules = dict(rules)
        self.internal_channels = list(internal_channels)

    def submit(self, decisions) -> None:
        self.submitted.extend(decisions)


class Setup(NamedTuple):
    reloader: Reloader
    engine: FakeEngine
    pipeline: FakePipeline
    cleared: list[str]
    path: object


@pytest.fixture
def setup(tmp_path) -> Setup:
    path = tmp_path / "tocsin.toml"
    path.write_text(config_text(("a", 1), ("b", 2)))
    running = config.load(path)
    engine = FakeEngine(running.rules)
    pipeline = FakePipeline()
    cleared: list[str] = []
    reloader = Reloader(
        str(path),
        running,
        engine=engine,
        pipeline=pipeline,
        clock=ManualClock(NOW),
        clear_caches=[
            lambda: cleared.append("dogstatsd"),
            lambda: cleared.append("ndjson"),
        ],
    )
    return Setup(reloader, engine, pipeline, cleared, path)


async def test_a_reload_applies_the_rules_and_resolves_the_removed_ones(setup):
    reloader, engine, pipeline, cleared, path = setup
    extra = 'max_series = 500\n[alerts]\ninternal_channels = ["log"]\n'
    path.write_text(config_text(("a", 1), ("c", 4), extra=extra))

    outcome = await reloader.reload("api")

    assert outcome == ReloadOutcome(
        kept=("a",), added=("c",), removed=("b",), config=str(path)
    )
    assert outcome.as_dict() == {
        "status": "reloaded",
        "config": str(path),
        "kept": ["a"],
        "added": ["c"],
        "changed": [],
        "removed": ["b"],
    }
    assert engine.calls == [(["a", "c"], NOW, 500)]
    assert sorted(pipeline.rules) == ["a", "c"]
    assert pipeline.internal_channels == ["log"]
    assert [decision.rule for decision in pipeline.submitted] == ["b"]
    assert cleared == ["dogstatsd", "ndjson"]
    assert [rule.name for rule in reloader.config.rules] == ["a", "c"]
    assert reloader.config.daemon.max_series == 500
    assert reloader.config.alerts.internal_channels == ["log"]


async def test_a_changed_rule_is_reported_as_changed(setup):
    reloader, engine, _, _, path = setup
    path.write_text(config_text(("a", 1), ("b", 5)))

    outcome = await reloader.reload("SIGHUP")

    assert (outcome.kept, outcome.changed) == (("a",), ("b",))
    assert reloader.config.rules[1].threshold == 5


@pytest.mark.parametrize(
    ("text", "error"),
    [
        (
            "[[rules]\n",
            "{path}: not valid TOML: ",
        ),
        (
            config_text(("a", 1)).replace(
                "threshold = 1", 'threshold = 1\nwindow = "5x"'
            ),
            "{path}: rules[0].window: invalid duration '5x'"
            " (write it like 30s, 5m, 1h or 1d)",
        ),
        (
            config_text(("a", 1)) + "\n[nonsense]\n",
            "{path}: nonsense: unknown key",
        ),
        (
            config_text(("a", 1)).replace('channels = ["log"]', 'channels = ["pager"]'),
            "{path}: rules[0].channels[0]: no channel named 'pager'",
        ),
    ],
    ids=["not-toml", "bad-duration", "unknown-section", "unknown-channel"],
)
async def test_a_file_that_does_not_validate_changes_nothing(
    setup, caplog, text, error
):
    reloader, engine, pipeline, cleared, path = setup
    running = reloader.config
    path.write_text(text)

    with caplog.at_level(logging.ERROR):
        outcome = await reloader.reload("SIGHUP")

    assert not outcome.is_reloaded
    assert outcome.error.startswith(error.format(path=path))
    assert outcome.as_dict() == {"status": "error", "error": outcome.error}
    assert reloader.config is running
    assert (engine.calls, pipeline.rules, cleared) == ([], None, [])
    [record] = [r for r in caplog.records if r.message.startswith("config reload")]
    assert record.reason == "SIGHUP"
    assert (record.message, record.error) == ("config reload failed", outcome.error)


async def test_a_missing_file_changes_nothing(setup):
    reloader, engine, _, _, path = setup
    path.unlink()

    outcome = await reloader.reload("api")

    assert outcome.error == f"{path}: cannot read the file: No such file or directory"
    assert engine.calls == []


WEBHOOK = """
[[channels]]
name = "hook"
type = "webhook"
url = "https://hooks.example/secret-token"
"""


@pytest.mark.parametrize(
    ("channels", "named"),
    [
        (CHANNELS + WEBHOOK, "hook"),
        (CHANNELS.replace('type = "log"', 'type = "log"\nlevel = "error"'), "log"),
        (WEBHOOK.replace('"hook"', '"log"'), "log"),
        (
            CHANNELS.replace('type = "log"', 'type = "log"\nlevel = "error"') + WEBHOOK,
            "hook, log",
        ),
    ],
    ids=["added", "setting-changed", "type-changed", "two-changed"],
)
async def test_a_changed_channel_list_is_refused(setup, caplog, channels, named):
    reloader, engine, _, cleared, path = setup
    running = reloader.config
    path.write_text(config_text(("a", 1), channels=channels))

    outcome = await reloader.reload("api")

    assert outcome.error == (
        f"{path}: channels: channels changed ({named}); restart tocsin to apply them"
    )
    assert reloader.config is running
    assert (engine.calls, cleared) == ([], [])
    # A webhook URL is a secret: the refusal never quotes a channel.
    assert "secret-token" not in caplog.text


async def test_channels_listed_in_another_order_are_the_same_channels(tmp_path):
    path = tmp_path / "tocsin.toml"
    path.write_text(config_text(("a", 1), channels=CHANNELS + WEBHOOK))
    running = config.load(path)
    reloader = Reloader(
        str(path),
        running,
        engine=FakeEngine(running.rules),
        pipeline=FakePipeline(),
        clock=ManualClock(NOW),
    )
    path.write_text(config_text(("a", 1), channels=WEBHOOK + CHANNELS))

    assert (await reloader.reload("api")).is_reloaded


async def test_sections_only_a_restart_applies_are_kept_and_named(setup, caplog):
    reloader, _, _, _, path = setup
    running = reloader.config
    changed = config_text(("a", 1), ("b", 2), extra='tick = "5s"\n')
    changed += '[ingest]\nudp = ""\n[alerts]\nclose_after = "2h"\n'
    path.write_text(changed)

    with caplog.at_level(logging.WARNING):
        outcome = await reloader.reload("api")

    assert outcome.is_reloaded
    assert reloader.config.daemon == running.daemon
    assert reloader.config.ingest == running.ingest
    assert reloader.config.alerts.close_after == 7200
    warnings = [r.message for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == [
        "daemon changed; restart tocsin to apply it",
        "ingest changed; restart tocsin to apply it",
    ]


@pytest.mark.parametrize(
    ("change", "sections"),
    [
        ("", []),
        ("[daemon]\nmax_series = 7\n", []),
        ('[daemon]\nlog_level = "debug"\n', ["daemon"]),
        ('[api]\nsocket = "./other.sock"\n', ["api"]),
        ('[export.datadog]\ninterval = "5s"\n', ["export"]),
        ('[alerts]\nclose_after = "1m"\n', []),
        ("[health]\nfailures = 2\n", []),
    ],
)
def test_restart_sections(change, sections):
    running = config.parse(CHANNELS)
    assert restart_sections(running, config.parse(change + CHANNELS)) == sections


async def test_overlapping_reloads_run_one_after_the_other(setup, monkeypatch):
    reloader, engine, _, _, path = setup
    gate = threading.Event()
    entered = threading.Semaphore(0)
    events: list[str] = []
    real_load = config.load

    def load(source):
        events.append("load")
        loaded = real_load(source)
        entered.release()
        if len(events) == 1:
            gate.wait(timeout=10)
        return loaded

    original_reload = engine.reload

    def engine_reload(*args, **kwargs):
        events.append("apply")
        return original_reload(*args, **kwargs)

    monkeypatch.setattr("tocsin.daemon.reload.config_file.load", load)
    engine.reload = engine_reload

    first = asyncio.create_task(reloader.reload("SIGHUP"))
    await asyncio.to_thread(entered.acquire, timeout=10)
    second = asyncio.create_task(reloader.reload("api"))
    # Give the second reload every chance to start reading while the first
    # still holds the file: only the lock keeps it waiting.
    for _ in range(20):
        await asyncio.sleep(0)
    path.write_text(config_text(("a", 1)))
    gate.set()
    outcomes = await asyncio.gather(first, second)

    assert events == ["load", "apply", "load", "apply"]
    # The second read the file as it was once the first had finished.
    assert outcomes[1].removed == ("b",)


async def test_clearing_a_parsers_caches_resolves_each_series_again(sink, stats):
    parser = DogStatsDParser(sink, stats, ManualClock(NOW))
    parser.feed(b"m.a:1|g|#model:x")
    parser.feed(b"m.a:2|g|#model:x")
    assert len(sink.resolved) == 1

    parser.clear_caches()
    parser.feed(b"m.a:3|g|#model:x")

    assert sink.resolved == [("m.a", "g", ("model:x",))] * 2
    assert [sample.value for sample in sink.samples] == [1, 2, 3]


# The daemon in this process: a reload through it, and through SIGHUP.


class Running(NamedTuple):
    daemon: Daemon
    path: object
    task: asyncio.Task

    async def stop(self) -> int:
        self.daemon.request_stop("test")
        return await asyncio.wait_for(self.task, 10)


@pytest.fixture
async def running(tmp_path, monkeypatch):
    """Start a Daemon on the test's loop; stop it, and check it stopped cleanly."""
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "tocsin.toml"
    extra = '[ingest]\nudp = ""\nunix_stream = "./ingest.sock"\n'
    path.write_text(config_text(("a", 1), extra=extra))
    daemon = Daemon(config.load(path), str(path))
    task = asyncio.create_task(daemon.run())
    started = asyncio.create_task(daemon.started.wait())
    await asyncio.wait({task, started}, timeout=10, return_when="FIRST_COMPLETED")
    assert daemon.started.is_set(), "the daemon did not start"
    process = Running(daemon, path, task)
    yield process
    assert await process.stop() == 0


def watch_reloads(daemon: Daemon) -> asyncio.Event:
    """Return an event set when the next reload, however asked for, is done."""
    done = asyncio.Event()
    reload = daemon.reload

    async def watched(source: str) -> ReloadOutcome:
        try:
            return await reload(source)
        finally:
            done.set()

    daemon.reload = watched
    return done


async def test_a_daemon_keeps_its_config_when_sighup_brings_a_bad_file(running, caplog):
    daemon, path, _ = running
    before = daemon.config
    path.write_text(path.read_text().replace("threshold = 1", "threshold = 'x'"))
    reloaded = watch_reloads(daemon)

    os.kill(os.getpid(), signal.SIGHUP)
    await asyncio.wait_for(reloaded.wait(), 10)

    assert daemon.config is before
    assert daemon.is_ready
    [failed] = [r for r in caplog.records if r.message.startswith("config reload")]
    assert failed.levelno == logging.ERROR
    assert failed.reason == "SIGHUP"
    assert failed.detail == "rules[0].threshold"


async def test_a_daemon_watches_its_integrations_by_the_reloaded_health(running):
    daemon, path, _ = running
    path.write_text('[health]\nfailures = 2\nwindow = "1m"\n' + path.read_text())

    outcome = await daemon.reload("api")

    assert outcome.error is None
    watcher = daemon.parts.watcher
    assert (watcher.settings.failures, watcher.watch.window) == (2, 60.0)
    assert daemon.parts.pipeline.health.failures == 2


async def test_a_daemon_refuses_changed_channels(running):
    daemon, path, _ = running
    path.write_text(path.read_text() + WEBHOOK)

    outcome = await daemon.reload("api")

    assert outcome.error.endswith(
        "channels: channels changed (hook); restart tocsin to apply them"
    )


async def test_a_daemon_serves_its_api_until_it_stops(running):
    socket_path = running.daemon.config.api_socket_path
    assert socket_path == "state/api.sock"
    assert stat.S_ISSOCK(os.stat(socket_path).st_mode)

    assert await running.stop() == 0

    assert not os.path.exists(socket_path)


async def test_a_daemon_not_yet_started_reloads_nothing(tmp_path):
    path = tmp_path / "tocsin.toml"
    path.write_text(config_text(("a", 1)))
    daemon = Daemon(config.load(path), str(path))

    outcome = await daemon.reload("SIGHUP")

    assert outcome.error == "tocsin is starting; nothing was reloaded"


async def test_a_daemon_will_not_start_on_an_api_socket_in_use(tmp_path, caplog):
    path = tmp_path / "tocsin.toml"
    socket_path = tmp_path / "api.sock"
    extra = f'[ingest]\nudp = ""\n[api]\nsocket = "{socket_path}"\n'
    path.write_text(config_text(("a", 1), extra=extra))
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as live:
        live.bind(str(socket_path))
        live.listen()

        code = await Daemon(config.load(path), str(path)).run()

    assert code == 1
    [error] = [r for r in caplog.records if r.message == "cannot open a listener"]
    assert (error.listener, error.address) == ("api", str(socket_path))
    assert not (tmp_path / "state").exists()


class Evaluations(NamedTuple):
    #: Set after each evaluation that follows new samples.
    evaluated: asyncio.Event
    #: Set after one that fired.
    fired: asyncio.Event


def watch_evaluations(daemon: Daemon) -> Evaluations:
    events = Evaluations(asyncio.Event(), asyncio.Event())
    evaluate = daemon.engine.evaluate_dirty

    def watched(now: float):
        decisions = evaluate(now)
        events.evaluated.set()
        if any(decision.action == "fire" for decision in decisions):
            events.fired.set()
        return decisions

    daemon.engine.evaluate_dirty = watched
    return events


async def test_a_changed_rule_gets_the_samples_of_a_series_seen_before(running):
    daemon, path, _ = running
    _, writer = await asyncio.open_unix_connection("ingest.sock")
    events = watch_evaluations(daemon)
    writer.write(b'{"metric": "m.a", "value": 0.5}\n')
    await asyncio.wait_for(events.evaluated.wait(), 10)
    assert not events.fired.is_set()
    path.write_text(path.read_text().replace("threshold = 1", "threshold = 0.1"))

    outcome = await daemon.reload("api")
    # The same series again, on the same connection: its cached handle led to
    # the rule as it was, and only a cleared cache leads to the new one.
    writer.write(b'{"metric": "m.a", "value": 0.5}\n')
    await asyncio.wait_for(events.fired.wait(), 10)

    assert outcome.changed == ("a",)
    assert daemon.config.rules[0].threshold == 0.1
    writer.close()
    await writer.wait_closed()
