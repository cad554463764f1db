"""The daemon: start every part in order, run, and stop in reverse order."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from contextlib import AsyncExitStack
from types import SimpleNamespace

import aiohttp

from tocsin import __version__
from tocsin.channels.base import ChannelContext
from tocsin.channels.build import build_channels
from tocsin.channels.datadog_metrics import DatadogExporter, ExportBuffer
from tocsin.channels.delivery import Dispatcher
from tocsin.channels.health import DeliveryWatch
from tocsin.clock import Clock, SystemClock
from tocsin.config import Config
from tocsin.daemon import api
from tocsin.daemon.alerting import AlertPipeline, restore
from tocsin.daemon.audit_parts import AuditParts
from tocsin.daemon.effective import Additions
from tocsin.daemon.hooks import Hooks
from tocsin.daemon.ingest import IngestRouter, IngestStats
from tocsin.daemon.listener_parts import ListenerParts
from tocsin.daemon.loop_lag import LoopLag
from tocsin.daemon.notifications import NotificationParts
from tocsin.daemon.reload import Reloader, ReloadOutcome
from tocsin.daemon.self_metrics import SelfMetrics
from tocsin.daemon.self_metrics_export import SelfMetricsExport
from tocsin.daemon.services import Services
from tocsin.daemon.systemd import StatusFigures, Supervision
from tocsin.daemon.tasks import cancel
from tocsin.errors import ActivationError, ConfigError, ListenerError, StateError
from tocsin.redaction import Redactor
from tocsin.rules.engine import RuleEngine
from tocsin.secrets import Secrets, read_secrets
from tocsin.state.alerts import AlertStore
from tocsin.state.catalog import Catalog
from tocsin.state.db import Database
from tocsin.state.escalations import EscalationStore
from tocsin.state.inbound import InboundLog
from tocsin.state.outbox import Outbox
from tocsin.state.silences import SilenceStore

log = logging.getLogger(__name__)

#: How often resolved alerts are checked for closing.
_CLOSE_EVERY = 60.0


class ShutdownBudget:
    """What remains of ``daemon.shutdown_timeout``, which bounds the whole
    shutdown rather than each of its steps.

    :param seconds: the whole budget; it starts running at :meth:`start`.
    """

    def __init__(self, seconds: float, clock: Clock) -> None:
        self.seconds = seconds
        self._clock = clock
        self._ends: float | None = None

    def start(self) -> None:
        """Start the budget; safe to call twice."""
        if self._ends is None:
            self._ends = self._clock.monotonic() + self.seconds

    def remaining(self, share: float = 1.0) -> float:
        """Return ``share`` of the seconds left (all of them before :meth:`start`)."""
        if self._ends is None:
            return self.seconds * share
        return max(0.0, self._ends - self._clock.monotonic()) * share


class Daemon(ListenerParts, NotificationParts, AuditParts):
    """One Tocsin process.

    :param config: the checked configuration.
    :param config_path: where it was read from (for the logs).
    :param secrets: the secrets the config names, if already read; the daemon
        reads them first thing otherwise.
    """

    def __init__(
        self,
        config: Config,
        config_path: str,
        clock: Clock | None = None,
        *,
        secrets: Secrets | None = None,
    ):
        self.config = config
        self.config_path = config_path
        self.secrets = secrets
        self.clock = clock or SystemClock()
        # Applied to tags and to what people type; a reload does not change
        # it, since labels already stored were redacted by the one in force.
        self.redactor = Redactor.from_config(config.privacy)
        self.stats: dict[str, IngestStats] = {}
        self.should_exit = asyncio.Event()
        #: Set once every part has started and Tocsin is ready.
        self.started = asyncio.Event()
        #: Alert decisions still queued when shutdown gave up waiting for them.
        self.unrecorded = 0
        self.budget = ShutdownBudget(float(config.daemon.shutdown_timeout), self.clock)
        self._stop_signal: str | None = None
        self._reloader: Reloader | None = None
        self._api: api.ControlApi | None = None
        #: Tocsin's own metrics, from start-up on (:mod:`~tocsin.daemon.self_metrics`).
        self.metrics: SelfMetrics | None = None
        # Functions that each forget the series handles a parser cached.
        self._cache_clearers: list = []
        self._reload_tasks: set[asyncio.Task] = set()
        #: The running parts the API reaches: stores, notifier, escalator...
        self.parts = SimpleNamespace()
        #: What the API added at run time (see :mod:`tocsin.daemon.effective`).
        self.additions = Additions()
        #: The config that runs: the file's with the additions.
        self.running = config
        self._token: str | None = None
        self._channel_configs: dict = {}
        #: What systemd is told, when it supervises Tocsin.
        self.supervision = Supervision.from_environ()

    @property
    def is_ready(self) -> bool:
        """Tell whether the daemon has started and is not stopping."""
        return self.started.is_set() and not self.should_exit.is_set()

    async def reload(self, source: str) -> ReloadOutcome:
        """Apply the config file's rules now (see :mod:`tocsin.daemon.reload`).

        :param source: what asked for it (``SIGHUP``, ``api``), for the logs.
        :return: the rules by fate, or the error that left everything as it was.
        """
        if self._reloader is None or not self.is_ready:
            state = "stopping" if self.should_exit.is_set() else "starting"
            log.warning(
                "config reload ignored: tocsin is %s",
                state,
                extra={"reason": source},
            )
            return ReloadOutcome(error=f"tocsin is {state}; nothing was reloaded")
        self.supervision.reloading()
        error: str | None = "the reload failed"
        try:
            outcome = await self._reloader.reload(source)
            error = outcome.error
        finally:
            # systemd waits for READY=1 after RELOADING=1, whatever came of it.
            self.supervision.reloaded(error)
        self.config = self._reloader.config
        await self._record_reload(source, outcome)

        return outcome

    def request_stop(self, reason: str = "requested") -> None:
        """Begin a clean shutdown; safe to call more than once."""
        if self._stop_signal is None:
            self._stop_signal = reason
            log.info("stop requested", extra={"reason": reason})
        self.should_exit.set()

    async def run(self) -> int:
        """Run until a stop is requested; return the process exit status."""
        config = self.config
        log.info(
            "starting tocsin",
            extra={
                "version": __version__,
                "pid": os.getpid(),
                "config": self.config_path,
                "rules": len(config.rules),
                "channels": len(config.channels),
            },
        )
        for warning in config.warnings():
            log.warning(
                "config warning: %s: %s",
                warning.key,
                warning.message,
                extra={"path": self.config_path},
            )
        self._install_signal_handlers()
        # Pinged from start-up on: opening a large database counts too.
        self.supervision.start_watchdog()
        async with AsyncExitStack() as stack:
            stack.push_async_callback(self.supervision.close)
            try:
                await self._start(stack)
            except ActivationError as error:
                log.error("%s", error, extra={"listener": error.name})
                return 1
            except StateError as error:
                log.error("cannot open the state database", extra={"error": str(error)})
                return 1
            except ConfigError as error:
                log.error("config error: %s", error, extra={"path": error.path})
                return 2
            except ListenerError as error:
                log.error(
                    "cannot open a listener",
                    extra={
                        "listener": error.listener,
                        "address": error.address,
                        "error": error.reason,
                    },
                )
                return 1
            except OSError as error:
                # A bound socket the loop then fails to listen on.
                log.error("cannot open a listener", extra={"error": str(error)})
                return 1
            self.started.set()
            log.info(
                "ready",
                extra={
                    "listeners": [
                        f"{item.name} {item.address}" for item in self._listeners
                    ]
                    + ([f"api {self._api.address}"] if self._api else [])
                },
            )
            await self.supervision.ready(StatusFigures(self))
            await self.should_exit.wait()
            self.supervision.stopping()
            self.budget.start()
            log.info(
                "shutting down",
                extra={
                    "reason": self._stop_signal,
                    "detail": f"within {self.budget.seconds:g}s",
                },
            )
        if self.unrecorded:
            log.error(
                "stopped with alert decisions unrecorded",
                extra={"count": self.unrecorded},
            )
            return 1
        log.info("stopped")
        return 0

    def _install_signal_handlers(self) -> None:
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(
                signum, self.request_stop, signal.Signals(signum).name
            )
        loop.add_signal_handler(signal.SIGHUP, self._reload_on_signal)

    def _reload_on_signal(self) -> None:
        task = asyncio.create_task(self._reload_logged("SIGHUP"), name="reload")
        # The loop keeps only weak references to tasks.
        self._reload_tasks.add(task)
        task.add_done_callback(self._reload_tasks.discard)

    async def _reload_logged(self, source: str) -> None:
        # Nobody awaits a reload a signal asked for: its failure is logged.
        try:
            await self.reload(source)
        except Exception:
            log.exception("config reload failed", extra={"reason": source})

    async def _start(self, stack: AsyncExitStack) -> None:
        config = self.config
        clock = self.clock
        started_at = clock.time()

        # Secrets first: a webhook URL that cannot be read is a config error,
        # found before anything is created on disk.
        secrets = self.secrets or read_secrets(config, self.config_path)
        if config.api.enabled and config.api.tcp:
            self._token = api.read_token(config.api, self.config_path)

        # Sockets next, bound but not yet read: a port in use stops start-up
        # before any state exists. They are listened on last, once samples
        # have somewhere to go; datagrams sent meanwhile wait in the kernel.
        bindings = self._bind_listeners(stack)

        session = aiohttp.ClientSession()
        stack.push_async_callback(session.close)
        self._session = session
        self.channel_context = ChannelContext(
            session, clock, external_url=config.api.external_url
        )
        channels = build_channels(
            config.channels, secrets.channels, self.channel_context
        )
        export_key = secrets.datadog_api_key

        # State next: nothing may be accepted that could not be recorded.
        database = await Database.open(config.database_path, clock=clock)
        stack.push_async_callback(self._close_database, database)
        store = AlertStore(database, clock)
        outbox = Outbox(database, clock)
        log.info("state database open", extra={"path": str(config.database_path)})
        parts = self.parts
        parts.database, parts.store, parts.outbox = database, store, outbox
        parts.silences = SilenceStore(database, clock)
        parts.escalations = EscalationStore(database, clock)
        parts.catalog = Catalog(database, clock)
        await self._start_audit(stack, database)

        # Tocsin's own metrics read the parts as they join; the loop's lag is
        # measured from here on.
        loop_lag = LoopLag()
        lag_task = asyncio.create_task(loop_lag.run(), name="loop-lag")
        stack.push_async_callback(cancel, lag_task)
        self.metrics = SelfMetrics(
            parts, self.stats, clock=clock, loop_lag=loop_lag, started_at=started_at
        )

        # What the API added at run time, laid over the file.
        self.additions = await self._load_additions(parts.catalog)
        running = self.running = self._compose(config)
        for channel in self.additions.channels:
            channels[channel.name] = self.build_channel(channel)

        engine = RuleEngine(running.rules, max_series=config.daemon.max_series)
        rules = {rule.name: rule for rule in running.rules}
        self._channel_configs = {channel.name: channel for channel in running.channels}
        # The notifier sends the resolves of alerts retired here.
        restored = await restore(store, engine, rules, clock.time())
        if restored:
            log.info("restored open alerts", extra={"count": restored})

        # Delivery: pending notifications from before a restart go out now.
        watch = DeliveryWatch(float(running.health.window))
        dispatcher = Dispatcher(
            outbox,
            channels,
            clock,
            record_payloads=config.audit.record_payloads,
            watch=watch,
        )
        dispatcher.start()
        stack.push_async_callback(self._stop_delivery, dispatcher, channels)
        parts.dispatcher = dispatcher

        # The notifier and the escalator stop before delivery does.
        await self._start_notifications(stack, database, running)

        # Started before the pipeline so that it stops after it: at shutdown
        # the decisions are written first, while the whole budget remains.
        buffer = await self._start_export(stack, session, export_key)

        pipeline = AlertPipeline(
            rules,
            self._channel_configs,
            store,
            dispatcher.wake,
            clock,
            internal_channels=running.alerts.internal_channels,
            on_changed=self._alert_changed,
            reopen_window=float(running.alerts.reopen_window),
            health=running.health,
        )
        pipeline_task = asyncio.create_task(pipeline.run(), name="alert-pipeline")
        stack.push_async_callback(self._stop_pipeline, pipeline, pipeline_task)
        router = IngestRouter(engine, buffer, pipeline.submit, self.redactor)

        # Tocsin's own alerts about its integrations and its export.
        await self._start_watch(stack, watch, pipeline)

        background = asyncio.create_task(
            self._tick(engine, pipeline, store), name="rule-tick"
        )
        stack.push_async_callback(cancel, background)

        self._listeners = await self._open_listeners(router, bindings)
        stack.push_async_callback(self._close_listeners)
        parts.listeners = self._listeners

        self.engine = parts.engine = engine
        self.pipeline = parts.pipeline = pipeline
        self.dispatcher = dispatcher
        self._reloader = Reloader(
            self.config_path,
            config,
            engine=engine,
            pipeline=pipeline,
            clock=clock,
            clear_caches=self._cache_clearers,
            compose=self._compose,
            on_applied=self._applied,
        )
        parts.reloader = self._reloader

        # The API last, so that it stops first: no reload starts once the
        # listeners, the pipeline or the engine may be gone.
        stack.push_async_callback(self._stop_reloads)
        if "api" in bindings:
            services = Services(self)
            hooks = Hooks(
                services,
                dispatcher.channel,
                InboundLog(database, clock),
                clock,
                session,
                self.redactor,
            )
            self._api = api.ControlApi(
                self.reload,
                lambda: self.is_ready,
                backend=services,
                token=self._token,
                clock=clock,
                stop_timeout=min(api.STOP_TIMEOUT, self.budget.seconds / 10),
                hooks=hooks,
                metrics=self.metrics,
            )
            await self._api.start(bindings["api"], bindings.get("api_tcp"))

    async def _stop_reloads(self) -> None:
        if self._api is not None:
            await self._api.stop()
        # A reload changes nothing before its file is read and checked, so
        # one cut short there leaves the rules as they were.
        for task in list(self._reload_tasks):
            await cancel(task)

    async def _start_export(self, stack, session, key):
        settings = self.config.export.datadog
        self.parts.exporter = None
        if key is None:
            if settings.api_key_file:
                detail = "the api_key_file is empty"
            elif settings.key_env:
                detail = f"${settings.key_env} is empty or not set"
            else:
                detail = "api_key_env is empty and no api_key_file is set"
            log.info("datadog export off: no API key", extra={"detail": detail})
            return None
        buffer = ExportBuffer.from_config(settings)
        extra = None
        if settings.self_metrics:
            extra = SelfMetricsExport(
                self.metrics, tags=settings.tags, host=settings.host
            ).series
        exporter = DatadogExporter(
            settings, key, buffer, clock=self.clock, session=session, extra=extra
        )
        task = asyncio.create_task(exporter.run(), name="datadog-export")
        self.parts.exporter, self.parts.export_buffer = exporter, buffer

        async def stop_export() -> None:
            # Let a send in progress finish: its series already left the buffer.
            # Metrics matter less than notifications: the export gets at most
            # half of what remains, so deliveries keep the rest.
            exporter.close()
            try:
                await asyncio.wait_for(task, self.budget.remaining(0.25))
            except TimeoutError:
                log.warning("datadog export did not stop in time; cancelled")
            log.info("flushing the datadog export")
            await exporter.flush(self.budget.remaining(1 / 3))
            totals = {**exporter.stats.as_dict(), **buffer.counters()}
            log.info("datadog export totals", extra={"detail": totals})

        stack.push_async_callback(stop_export)
        log.info(
            "datadog export on",
            extra={"detail": f"every {settings.interval:g}s to {exporter.base_url}"},
        )
        return buffer

    async def _tick(self, engine, pipeline: AlertPipeline, store) -> None:
        """Evaluate every series on a clock, and close old resolved alerts."""
        interval = float(self.config.daemon.tick)
        next_close = next_report = 0.0
        reported = engine.stats.as_dict()
        while True:
            await asyncio.sleep(interval)
            now = self.clock.time()
            # Read on every turn: a reload may change it.
            close_after = float(self.config.alerts.close_after)

            decisions = engine.tick(now)
            if decisions:
                pipeline.submit(decisions)
            if now >= next_report:
                next_report = now + _CLOSE_EVERY
                reported = _report_dropped(engine.stats.as_dict(), reported)
            # 0 closes by hand only.
            if close_after > 0 and now >= next_close:
                next_close = now + _CLOSE_EVERY
                try:
                    closed = await store.close_resolved(now - close_after)
                except StateError as error:
                    log.warning(
                        "cannot close resolved alerts", extra={"error": str(error)}
                    )
                else:
                    if closed:
                        log.info("closed resolved alerts", extra={"count": closed})

    async def _stop_pipeline(self, pipeline: AlertPipeline, task) -> None:
        log.info("recording queued decisions", extra={"count": pipeline.backlog})
        await pipeline.stop()
        try:
            await asyncio.wait_for(task, self.budget.remaining())
        except TimeoutError:
            self.unrecorded = pipeline.backlog
            log.error(
                "gave up recording queued decisions",
                extra={"count": self.unrecorded},
            )

    async def _stop_delivery(self, dispatcher, channels) -> None:
        log.info("finishing in-flight deliveries")
        await dispatcher.stop(self.budget.remaining())
        for channel in channels.values():
            await channel.close()

    async def _close_database(self, database) -> None:
        await database.close()
        log.info("state database closed")


#: Counters of the rules engine that mean samples or series were left out.
_DROPPED = ("late_samples", "future_samples", "non_finite_samples", "refused_series")


def _report_dropped(totals: dict[str, int], before: dict[str, int]) -> dict[str, int]:
    """Log what the rules engine left out since ``before``; return ``totals``.

    Called once a minute, so the warning is rate-limited by construction.
    """
    dropped = {name: totals[name] - before.get(name, 0) for name in _DROPPED}
    dropped = {name: count for name, count in dropped.items() if count > 0}
    if dropped:
        # WARNING: samples were left out of the rules: late or early stamps,
        # bad values, or series beyond a limit.
        log.warning("the rules left samples out", extra={"detail": dropped})
    return totals
