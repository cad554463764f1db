"""The control API: health checks, reload, and ``/api/v1`` over HTTP.

It is served on a Unix stream socket and, when the config asks, on TCP. The
health and reload paths are Alertmanager's, so tooling written for it works
unchanged:

- ``POST /-/reload`` reads the config file again and applies its rules; 200
  with what became of each rule, or 400 with the error when nothing changed;
- ``GET /-/healthy`` answers 200 while the process runs;
- ``GET /-/ready`` answers 200 once Tocsin has started, 503 once it stops;
- ``GET /metrics`` answers Tocsin's own metrics in Prometheus's text format
  (:mod:`tocsin.daemon.self_metrics`).

``/api/v1`` lists and moves alerts, and manages silences, runtime rules and
integrations, settings, routes and groups (:mod:`tocsin.daemon.api_v1`,
described by ``/api/v1/openapi.json``).

Every answer is a JSON object with a ``status``; an error is ``{"status":
"error", "error": message}`` with 400 for a malformed request, 401 for a TCP
request without the right token, 404 for something unknown, 409 for a change
refused (a lifecycle move, a name taken), 422 for a value that cannot be used
and 500, without detail, for a fault inside Tocsin.

The socket file has mode 0660: only the service's user and group may use it,
and the API needs no token there; the caller's user name (from the socket's
peer credentials) is the actor of what it changes. On TCP every request needs
``Authorization: Bearer <token>``, and its actor is ``api:token``.
"""

from __future__ import annotations

import hmac
import logging
import os
import socket
from collections.abc import Awaitable, Callable, Iterable

import orjson
from aiohttp import web

from tocsin.clock import Clock, SystemClock
from tocsin.daemon import listeners
from tocsin.daemon.api_v1 import V1
from tocsin.daemon.api_values import RequestError, is_unix
from tocsin.daemon.backend import Backend
from tocsin.daemon.hooks import PREFIX as HOOKS_PREFIX
from tocsin.daemon.hooks import Hooks
from tocsin.daemon.reload import ReloadOutcome
from tocsin.daemon.self_metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from tocsin.daemon.self_metrics import SelfMetrics
from tocsin.daemon.sockets import OwnedPath
from tocsin.errors import (
    ConflictError,
    InvalidValueError,
    LifecycleError,
    NotFoundError,
    UnknownAlertError,
    UnknownSilenceError,
)
from tocsin.schema import ApiConfig
from tocsin.secrets import read_secret

log = logging.getLogger(__name__)

#: The API socket's permissions: a reload changes what Tocsin alerts on.
API_SOCKET_MODE = 0o660

#: Longest :meth:`ControlApi.stop` waits for a request in progress, by default.
STOP_TIMEOUT = 1.0


def bind(path: str, *, taken: Iterable[str] = ()) -> listeners.Binding:
    """Bind the API socket at ``path``, replacing a stale socket file only.

    :param taken: paths of the ingest sockets, bound but not yet listening:
        to a bind at their path they would look stale, and be replaced.
    :raises ValueError: if ``path`` is one of ``taken``.
    :raises OSError: if the path cannot be bound, or a live process serves it.
    """
    if os.path.abspath(path) in {os.path.abspath(other) for other in taken if other}:
        raise ValueError("the path of an ingest listener")

    return listeners.bind("unix_stream", path, mode=API_SOCKET_MODE)


