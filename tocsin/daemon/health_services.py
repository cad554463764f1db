"""The API's view of each integration's health.

Part of :class:`~tocsin.daemon.services.Services`: the figures of the state
database (:class:`~tocsin.state.health.DeliveryHealth`) and the dispatcher's
attempts in flight, through the status rule of :mod:`tocsin.channels.health`.
"""

from __future__ import annotations

from collections.abc import Iterable

from tocsin.channels.health import IntegrationHealth, integration_health
from tocsin.errors import NotFoundError
from tocsin.state.health import DeliveryHealth


class HealthServices:
    """Integration health over a running daemon.

    Expects ``self._daemon`` (its ``clock`` and ``running`` config) and
    ``self._parts`` (its ``database`` and ``dispatcher``), as :class:`Services`
    has them.
    """

    async def integration_health(self, name: str) -> IntegrationHealth:
        if not any(c.name == name for c in self._daemon.running.channels):
            raise NotFoundError(f"no integration {name}")
        found = await self.health_of([name])

        return found[name]

    async def health_of(self, names: Iterable[str]) -> dict[str, IntegrationHealth]:
        """Return the health of each integration of ``names``."""
        settings = self._daemon.running.health
        now = self._daemon.clock.time()
        reader = DeliveryHealth(self._parts.database)
        figures = await reader.figures(names, now, float(settings.window))
        dispatcher = self._parts.dispatcher

        return {
            name: integration_health(
                found, settings, now, in_flight=dispatcher.in_flight(name)
            )
            for name, found in figures.items()
        }
