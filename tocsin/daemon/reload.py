"""Live reload: read the config file again, validate it fully, then swap rules.

A reload applies what can change in place: the rules, the ``[alerts]``
section and ``daemon.max_series``. It refuses a file whose channels differ
from the running ones, since channels hold secrets and connections; any other
changed section is left as it runs, with a warning that only a restart
applies it. A file that does not validate changes nothing.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable
from typing import NamedTuple

import msgspec

from tocsin import config as config_file
from tocsin.clock import Clock
from tocsin.config import Config
from tocsin.errors import ConfigError

log = logging.getLogger(__name__)

#: Sections a reload applies; ``channels`` is compared on its own.
_RELOADED = (
    "rules",
    "alerts",
    "channels",
    "routing",
    "mute_windows",
    "inhibit",
    "escalations",
    "dedup",
    "health",
)


class ReloadOutcome(NamedTuple):
    """What one reload did: the rules by fate, or why nothing changed."""

    #: ``<file>: <key>: <message>`` when the reload was refused, else ``None``.
    error: str | None = None
    kept: tuple[str, ...] = ()
    added: tuple[str, ...] = ()
    changed: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    #: The file the daemon read: the one it was started with.
    config: str = ""

    @property
    def is_reloaded(self) -> bool:
        """Tell whether the new rules run now."""
        return self.error is None

    def as_dict(self) -> dict[str, object]:
        """Return the outcome as the API answers it."""
        if self.error is not None:
            return {"status": "error", "error": self.error}
        return {
            "status": "reloaded",
            "config": self.config,
            "kept": list(self.kept),
            "added": list(self.added),
            "changed": list(self.changed),
            "removed": list(self.removed),
        }


def restart_sections(running: Config, new: Config) -> list[str]:
    """Return the changed parts of ``new`` that only a restart applies.

    ``daemon.max_series`` is applied in place, so it alone does not count as a
    change of ``daemon``.
    """
    changed = []
    for field in running.__struct_fields__:
        if field in _RELOADED:
            continue
        before, after = getattr(running, field), getattr(new, field)
        if field == "daemon":
            after = msgspec.structs.replace(after, max_series=before.max_series)
        if before != after:
            changed.append(field)

    return changed


def _changed_channels(running: Config, new: Config) -> list[str]:
    """Name the channels ``new`` adds, removes or changes, sorted.

    By name: the order channels are listed in changes nothing that runs.
    """
    before = {channel.name: channel for channel in running.channels}
    after = {channel.name: channel for channel in new.channels}
    names = before.keys() | after.keys()
    return sorted(name for name in names if before.get(name) != after.get(name))


class Reloader:
    """Applies the config file to the running rules, one reload at a time.

    :param config_path: the file to read again.
    :param config: the running configuration; :attr:`config` follows what
        each reload applies.
    :param engine: the rule engine, with ``reload(rules, now, *, max_series)``.
    :param pipeline: the alert pipeline, with ``set_rules`` and ``submit``.
    :param clear_caches: called after the rules changed, each forgetting the
        series handles an ingest parser cached: a cached handle still feeds
        the rule series it was resolved to.
    :param compose: turns the file's config into the one that runs (what the
        API added, laid over it); raises :class:`ConfigError` if it cannot.
    :param on_applied: told of the config that runs after each reload.
    """

    def __init__(
        self,
        config_path: str,
        config: Config,
        *,
        engine,
        pipeline,
        clock: Clock,
        clear_caches: Iterable[Callable[[], None]] = (),
        compose: Callable[[Config], Config] | None = None,
        on_applied: Callable[[Config], None] | None = None,
    ) -> None:
        self.compose = compose or (lambda config: config)
        self.on_applied = on_applied
        self.config_path = config_path
        self.config = config
        self.engine = engine
        self.pipeline = pipeline
        self.clock = clock
        self.clear_caches = list(clear_caches)
        #: Reloads applied, and reloads refused (the config ran on unchanged).
        self.applied = 0
        self.refused = 0
        self._lock = asyncio.Lock()

    async def reload(self, source: str) -> ReloadOutcome:
        """Read the file, validate it, and apply it if it may be applied.

        Reloads never overlap: a second one waits for the first, then reads
        the file as it is then.

        :param source: what asked for it (``SIGHUP``, ``api``), for the logs.
        """
        async with self._lock:
            outcome = await self._reload(source)
        if outcome.is_reloaded:
            self.applied += 1
        else:
            self.refused += 1

        return outcome

    async def _reload(self, source: str) -> ReloadOutcome:
        path = self.config_path
        log.info("reloading config", extra={"reason": source, "config": path})
        try:
            # In a thread: validation resolves the UDP listener's host name,
            # which may wait on DNS, and the loop must go on ingesting.
            new = await asyncio.to_thread(config_file.load, path)
            changed = _changed_channels(self.config, new)
            if changed:
                raise ConfigError(
                    path,
                    f"channels changed ({', '.join(changed)});"
                    " restart tocsin to apply them",
                    "channels",
                )
            running_config = self.compose(new)
        except ConfigError as error:
            # An error, not a warning: the file on disk is not what runs.
            log.error(
                "config reload failed",
                extra={
                    "reason": source,
                    "path": error.path,
                    "detail": error.key or "",
                    "error": str(error),
                },
            )
            return ReloadOutcome(error=str(error))

        for warning in new.warnings():
            log.warning(
                "config warning: %s: %s",
                warning.key,
                warning.message,
                extra={"path": path},
            )
        running = self.config
        for section in restart_sections(running, new):
            log.warning(
                "%s changed; restart tocsin to apply it",
                section,
                extra={"path": path, "detail": section},
            )

        result = self._apply(running_config)
        daemon = msgspec.structs.replace(
            running.daemon, max_series=new.daemon.max_series
        )
        self.config = msgspec.structs.replace(
            running,
            daemon=daemon,
            **{section: getattr(new, section) for section in _RELOADED[:2]},
            **{section: getattr(new, section) for section in _RELOADED[3:]},
        )

        outcome = ReloadOutcome(
            kept=tuple(result.kept),
            added=tuple(result.added),
            changed=tuple(result.changed),
            removed=tuple(result.removed),
            config=path,
        )
        log.info(
            "config reloaded",
            extra={
                "reason": source,
                "rules": len(running_config.rules),
                "detail": {
                    **{
                        name: {"count": len(names), "names": list(names)}
                        for name, names in outcome._asdict().items()
                        if name not in ("error", "config")
                    },
                    "resolving": len(result.decisions),
                },
            },
        )
        return outcome

    async def apply_composed(self, source: str) -> None:
        """Apply the running file's config again, composed anew: what the API
        added or removed runs from now on.

        :raises ConfigError: if the composed config does not check; nothing
            changes then.
        """
        async with self._lock:
            running_config = self.compose(self.config)
            result = self._apply(running_config)
            log.info(
                "runtime additions applied",
                extra={
                    "reason": source,
                    "rules": len(running_config.rules),
                    "detail": {
                        "added": list(result.added),
                        "changed": list(result.changed),
                        "removed": list(result.removed),
                    },
                },
            )

    def _apply(self, running_config: Config):
        # The engine first: it decides what becomes of the alerts of changed
        # and removed rules. The pipeline then writes those decisions with the
        # new rules, and the parsers resolve every series again.
        result = self.engine.reload(
            running_config.rules,
            self.clock.time(),
            max_series=running_config.daemon.max_series,
        )
        self.pipeline.set_rules(
            {rule.name: rule for rule in running_config.rules},
            internal_channels=running_config.alerts.internal_channels,
        )
        if hasattr(self.pipeline, "reopen_window"):
            self.pipeline.reopen_window = float(running_config.alerts.reopen_window)
        if result.decisions:
            self.pipeline.submit(result.decisions)
        for clear in self.clear_caches:
            clear()
        if self.on_applied is not None:
            self.on_applied(running_config)

        return result