def bind_tcp(address: str) -> socket.socket:
    """Bind the API's TCP socket at ``host:port``, without listening.

    :raises ValueError: if ``address`` is not ``host:port``.
    :raises OSError: if the address cannot be bound.
    """
    host, colon, port = address.rpartition(":")
    if not colon or not host or not (port.isascii() and port.isdigit()):
        raise ValueError(f"expected host:port, got {address!r}")
    host = host.removeprefix("[").removesuffix("]")
    family, kind, proto, _, sockaddr = socket.getaddrinfo(
        host, int(port), type=socket.SOCK_STREAM
    )[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(sockaddr)
    except BaseException:
        sock.close()
        raise

    return sock


def read_token(api: ApiConfig, source: str) -> str | None:
    """Return the bearer token of the TCP listener, ``None`` if none is set.

    It is registered as a secret, so no log line ever shows it.

    :param source: the config file, named in errors.
    :raises ConfigError: if ``api.token_file`` is set but cannot be read.
    """
    return read_secret(
        env=api.token_env,
        file=api.token_file,
        what="API token",
        source=source,
        key="api.token_file" if api.token_file else "api.token_env",
    )


def _json(body: dict[str, object], status: int = 200) -> web.Response:
    return web.Response(
        body=orjson.dumps(body), status=status, content_type="application/json"
    )


def _error(message: str, status: int) -> web.Response:
    return _json({"status": "error", "error": message}, status)


#: The status each error of a request is answered with.
_STATUSES: tuple[tuple[type[Exception], int], ...] = (
    (RequestError, 400),
    (UnknownAlertError, 404),
    (UnknownSilenceError, 404),
    (NotFoundError, 404),
    (LifecycleError, 409),
    (ConflictError, 409),
    (InvalidValueError, 422),
)


@web.middleware
async def _json_errors(request: web.Request, handler) -> web.StreamResponse:
    # aiohttp answers an unknown path or a wrong method in plain text; every
    # answer of Tocsin's API is a JSON object, so tooling may always parse it.
    try:
        return await handler(request)
    except web.HTTPException as error:
        if error.status < 400:
            raise
        response = _error(error.reason, error.status)
        for header in ("Allow", "WWW-Authenticate"):
            if header in error.headers:
                response.headers[header] = error.headers[header]
        return response
    except Exception as error:
        for kind, status in _STATUSES:
            if isinstance(error, kind):
                return _error(str(error), status)
        # A fault inside Tocsin: the caller learns that much, the log tells
        # the rest. The request's body is not logged: it may hold a secret.
        log.exception(
            "API request failed",
            extra={"detail": f"{request.method} {request.rel_url.path}"},
        )
        return _error("internal error; see tocsin's log", 500)


class ControlApi:
    """The control API of one daemon.

    :param reload: runs a reload and returns its outcome (``Daemon.reload``).
    :param is_ready: tells whether the daemon has started and is not stopping.
    :param backend: what ``/api/v1`` reads and changes; without one, only the
        health and reload paths are served.
    :param token: the bearer token every TCP request must carry; required to
        serve TCP at all.
    :param clock: the time of silences and of the uptime.
    :param stop_timeout: most seconds :meth:`stop` waits for a request in
        progress.
    :param metrics: the self-metrics served at ``/metrics``; none without.
    """

    def __init__(
        self,
        reload: Callable[[str], Awaitable[ReloadOutcome]],
        is_ready: Callable[[], bool],
        *,
        backend: Backend | None = None,
        token: str | None = None,
        clock: Clock | None = None,
        stop_timeout: float = STOP_TIMEOUT,
        hooks: Hooks | None = None,
        metrics: SelfMetrics | None = None,
    ) -> None:
        self._reload_rules = reload
        self._is_ready = is_ready
        self._token = token.encode() if token else None
        app = web.Application(middlewares=[_json_errors, self._authenticate])
        app.router.add_post("/-/reload", self._reload)
        app.router.add_get("/-/healthy", self._healthy)
        app.router.add_get("/-/ready", self._ready)
        if metrics is not None:
            app.router.add_get("/metrics", _scraper(metrics))
        if backend is not None:
            V1(backend, self._reload, clock or SystemClock()).add_routes(app.router)
        if hooks is not None:
            hooks.add_routes(app.router)
        self._app = app
        self._stop_timeout = stop_timeout
        self._runner: web.AppRunner | None = None
        self._owned_path: OwnedPath | None = None
        self.address = ""
        #: ``host:port`` the TCP listener serves, its port as bound.
        self.tcp_address = ""

    @property
    def app(self) -> web.Application:
        """The aiohttp application, with every route of the API."""
        return self._app

    async def start(
        self, binding: listeners.Binding, tcp: socket.socket | None = None
    ) -> None:
        """Serve the API on the socket ``binding`` holds, and on ``tcp`` if given.

        :param tcp: a bound TCP socket (:func:`bind_tcp`); it is closed here
            if it cannot be served.
        :raises ValueError: if ``tcp`` is given without a token.
        """
        if tcp is not None and self._token is None:
            tcp.close()
            raise ValueError("the TCP API needs a token")
        sock, self._owned_path = binding.take()
        self.address = binding.address
        # Requests are logged by what they do, not one access line each.
        runner = web.AppRunner(
            self._app, access_log=None, shutdown_timeout=self._stop_timeout
        )
        await runner.setup()
        self._runner = runner
        await web.SockSite(runner, sock).start()
        log.info("listening", extra={"listener": "api", "address": self.address})
        if tcp is not None:
            host, port = tcp.getsockname()[:2]
            self.tcp_address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
            await web.SockSite(runner, tcp).start()
            log.info(
                "listening", extra={"listener": "api_tcp", "address": self.tcp_address}
            )

    async def stop(self) -> None:
        """Stop serving and remove the socket file; safe to call twice."""
        runner, self._runner = self._runner, None
        if runner is None:
            return

        await runner.cleanup()
        if self._owned_path is not None:
            self._owned_path.remove()
        log.info(
            "stopped listening", extra={"listener": "api", "address": self.address}
        )

    @web.middleware
    async def _authenticate(self, request: web.Request, handler) -> web.StreamResponse:
        # Inbound webhooks carry their service's signature instead of a token;
        # their handlers check it (see tocsin.daemon.hooks).
        if is_unix(request) or request.path.startswith(HOOKS_PREFIX + "/"):
            return await handler(request)

        # Anything but the Unix socket is TCP: a token or nothing.
        scheme, _, given = request.headers.get("Authorization", "").partition(" ")
        if (
            self._token is None
            or scheme.lower() != "bearer"
            or not hmac.compare_digest(given.strip().encode(), self._token)
        ):
            raise web.HTTPUnauthorized(
                reason="a valid bearer token is required",
                headers={"WWW-Authenticate": 'Bearer realm="tocsin"'},
            )
        return await handler(request)

    async def _reload(self, request: web.Request) -> web.Response:
        try:
            outcome = await self._reload_rules("api")
        except Exception:
            # A fault inside Tocsin, not in the file: the caller learns that
            # much, the log tells the rest.
            log.exception("config reload failed", extra={"reason": "api"})
            return _error("internal error; see tocsin's log", 500)

        return _json(outcome.as_dict(), 200 if outcome.is_reloaded else 400)

    async def _healthy(self, request: web.Request) -> web.Response:
        return _json({"status": "ok"})

    async def _ready(self, request: web.Request) -> web.Response:
        if self._is_ready():
            return _json({"status": "ready"})

        return _json({"status": "not ready"}, 503)


def _scraper(metrics: SelfMetrics) -> Callable[[web.Request], Awaitable[web.Response]]:
    """Return the handler of ``GET /metrics``."""

    async def scrape(request: web.Request) -> web.Response:
        body = await metrics.scrape()

        return web.Response(body=body, headers={"Content-Type": METRICS_CONTENT_TYPE})

    return scrape
