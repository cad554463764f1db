"""The control API: reload and health checks over a Unix stream socket.

The paths are Alertmanager's, so tooling written for it works unchanged:

- ``POST /-/reload`` reads the config file again and applies its rules; 200
  with what became of each rule, or 400 with the error when nothing changed;
- ``GET /-/healthy`` answers 200 while the process runs;
- ``GET /-/ready`` answers 200 once Tocsin has started, 503 once it stops.

Every answer is a JSON object with a ``status``. The socket file has mode
0660: only the service's user and group may reload it.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Awaitable, Callable, Iterable

import orjson
from aiohttp import web

from tocsin.daemon import listeners
from tocsin.daemon.reload import ReloadOutcome
from tocsin.daemon.sockets import OwnedPath

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


def _json(body: dict[str, object], status: int = 200) -> web.Response:
    return web.Response(
        body=orjson.dumps(body), status=status, content_type="application/json"
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
        response = _json({"status": "error", "error": error.reason}, error.status)
        if error.status == 405:
            response.headers["Allow"] = error.headers.get("Allow", "")
        return response


class ControlApi:
    """The control API of one daemon.

    :param reload: runs a reload and returns its outcome (``Daemon.reload``).
    :param is_ready: tells whether the daemon has started and is not stopping.
    :param stop_timeout: most seconds :meth:`stop` waits for a request in
        progress.
    """

    def __init__(
        self,
        reload: Callable[[str], Awaitable[ReloadOutcome]],
        is_ready: Callable[[], bool],
        *,
        stop_timeout: float = STOP_TIMEOUT,
    ) -> None:
        self._reload_rules = reload
        self._is_ready = is_ready
        app = web.Application(middlewares=[_json_errors])
        app.router.add_post("/-/reload", self._reload)
        app.router.add_get("/-/healthy", self._healthy)
        app.router.add_get("/-/ready", self._ready)
        self._app = app
        self._stop_timeout = stop_timeout
        self._runner: web.AppRunner | None = None
        self._owned_path: OwnedPath | None = None
        self.address = ""

    async def start(self, binding: listeners.Binding) -> None:
        """Serve the API on the socket ``binding`` holds."""
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

    async def _reload(self, request: web.Request) -> web.Response:
        try:
            outcome = await self._reload_rules("api")
        except Exception:
            # A fault inside Tocsin, not in the file: the caller learns that
            # much, the log tells the rest.
            log.exception("config reload failed", extra={"reason": "api"})
            body = {"status": "error", "error": "internal error; see tocsin's log"}
            return _json(body, 500)

        return _json(outcome.as_dict(), 200 if outcome.is_reloaded else 400)

    async def _healthy(self, request: web.Request) -> web.Response:
        return _json({"status": "ok"})

    async def _ready(self, request: web.Request) -> web.Response:
        if self._is_ready():
            return _json({"status": "ready"})

        return _json({"status": "not ready"}, 503)
