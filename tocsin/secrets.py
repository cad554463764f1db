"""Reading secrets: API keys and webhook URLs from the config, the environment,
a file, or a systemd credential.

Every secret read here is registered with :func:`tocsin.logs.register_secret`,
so it is masked should any log line ever quote it. Errors name the config file
and the key that points at the secret, never the secret itself.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import NamedTuple

from tocsin.channel_checks import url_problem
from tocsin.channels.webhook_signing import SecretProblem, signing_key
from tocsin.config import ChannelConfig, Config, WebhookChannelConfig
from tocsin.errors import ConfigError
from tocsin.logs import register_secret


class Secrets(NamedTuple):
    """Every secret a configuration names, read once at start-up."""

    #: Per channel name, its secrets that are set, by name (``url``,
    #: ``routing_key``...; see ``ChannelConfig.secrets``).
    channels: dict[str, dict[str, str]]
    #: The Datadog API key; ``None`` turns the export off.
    datadog_api_key: str | None


def read_secrets(config: Config, source: str) -> Secrets:
    """Read every secret ``config`` names.

    :param source: the config file's path, named in errors.
    :raises ConfigError: if a channel's required secret is missing, any is
        unreadable, a URL is not http(s), or if ``export.datadog.api_key_file``
        is set but unreadable.
    """
    channels = {
        channel.name: channel_secrets(channel, source, f"channels[{index}]")
        for index, channel in enumerate(config.channels)
    }

    # One source only: the config refuses both keys set, and a file it names
    # is read without looking at $DD_API_KEY (see DatadogExportConfig.key_env).
    export = config.export.datadog
    key = read_secret(
        env=export.key_env,
        file=export.api_key_file,
        what="Datadog API key",
        source=source,
        key=(
            "export.datadog.api_key_file"
            if export.api_key_file
            else "export.datadog.api_key_env"
        ),
    )
    return Secrets(channels, key)


def read_secret(
    *,
    value: str = "",
    env: str = "",
    file: str = "",
    what: str = "secret",
    source: str = "config",
    key: str | None = None,
) -> str | None:
    """Return the secret from the first source that is set, or ``None``.

    ``file`` may be a relative name; it is then looked up in
    ``$CREDENTIALS_DIRECTORY`` (where systemd puts ``LoadCredential=`` files)
    before the working directory.

    :param source: the config file, named in errors.
    :param key: the config key that names ``file``, named in errors.
    :raises ConfigError: if ``file`` is set but cannot be read.
    """
    secret: str | None = None
    if value:
        secret = value
    elif env:
        secret = os.environ.get(env) or None
    elif file:
        path = Path(file)
        credentials = os.environ.get("CREDENTIALS_DIRECTORY")
        if (
            not path.is_absolute()
            and credentials
            and (Path(credentials) / path).exists()
        ):
            path = Path(credentials) / path
        try:
            secret = path.read_text()
        except OSError as error:
            where = (
                ""
                if path.is_absolute() or credentials
                else " (no $CREDENTIALS_DIRECTORY)"
            )
            raise ConfigError(
                source,
                f"cannot read the {what} from {str(path)!r}{where}: {error.strerror}",
                key,
            ) from None
    if secret is not None:
        # A value from an env file with CRLF line ends keeps its CR; no key or
        # URL holds white space at its ends, nor a control character within.
        secret = secret.strip() or None
    if secret is not None and any(ord(char) < 32 or char == "\x7f" for char in secret):
        raise ConfigError(
            source, f"the {what} holds a control character", key
        ) from None
    register_secret(secret)
    return secret


def channel_secrets(channel: ChannelConfig, source: str, where: str) -> dict[str, str]:
    """Read the secrets of one channel, by name; unset optional ones are left
    out.

    :param where: the channel's key path (``channels[0]``), named in errors.
    :raises ConfigError: as :func:`read_secrets`.
    """
    found = {}
    for name, what in channel.secrets.items():
        given = next(
            (k for k in (f"{name}_env", f"{name}_file") if getattr(channel, k)), name
        )
        what = f"{what} of channel {channel.name}"
        secret = read_secret(
            value=getattr(channel, name),
            env=getattr(channel, f"{name}_env"),
            file=getattr(channel, f"{name}_file"),
            what=what,
            source=source,
            key=f"{where}.{given}",
        )
        if secret is None:
            if name not in channel.required_secrets:
                continue
            env = getattr(channel, f"{name}_env")
            detail = (
                f"{env!r} is empty or not set"
                if env
                else "the file is empty"
                if given.endswith("_file")
                else f"set one of {name}, {name}_env and {name}_file"
            )
            raise ConfigError(source, f"no {what}: {detail}", f"{where}.{given}")
        problem = url_problem(secret) if name.endswith("url") else None
        if problem:
            # The URL itself is the secret: say what is wrong, never what it is.
            message = f"the {what} {problem}"
            raise ConfigError(source, message, f"{where}.{given}")
        length = channel.secret_lengths.get(name)
        if length is not None and len(secret) != length:
            # Refused at start-up rather than by the destination at every send.
            raise ConfigError(
                source,
                f"the {what} must be {length} characters long, not {len(secret)}",
                f"{where}.{given}",
            )
        if isinstance(channel, WebhookChannelConfig) and name == "secret":
            try:
                signing_key(secret)
            except SecretProblem as problem:
                raise ConfigError(
                    source, f"the {what} {problem}", f"{where}.{given}"
                ) from None
        found[name] = secret

    return found
