"""Stopping the daemon's background tasks."""

from __future__ import annotations

import asyncio
import contextlib


async def cancel(task: asyncio.Task) -> None:
    """Cancel ``task`` and wait until it has stopped."""
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
