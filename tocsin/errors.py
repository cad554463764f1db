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


class ActivationError(TocsinError):
    """Raised when systemd passes a socket at start-up that Tocsin cannot use.

    :param name: the socket's ``FileDescriptorName=``.
    :param fd: the file descriptor it was passed as.
    :param reason: what is wrong with it.
    """

    def __init__(self, name: str, fd: int, reason: str) -> None:
        self.name = name
        self.fd = fd
        self.reason = reason
        super().__init__(f"systemd passed the socket {name!r} (fd {fd}): {reason}")


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
    """Raised when an alert is asked to move to a state it cannot reach from
    the one it is in (acknowledging a resolved alert, closing an open one).

    :param alert_id: the alert's id.
    :param state: the state the alert is in.
    :param to_state: the state it was asked to move to.
    :param allowed: the states it could move to, in a fixed order.
    """

    def __init__(
        self, alert_id: int, state: str, to_state: str, allowed: tuple[str, ...]
    ) -> None:
        self.alert_id = alert_id
        self.state = state
        self.to_state = to_state
        self.allowed = allowed
        if to_state == state:
            message = f"alert {alert_id} is already {state}"
        elif allowed:
            message = (
                f"alert {alert_id} is {state}: it can move to "
                f"{_either(allowed)}, not {to_state}"
            )
        else:
            message = f"alert {alert_id} is {state}: it cannot move to {to_state}"
        super().__init__(message)


class UnknownAlertError(TocsinError):
    """Raised when no alert has the id or uid asked for.

    :param ref: the id or uid as given.
    """

    def __init__(self, ref: int | str) -> None:
        self.ref = ref
        super().__init__(f"no alert {ref}")


class UnknownSilenceError(TocsinError):
    """Raised when no silence has the id asked for.

    :param silence_id: the id as given.
    """

    def __init__(self, silence_id: str) -> None:
        self.silence_id = silence_id
        super().__init__(f"no silence {silence_id}")


class SilenceExpiredError(TocsinError):
    """Raised when a silence that has already ended is asked to expire.

    :param silence_id: the silence's id.
    """

    def __init__(self, silence_id: str) -> None:
        self.silence_id = silence_id
        super().__init__(f"silence {silence_id} has already expired")


def _either(states: tuple[str, ...]) -> str:
    """Join ``("a", "b", "c")`` as ``a, b or c``."""
    if len(states) == 1:
        return states[0]
    return f"{', '.join(states[:-1])} or {states[-1]}"


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
