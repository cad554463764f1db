"""The ``tocsin`` command."""

from __future__ import annotations

import argparse
import logging
import sys

from tocsin import __version__, config, logs
from tocsin.errors import ConfigError
from tocsin.secrets import read_secrets

log = logging.getLogger("tocsin")

#: Exit status for a configuration that does not load.
EXIT_CONFIG = 2


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

    import uvloop

    from tocsin.daemon.app import Daemon

    return uvloop.run(Daemon(loaded, path, secrets=secrets).run())


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}" if number == 1 else f"{number} {noun}s"


def main(argv: list[str] | None = None) -> int:
    arguments = _parser().parse_args(argv)
    if arguments.command == "check-config":
        return _check_config(arguments.file, skip_secrets=arguments.skip_secrets)
    return _run(arguments.config)


if __name__ == "__main__":
    sys.exit(main())
