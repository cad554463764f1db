"""The email channel: one mail per notification through an SMTP server.

Each attempt opens its own connection (STARTTLS on 587, implicit TLS on 465,
or plain on 25), logs in when a username is set, sends, and says goodbye. The
message is the same on every attempt (see :mod:`tocsin.channels.mail_message`).

What a failure means for a retry follows SMTP's own split: a refused or
timed-out connection and any 4xx reply ("try again later") are retryable; a
5xx reply (a refused recipient, failed authentication) is final, and so is
a server certificate that cannot be trusted. Errors give the SMTP code and
the enhanced status code, never the server's text (which may quote addresses)
and never the password.
"""

from __future__ import annotations

import logging
import re
import ssl
from collections.abc import Mapping

import aiosmtplib

from tocsin.channels.base import ChannelContext, DeliverySettings
from tocsin.channels.mail_message import build_message
from tocsin.errors import DeliveryError
from tocsin.schema import EmailChannelConfig
from tocsin.state.models import Notification

log = logging.getLogger(__name__)

#: The usual port of each kind of connection security.
DEFAULT_PORTS = {"starttls": 587, "tls": 465, "none": 25}

#: Replies that say the credentials were refused.
_AUTH_CODES = frozenset((530, 534, 535, 538))
_ENHANCED_CODE = re.compile(r"^\s*([245]\.\d{1,3}\.\d{1,3})\b")


