"""Inbound webhooks: what PagerDuty and Slack tell Tocsin about its alerts.

They are served on the API's listeners under ``/hooks/``, without the API's
bearer token: each request proves where it comes from with the signature its
service puts on it, checked against the secret of the channel it names
(``/hooks/pagerduty/NAME``, ``/hooks/slack/NAME``). A channel without that
secret takes no inbound requests (404), and a request whose signature does not
match changes nothing (401).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import aiohttp
from aiohttp import web

from tocsin.clock import Clock
from tocsin.daemon import hooks_pagerduty, hooks_slack
from tocsin.daemon.backend import Backend
from tocsin.redaction import Redactor
from tocsin.state.inbound import InboundLog

#: Where inbound webhooks are served.
PREFIX = "/hooks"


@dataclass
class Hooks:
    """What the inbound handlers act with.

    :param channel: returns the running channel of a name, or ``None``.
    :param session: for answering Slack through a message's ``response_url``.
    :param redactor: applied to the names a service sends before they are
        written anywhere, Slack's own answer included.
    """

    backend: Backend
    channel: Callable[[str], object | None]
    seen: InboundLog
    clock: Clock
    session: aiohttp.ClientSession
    redactor: Redactor = field(default_factory=Redactor)

    def add_routes(self, router: web.UrlDispatcher) -> None:
        """Add the ``/hooks`` paths to ``router``."""
        router.add_post(PREFIX + "/pagerduty/{channel}", self._pagerduty)
        router.add_post(PREFIX + "/slack/{channel}", self._slack)

    async def _pagerduty(self, request: web.Request) -> web.Response:
        return await hooks_pagerduty.receive(request, self)

    async def _slack(self, request: web.Request) -> web.Response:
        return await hooks_slack.receive(request, self)
