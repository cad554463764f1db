"""Reading secrets: API keys and webhook URLs from the config, the environment,
a file, or a systemd credential.

Every secret read here is registered with :func:`tocsin.logs.register_secret`,
so it is masked should any log line ever quote it.
"""

from __future__ import annotations

import os
from pathlib import Path

from tocsin.errors import ConfigError
from tocsin.logs import register_secret


def read_secret(
    *, value: str = "", env: str = "", file: str = "", what: str = "secret"
) -> str | None:
    """Return the secret from the first source that is set, or ``None``.

    ``file`` may be a relative name; it is then looked up in
    ``$CREDENTIALS_DIRECTORY`` (where systemd puts ``LoadCredential=`` files)
    before the working directory.

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
            secret = path.read_text().strip() or None
        except OSError as error:
            raise ConfigError(
                str(path), f"cannot read the {what}: {error.strerror}"
            ) from None
    register_secret(secret)
    return secret