class EmailChannel(DeliverySettings):
    """Mail notifications to a fixed list of addresses.

    :param secrets: ``password``, when the server wants a login.
    """

    def __init__(
        self,
        config: EmailChannelConfig,
        secrets: Mapping[str, str],
        context: ChannelContext,
    ) -> None:
        super().__init__(config)
        self._host = config.host
        self._port = config.port or DEFAULT_PORTS[config.security]
        self._security = config.security
        self._username = config.username or None
        self._password = secrets.get("password")
        self._ca_file = config.ca_file
        self._sender = config.sender
        self._to = list(config.to)
        self._context = context

    async def send(self, notification: Notification) -> None:
        """Mail one notification.

        :raises DeliveryError: if the server could not be reached or did not
            take the message for every recipient.
        """
        message = build_message(
            notification,
            sender=self._sender,
            to=self._to,
            alert_url=self._context.alert_url,
        )
        try:
            refused, _ = await aiosmtplib.send(
                message,
                hostname=self._host,
                port=self._port,
                username=self._username,
                password=self._password if self._username else None,
                local_hostname=self._context.hostname,
                use_tls=self._security == "tls",
                start_tls=self._security == "starttls",
                tls_context=self._tls_context(),
                timeout=self.timeout,
            )
        except aiosmtplib.SMTPException as error:
            raise self._failure(error) from None
        except ssl.SSLError as error:
            raise self._tls_failure(error) from None
        except OSError as error:
            raise DeliveryError(
                "transport",
                f"channel {self.name}: cannot talk to the SMTP server"
                f" ({type(error).__name__})",
                retryable=True,
            ) from None
        if refused:
            # Some recipients have the mail: sending again would give them a
            # second copy, so the others are reported and not retried.
            codes = sorted({code for code, _ in refused.values()})
            log.warning(
                "some recipients refused the mail",
                extra={
                    "channel": self.name,
                    "notification": notification.key,
                    "refused": len(refused),
                    "codes": codes,
                },
            )

    def _tls_context(self) -> ssl.SSLContext | None:
        """Return the context that verifies the server, or ``None`` without TLS.

        Built for each attempt, so a CA file replaced on disk is read again.

        :raises DeliveryError: if the CA file cannot be read.
        """
        if self._security == "none":
            return None
        try:
            return ssl.create_default_context(cafile=self._ca_file or None)
        except (OSError, ssl.SSLError) as error:
            raise DeliveryError(
                "client_error",
                f"channel {self.name}: cannot load ca_file"
                f" ({getattr(error, 'strerror', None) or type(error).__name__})",
                retryable=False,
            ) from None

    def _failure(self, error: aiosmtplib.SMTPException) -> DeliveryError:
        """Say what an SMTP failure means for a retry."""
        tls = _ssl_cause(error)
        if tls is not None:
            return self._tls_failure(tls)
        where = f"channel {self.name}"
        if isinstance(error, aiosmtplib.SMTPTimeoutError):
            return DeliveryError(
                "timeout",
                f"{where}: the SMTP server did not answer within {self.timeout:g}s",
                retryable=True,
            )
        if isinstance(error, aiosmtplib.SMTPRecipientsRefused):
            codes = [refusal.code for refusal in error.recipients]
            # A recipient refused with 4xx may take the mail later; as none
            # took it, a retry sends nobody a second copy.
            code = min(codes, key=lambda c: (c >= 500, c))
            return self._reply_failure(code, "", f"all {len(codes)} recipients refused")
        if isinstance(error, aiosmtplib.SMTPResponseException):
            return self._reply_failure(error.code, error.message, _stage(error))
        if isinstance(error, aiosmtplib.SMTPConnectError | ConnectionError):
            return DeliveryError(
                "transport",
                f"{where}: cannot talk to the SMTP server ({type(error).__name__})",
                retryable=True,
            )
        if type(error) in (aiosmtplib.SMTPException, aiosmtplib.SMTPNotSupported):
            # The server lacks STARTTLS, AUTH or a usable login method: it
            # will lack them next time too. These messages are aiosmtplib's
            # own fixed sentences, which name no host, address or secret.
            return DeliveryError(
                "client_error",
                f"{where}: the SMTP server cannot do what the channel needs:"
                f" {error.message}",
                retryable=False,
            )

        return DeliveryError(
            "transport",
            f"{where}: SMTP failed ({type(error).__name__})",
            retryable=True,
        )

    def _reply_failure(self, code: int, text: str, stage: str) -> DeliveryError:
        enhanced = _ENHANCED_CODE.match(text or "")
        detail = f"SMTP {code}" + (f" {enhanced[1]}" if enhanced else "")
        message = f"channel {self.name}: {stage}: {detail}"
        if 400 <= code < 500:
            return DeliveryError("server_error", message, retryable=True, status=code)
        reason = "auth" if code in _AUTH_CODES else "client_error"

        return DeliveryError(reason, message, retryable=False, status=code)

    def _tls_failure(self, error: ssl.SSLError) -> DeliveryError:
        # An untrusted certificate stays untrusted until someone changes the
        # server or ca_file: retrying would only delay the error.
        if isinstance(error, ssl.SSLCertVerificationError):
            return DeliveryError(
                "transport",
                f"channel {self.name}: the SMTP server's certificate is not"
                f" trusted ({error.verify_message}); see ca_file",
                retryable=False,
            )
        return DeliveryError(
            "transport",
            f"channel {self.name}: TLS with the SMTP server failed"
            f" ({error.reason or type(error).__name__})",
            retryable=True,
        )


def _ssl_cause(error: BaseException) -> ssl.SSLError | None:
    """Return the TLS error behind an SMTP error, if there is one."""
    seen = 0
    current: BaseException | None = error
    while current is not None and seen < 10:
        if isinstance(current, ssl.SSLError):
            return current
        current = current.__cause__ or current.__context__
        seen += 1
    return None


def _stage(error: aiosmtplib.SMTPResponseException) -> str:
    """Name the step of the conversation a refusal came at."""
    if isinstance(error, aiosmtplib.SMTPAuthenticationError):
        return "login refused"
    if isinstance(error, aiosmtplib.SMTPSenderRefused):
        return "sender refused"
    if isinstance(error, aiosmtplib.SMTPRecipientRefused):
        return "recipient refused"
    if isinstance(error, aiosmtplib.SMTPDataError):
        return "message refused"
    if isinstance(error, aiosmtplib.SMTPConnectResponseError):
        return "connection refused by the server"
    if isinstance(error, aiosmtplib.SMTPHeloError):
        return "greeting refused"
    return "refused"
