"""Every exception Tocsin raises on purpose, in one flat module."""

from __future__ import annotations


class TocsinError(Exception):
    """Root of every error Tocsin raises on purpose."""


class ConfigError(TocsinError):
    """Raised when a configuration file cannot be read, parsed or validated.

    The message is one line that names the file and, where there is one, the key
    path inside it (``rules[1].window``).
    """

    def __init__(self, path: str, message: str, key: str | None = None) -> None:
        self.path = path
        self.key = key
        self.detail = message
        where = f"{path}: {key}: " if key else f"{path}: "
        super().__init__(where + message)


class StateError(TocsinError):
    """Raised when the state database cannot be opened, migrated or written."""


class ListenerError(TocsinError):
    """Raised when a listener's socket cannot be bound at start-up.

    :param listener: ``udp``, ``unix_dgram`` or ``unix_stream``.
    :param address: the address or path the config gives it.
    :param reason: why, as the system says it (``Address already in use``).
    """

    def __init__(self, listener: str, address: str, reason: str) -> None:
        self.listener = listener
        self.address = address
        self.reason = reason
        super().__init__(f"cannot bind the {listener} listener to {address}: {reason}")


class DeliveryError(TocsinError):
    """Raised by a channel when one delivery attempt fails.

    :param reason: a short, fixed word (``timeout``, ``rate_limited``, ``auth``,
        ``client_error``, ``server_error``, ``transport``, or ``internal`` for a
        fault inside Tocsin) that also labels Tocsin's own metrics.
    :param retryable: whether the same request may succeed later.
    :param retry_after: seconds the destination asked us to wait, if it did.
    """

    def __init__(
        self,
        reason: str,
        message: str,
        *,
        retryable: bool,
        status: int | None = None,
        retry_after: float | None = None,
    ) -> None:
        self.reason = reason
        self.retryable = retryable
        self.status = status
        self.retry_after = retry_after
        super().__init__(message)


class LifecycleError(TocsinError):
    """Raised when an alert is asked to move to a state its lifecycle forbids.

    The message names the alert, its state and the moves it allows: ``alert 12
    is triggered: it can move to acknowledged or escalated, not investigating``.
    """


class UnknownAlertError(TocsinError):
    """Raised when no alert has the id or uid a caller gave."""


class UnknownSilenceError(TocsinError):
    """Raised when no silence has the id a caller gave."""


class NotFoundError(TocsinError):
    """Raised when a rule, an integration or a setting asked for does not exist."""


class ConflictError(TocsinError):
    """Raised when a change contradicts what exists: a name already taken, or a
    rule of the config file deleted through the API."""


class InvalidValueError(TocsinError):
    """Raised when a request is well formed but one of its values cannot be used.

    A bad matcher, an unknown state, a channel type Tocsin cannot deliver to.

    :param key: the path of the value at fault in the request (``matchers[1]``),
        if there is one.
    """

    def __init__(self, message: str, key: str | None = None) -> None:
        self.key = key
        self.detail = message
        super().__init__(f"{key}: {message}" if key else message)
