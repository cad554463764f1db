"""The configuration that runs: the file's, with what the API added.

Rules and integrations created through the API, and the grouping,
deduplication and digest set there, are kept in the state database (see
:mod:`tocsin.state.catalog`) and survive restarts. They are laid over the
file's configuration here, and the result is checked exactly like a file, so
an addition that would make the whole invalid is refused before it is stored.
"""

from __future__ import annotations

from collections.abc import Sequence

import msgspec

from tocsin import config as config_file
from tocsin.config import ChannelConfig, Config, RuleConfig
from tocsin.daemon.backend import DigestSettings, GroupingSettings
from tocsin.errors import ConfigError
from tocsin.schema import DedupConfig, RouteConfig

#: Name of the routes that carry digests set through the API.
DIGEST_ROUTE = "api-digest"


class Additions(msgspec.Struct, frozen=True, kw_only=True):
    """What the API added to the file's configuration."""

    rules: tuple[RuleConfig, ...] = ()
    channels: tuple[ChannelConfig, ...] = ()
    grouping: GroupingSettings | None = None
    dedup: DedupConfig | None = None
    digest: DigestSettings | None = None


def effective(file: Config, additions: Additions, source: str = "api") -> Config:
    """Return the file's configuration with ``additions`` laid over it.

    :raises ConfigError: if an added rule or integration takes a name the
        file already uses, or the whole fails a check.
    """
    _refuse_clashes("rule", [r.name for r in file.rules], additions.rules, source)
    _refuse_clashes(
        "integration", [c.name for c in file.channels], additions.channels, source
    )
    routing = file.routing
    if additions.grouping is not None:
        given = {
            name: value
            for name in additions.grouping.__struct_fields__
            if (value := getattr(additions.grouping, name)) is not msgspec.UNSET
        }
        routing = msgspec.structs.replace(routing, **given)
    if additions.digest is not None and additions.digest.interval > 0:
        digest = additions.digest
        route = RouteConfig(
            name=DIGEST_ROUTE,
            matchers=list(digest.matchers),
            channels=list(digest.channels) or msgspec.UNSET,
            group_by=[],
            digest=digest.interval,
        )
        # First among the root's routes: the alerts it selects are sent in the
        # digest instead of one by one.
        routing = msgspec.structs.replace(routing, routes=[route, *routing.routes])
    combined = msgspec.structs.replace(
        file,
        rules=[*file.rules, *additions.rules],
        channels=[*file.channels, *additions.channels],
        routing=routing,
        dedup=additions.dedup if additions.dedup is not None else file.dedup,
    )
    config_file.check(combined, source)

    return combined


def _refuse_clashes(
    kind: str, taken: Sequence[str], added: Sequence[object], source: str
) -> None:
    names = set(taken)
    for item in added:
        name = item.name
        if name in names:
            raise ConfigError(
                source,
                f"{kind} {name!r} is defined in the config file too; rename or"
                f" delete the one added through the API",
                "name",
            )
