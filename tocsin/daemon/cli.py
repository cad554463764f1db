"""The ``tocsin`` command."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
import tomllib
from pathlib import Path

import aiohttp
import msgspec
import orjson

from tocsin import __version__, config, logs
from tocsin.channels.routing import RouteMatch, RoutingTree
from tocsin.daemon import cli_api
from tocsin.errors import ConfigError
from tocsin.redaction import Redactor
from tocsin.rules.conditions import format_duration
from tocsin.schema import ApiConfig, DaemonConfig
from tocsin.secrets import read_secrets

log = logging.getLogger("tocsin")

#: Exit status for a configuration that does not load.
EXIT_CONFIG = 2
#: Exit status of ``reload`` when the daemon refused the file or failed, and of
#: ``routes test`` when the labels reach no channel.
EXIT_REFUSED = 1
#: Exit status of ``reload`` when the daemon's API cannot be reached.
EXIT_UNREACHABLE = 2
#: Longest ``reload`` waits for the daemon's answer, in seconds.
RELOAD_TIMEOUT = 30.0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tocsin", description="Alerting daemon for ML models in production."
    )
    parser.add_argument("--version", action="version", version=f"tocsin {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("run", help="run the daemon")
    run.add_argument("--config", "-c", required=True, help="path to tocsin.toml")

    check = commands.add_parser("check-config", help="validate a config file and exit")
    check.add_argument("file", help="path to tocsin.toml")
    check.add_argument(
        "--skip-secrets",
        action="store_true",
        help="do not read the webhook URLs and the API key the file names "
        "(to check a file away from the machine it runs on)",
    )
    reload = commands.add_parser(
        "reload",
        help="make the running daemon apply its config file's rules",
        description="Ask the running daemon, over its API socket, to read its "
        "config file again and apply the rules.",
    )
    reload.add_argument(
        "--config",
        "-c",
        help="the daemon's tocsin.toml, where its API socket is found"
        " (or give --socket, or set $TOCSIN_API to the socket)",
    )
    reload.add_argument(
        "--socket", help="the API socket, instead of the one the config names"
    )
    cli_api.add_parsers(commands)
    routes = commands.add_parser("routes", help="inspect the routing tree")
    routes_commands = routes.add_subparsers(dest="routes_command", required=True)
    routes_test = routes_commands.add_parser(
        "test",
        help="show where an alert with these labels would be sent",
        description="Show which routes and channels an alert with the given "
        "labels reaches, with its group and timings. Nothing is sent and no "
        "secret is read. Exits 1 when the labels reach no channel.",
    )
    routes_test.add_argument("--config", "-c", required=True, help="tocsin.toml")
    routes_test.add_argument(
        "--rule",
        help="the alert's rule: adds its name, labels and severity, and its own "
        "channels replace those of the first route",
    )
    routes_test.add_argument("--json", action="store_true", help="print JSON")
    routes_test.add_argument("labels", nargs="*", metavar="label=value")
    return parser


def _check_config(path: str, *, skip_secrets: bool = False) -> int:
    try:
        loaded = config.load(path)
        if not skip_secrets:
            read_secrets(loaded, path)
    except ConfigError as error:
        print(f"tocsin: config error: {error}", file=sys.stderr)
        return EXIT_CONFIG
    for warning in loaded.warnings():
        print(
            f"tocsin: config warning: {path}: {warning.key}: {warning.message}",
            file=sys.stderr,
        )
    rules, channels = len(loaded.rules), len(loaded.channels)
    print(f"{path}: ok ({_count(rules, 'rule')}, {_count(channels, 'channel')})")
    return 0


def _run(path: str) -> int:
    logs.setup()
    try:
        loaded = config.load(path)
        # Secrets before anything else, so that a missing one is a config
        # error before any state exists, as check-config reports it.
        secrets = read_secrets(loaded, path)
    except ConfigError as error:
        log.error(
            "config error: %s",
            error,
            extra={"path": error.path, "detail": error.key or ""},
        )
        return EXIT_CONFIG
    logs.setup(loaded.daemon.log_level)
    logs.redact_personal_data(Redactor.from_config(loaded.privacy))

    import uvloop

    from tocsin.daemon.app import Daemon

    return uvloop.run(Daemon(loaded, path, secrets=secrets).run())


def _reload(path: str | None, socket_path: str | None) -> int:
    if socket_path is None and path is None:
        socket_path = os.environ.get("TOCSIN_API", "")
        if not socket_path or socket_path.startswith(("http://", "https://")):
            print(
                "tocsin: where is the daemon? give -c tocsin.toml, --socket,"
                " or set $TOCSIN_API to its API socket",
                file=sys.stderr,
            )
            return EXIT_UNREACHABLE
    if socket_path is None:
        try:
            socket_path = _api_socket(path)
        except ConfigError as error:
            # The daemon would refuse this file just the same.
            print(f"tocsin: config error: {error}", file=sys.stderr)
            return EXIT_REFUSED
        if socket_path is None:
            print(
                f"tocsin: {path}: api.enabled is false: the daemon serves no API;"
                " send it SIGHUP instead",
                file=sys.stderr,
            )
            return EXIT_UNREACHABLE
    try:
        status, answer = asyncio.run(_post_reload(socket_path))
    except (OSError, TimeoutError, aiohttp.ClientError) as error:
        # A refused or missing socket arrives wrapped, with the OS error inside.
        cause = getattr(error, "os_error", error)
        reason = getattr(cause, "strerror", None) or str(cause) or "timed out"
        print(
            f"tocsin: cannot reach the daemon at {socket_path}: {reason}",
            file=sys.stderr,
        )
        return EXIT_UNREACHABLE
    if status == 200 and answer.get("status") == "reloaded":
        fates = ("kept", "added", "changed", "removed")
        summary = ", ".join(_fate(answer, fate) for fate in fates)
        # The daemon reads the file it was started with, whatever --config
        # named: say which one now runs.
        print(f"{answer.get('config') or path or socket_path}: reloaded ({summary})")
        return 0
    error = answer.get("error") or f"unexpected answer (HTTP {status})"
    print(f"tocsin: reload refused: {error}", file=sys.stderr)
    return EXIT_REFUSED


def _api_socket(path: str) -> str | None:
    """Return where the daemon running ``path`` serves its API, ``None`` if off.

    Read from the TOML alone, not validated: the file may be the broken one
    whose error only the daemon's answer tells.

    :raises ConfigError: if the file cannot be read or is not TOML.
    """
    try:
        document = tomllib.loads(Path(path).read_text())
    except OSError as error:
        raise ConfigError(path, f"cannot read the file: {error.strerror}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
        raise ConfigError(path, f"not valid TOML: {error}") from None
    api = _table(document, "api")
    if api.get("enabled", ApiConfig().enabled) is False:
        return None
    socket_path = api.get("socket")
    if isinstance(socket_path, str) and socket_path:
        return socket_path
    state_dir = _table(document, "daemon").get("state_dir")
    if not isinstance(state_dir, str):
        state_dir = DaemonConfig().state_dir

    return str(Path(state_dir) / "api.sock")


def _table(document: dict, name: str) -> dict:
    found = document.get(name)
    return found if isinstance(found, dict) else {}


async def _post_reload(socket_path: str) -> tuple[int, dict]:
    timeout = aiohttp.ClientTimeout(total=RELOAD_TIMEOUT)
    connector = aiohttp.UnixConnector(path=socket_path)
    session = aiohttp.ClientSession(connector=connector, timeout=timeout)
    # The host is a placeholder: the socket decides where the request goes.
    async with session, session.post("http://tocsin/-/reload") as response:
        body = await response.read()
    try:
        answer = orjson.loads(body)
    except orjson.JSONDecodeError:
        answer = {}

    return response.status, answer if isinstance(answer, dict) else {}


def _fate(answer: dict, fate: str) -> str:
    names = answer.get(fate) or []
    listed = f": {', '.join(map(str, names))}" if names and fate != "kept" else ""

    return f"{len(names)} {fate}{listed}"


def _routes_test(
    path: str, pairs: list[str], rule_name: str | None, as_json: bool
) -> int:
    """Print where an alert with the labels ``pairs`` would be sent."""
    try:
        loaded = config.load(path)
    except ConfigError as error:
        print(f"tocsin: config error: {error}", file=sys.stderr)
        return EXIT_CONFIG
    try:
        labels, rule_channels = _alert_labels(loaded, pairs, rule_name)
    except ValueError as error:
        print(f"tocsin: {error}", file=sys.stderr)
        return EXIT_CONFIG
    tree = RoutingTree(loaded.routing)
    matches = tree.explain(labels, rule_channels=rule_channels)
    channels = list(dict.fromkeys(c for m in matches for c in m.route.channels))

    if as_json:
        routes = [
            {
                **msgspec.structs.asdict(match.route),
                "path": list(match.path),
                "matchers": list(match.matchers),
                "group_labels": match.group_labels,
            }
            for match in matches
        ]
        answer = {"labels": labels, "routes": routes, "channels": channels}
        print(orjson.dumps(answer, option=orjson.OPT_INDENT_2).decode())
    else:
        print(f"labels: {_labels(labels)}")
        for match in matches:
            print(_describe_match(match))
    if not channels:
        print("tocsin: these labels reach no channel", file=sys.stderr)
        return EXIT_REFUSED

    return 0


def _alert_labels(
    loaded: config.Config, pairs: list[str], rule_name: str | None
) -> tuple[dict[str, str], list[str]]:
    """Return the routing labels of ``routes test`` and the rule's channels.

    :raises ValueError: if a pair is not ``label=value`` or the rule is unknown.
    """
    labels: dict[str, str] = {}
    for pair in pairs:
        name, equals, value = pair.partition("=")
        if not equals or not name:
            raise ValueError(f"expected label=value, got {pair!r}")
        labels[name] = value
    if rule_name is None:
        return labels, []
    rule = next((r for r in loaded.rules if r.name == rule_name), None)
    if rule is None:
        raise ValueError(f"no rule named {rule_name!r} in the config")
    # As the alert would carry them: the rule's labels, its name and its
    # lowest level, unless the command line says otherwise.
    severity = rule.levels[0][0]
    own = {**rule.labels, "rule": rule.name, "severity": severity}

    return {**own, **labels}, rule.channels


def _describe_match(match: RouteMatch) -> str:
    """Write one reached route for a person: several indented lines."""
    route = match.route
    timings = ", ".join(
        f"{key} {format_duration(getattr(route, key))}"
        for key in ("group_wait", "group_interval", "repeat_interval")
    )
    lines = [
        f"route {route.id} (path: {' > '.join(match.path)})",
        f"  channels: {', '.join(route.channels) or '(none)'}",
        f"  group: {{{_labels(match.group_labels)}}}"
        f" (group_by: {', '.join(route.group_by) or '(none)'})",
        f"  timings: {timings}",
    ]
    if route.digest:
        lines.append(f"  digest: every {format_duration(route.digest)}")
    for key in ("mute_windows", "active_windows"):
        windows = getattr(route, key)
        if windows:
            lines.append(f"  {key.replace('_', ' ')}: {', '.join(windows)}")
    if route.escalation:
        lines.append(f"  escalation: {route.escalation}")

    return "\n".join(lines)


def _labels(labels: dict[str, str]) -> str:
    return ", ".join(
        f"{name}={orjson.dumps(value).decode()}"
        for name, value in sorted(labels.items())
    )


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}" if number == 1 else f"{number} {noun}s"


def main(argv: list[str] | None = None) -> int:
    arguments = _parser().parse_args(argv)
    if arguments.command == "check-config":
        return _check_config(arguments.file, skip_secrets=arguments.skip_secrets)
    if arguments.command == "reload":
        return _reload(arguments.config, arguments.socket)
    if arguments.command in cli_api.COMMANDS:
        return cli_api.main(arguments, _api_socket)
    if arguments.command == "routes":
        return _routes_test(
            arguments.config, arguments.labels, arguments.rule, arguments.json
        )
    return _run(arguments.config)


if __name__ == "__main__":
    sys.exit(main())
