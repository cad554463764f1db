"""The daemon's listeners: the ingest sockets and the API's, bound at start-up
and closed first at shutdown.

Binding comes before anything else is created, so that a port in use stops
start-up with nothing on disk; reading starts last, once samples have
somewhere to go (datagrams sent meanwhile wait in the kernel). At shutdown,
what senders already handed to the kernel is read and counted before the rest
stops.
"""

from __future__ import annotations

import logging
from contextlib import AsyncExitStack

from tocsin.daemon import api, listeners, systemd
from tocsin.daemon.dogstatsd import BoundedCache, DogStatsDParser
from tocsin.daemon.ingest import IngestRouter, IngestStats
from tocsin.daemon.ndjson import NdjsonDecoder
from tocsin.errors import ListenerError
from tocsin.logs import RateLimiter

log = logging.getLogger(__name__)


class ListenerParts:
    """The listeners of :class:`~tocsin.daemon.app.Daemon`, as a mixin: it
    uses the daemon's ``config``, ``clock``, ``stats``, ``budget``,
    ``_cache_clearers`` and ``_listeners``."""

    def _bind_listeners(self, stack: AsyncExitStack) -> dict[str, listeners.Binding]:
        """Bind the socket of every listener the config turns on, unless
        systemd passed it one (see :mod:`tocsin.daemon.systemd`).

        A passed socket turns its listener on, whatever the config says.

        :raises ActivationError: if systemd passed a socket that cannot be
            used.
        :raises ListenerError: if one cannot be bound; those bound before it
            are released by ``stack``.
        """
        ingest = self.config.ingest
        wanted = {
            "udp": ingest.udp,
            "unix_dgram": ingest.unix_dgram,
            "unix_stream": ingest.unix_stream,
        }
        if self.config.api.enabled:
            wanted["api"] = self.config.api_socket_path
            if self.config.api.tcp:
                wanted["api_tcp"] = self.config.api.tcp
        bindings = {}
        passed = systemd.passed_sockets()
        for name, sock in passed.items():
            # No file to remove: a passed Unix socket is systemd's.
            binding = listeners.Binding(name, sock, None)
            stack.callback(binding.close)
            bindings[name] = binding
            log.info(
                "using the socket systemd passed",
                extra={"listener": name, "address": binding.address},
            )
        for name, address in wanted.items():
            if not address or name in bindings:
                continue
            try:
                if name == "api":
                    ingest_paths = (ingest.unix_dgram, ingest.unix_stream)
                    binding = api.bind(address, taken=ingest_paths)
                elif name == "api_tcp":
                    binding = api.bind_tcp(address)
                    stack.callback(binding.close)
                    bindings[name] = binding
                    continue
                else:
                    binding = listeners.bind(name, address)
            except (OSError, ValueError) as error:
                reason = getattr(error, "strerror", None) or str(error)
                raise ListenerError(name, address, reason) from None
            # Does nothing once the listener has taken the socket over.
            stack.callback(binding.close)
            bindings[name] = binding

        return bindings

    async def _open_listeners(
        self, router: IngestRouter, bindings: dict[str, listeners.Binding]
    ) -> list:
        """Listen on the sockets :meth:`_bind_listeners` bound."""
        ingest = self.config.ingest
        clock = self.clock
        opened = []
        limits = {
            "max_sample_age": float(ingest.max_sample_age),
            "max_sample_skew": float(ingest.max_sample_skew),
        }

        def parser(name: str) -> DogStatsDParser:
            stats = self.stats.setdefault(name, IngestStats())
            made = DogStatsDParser(router, stats, clock, listener=name, **limits)
            self._cache_clearers.append(made.clear_caches)
            return made

        def evaluate() -> None:
            router.evaluate(clock.time())

        if "udp" in bindings:
            opened.append(
                await listeners.open_udp(
                    ingest.udp,
                    parser("udp").feed,
                    on_batch=evaluate,
                    receive_buffer=ingest.receive_buffer,
                    sock=bindings["udp"],
                )
            )
        if "unix_dgram" in bindings:
            opened.append(
                await listeners.open_unix_dgram(
                    ingest.unix_dgram,
                    parser("unix_dgram").feed,
                    on_batch=evaluate,
                    receive_buffer=ingest.receive_buffer,
                    sock=bindings["unix_dgram"],
                )
            )
        if "unix_stream" in bindings:
            stats = self.stats.setdefault("unix_stream", IngestStats())
            # Shared by every connection: a client that reconnects per sample
            # must neither rebuild the cache nor reset the warning limits.
            shared = {
                "cache": BoundedCache(),
                "limiter": RateLimiter(clock=clock.monotonic),
            }
            self._cache_clearers.append(shared["cache"].clear)

            def new_connection():
                decoder = NdjsonDecoder(
                    router, stats, clock, listener="unix_stream", **limits, **shared
                )

                def on_chunk(data: bytes) -> None:
                    decoder.feed(data)
                    evaluate()

                return on_chunk

            opened.append(
                await listeners.open_unix_stream(
                    ingest.unix_stream,
                    new_connection,
                    sock=bindings["unix_stream"],
                    idle_timeout=float(ingest.idle_timeout),
                )
            )
        return opened

    async def _close_listeners(self) -> None:
        # What senders already handed to the kernel is read and counted first;
        # a quarter of the budget leaves the rest to record what it decides.
        for listener in self._listeners:
            listener.close(drain_for=self.budget.remaining(0.25))
        log.info("listeners closed", extra={"count": len(self._listeners)})
        dropped = {listener.name: listener.counters() for listener in self._listeners}
        for name, stats in self.stats.items():
            totals = {**stats.as_dict(), **dropped.get(name, {})}
            log.info("ingest totals", extra={"listener": name, "detail": totals})
        engine = getattr(self, "engine", None)
        if engine is not None:
            totals = {**engine.stats.as_dict(), "series": engine.series_count}
            log.info("rules totals", extra={"detail": totals})
