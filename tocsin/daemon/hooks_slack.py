"""Placeholder until inbound slack webhooks are written."""

from __future__ import annotations

from aiohttp import web


async def receive(request: web.Request, hooks) -> web.Response:
    raise web.HTTPNotFound()
