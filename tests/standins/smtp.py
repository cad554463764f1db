"""A local SMTP server for tests: TLS as configured, a checked login, scripted
refusals and a slow mode; every accepted message parsed for assertions.

Usage::

    certificates = Certificates(tmp_path)
    async with SmtpStandin(certificates, security="starttls", password="pw") as smtp:
        smtp.refuse("RCPT", "550 5.1.1 No such user")
        ...  # send to smtp.host, smtp.port, trusting certificates.ca_file
        [mail] = await smtp.wait_for(1)

Like a real submission server it offers AUTH only once the connection is
encrypted (the whole connection with implicit TLS, after STARTTLS
otherwise), refuses MAIL before a login when it has a password, and refuses
a wrong password with ``535 5.7.8``. Refusals are used in order, one per
command of their kind. ``hold()`` keeps the reply to the end of the message
back until ``release()``, so the client times out.
"""

from __future__ import annotations

import asyncio
import email.policy
import ssl
import warnings
from collections import defaultdict, deque
from dataclasses import dataclass
from email.message import EmailMessage
from email.parser import BytesParser
from pathlib import Path
from typing import Literal

import trustme
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

Security = Literal["starttls", "tls", "none"]
#: The commands whose reply can be scripted.
Stage = Literal["MAIL", "RCPT", "DATA"]


class Certificates:
    """A private CA and a server certificate for 127.0.0.1 and localhost.

    :param directory: where ``ca.pem`` is written, for the client's ca_file.
    """

    def __init__(self, directory: Path) -> None:
        self.ca = trustme.CA()
        self.server = self.ca.issue_cert("127.0.0.1", "localhost")
        self.ca_file = directory / "smtp-ca.pem"
        self.ca.cert_pem.write_to_path(str(self.ca_file))

    def server_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.server.configure_cert(context)
        return context


@dataclass(frozen=True)
class Mail:
    """One message the server accepted."""

    mail_from: str
    rcpt_tos: list[str]
    #: The message as sent, byte for byte.
    raw: bytes
    #: The message parsed with the standard library's default policy.
    message: EmailMessage
    #: The user name it logged in with, or ``None``.
    login: str | None
    #: The AUTH mechanism it used (``PLAIN``, ``LOGIN``), or ``None``.
    mechanism: str | None
    #: Whether the connection was encrypted.
    tls: bool


class SmtpStandin:
    """An SMTP server on 127.0.0.1 and a free port, on the test's own loop.

    :param certificates: required for ``starttls`` and ``tls``.
    :param username: the one user who may log in.
    :param password: set to require a login before MAIL.
    :param mechanisms: the AUTH mechanisms offered.
    """

    def __init__(
        self,
        certificates: Certificates | None = None,
        *,
        security: Security = "starttls",
        username: str = "tocsin",
        password: str | None = None,
        mechanisms: tuple[str, ...] = ("LOGIN", "PLAIN"),
    ) -> None:
        if security != "none" and certificates is None:
            raise ValueError(f"security {security!r} needs certificates")
        self.security = security
        self.username = username
        self.password = password
        self.host = "127.0.0.1"
        self.port = 0
        self.mails: list[Mail] = []
        #: Every login tried: (user name, mechanism, whether it succeeded).
        self.logins: list[tuple[str, str, bool]] = []
        #: Connections opened, refused or not.
        self.connections = 0
        self._certificates = certificates
        self._excluded = [m for m in ("LOGIN", "PLAIN") if m not in mechanisms]
        self._refusals: dict[str, deque[str]] = defaultdict(deque)
        self._held = False
        self._released = asyncio.Event()
        self._arrived = asyncio.Event()
        self._server: asyncio.Server | None = None
        #: Who logged in on each session, by the session's id.
        self._sessions: dict[int, tuple[str, str]] = {}

    async def start(self) -> SmtpStandin:
        loop = asyncio.get_running_loop()
        implicit = (
            self._certificates.server_context() if self.security == "tls" else None
        )
        self._server = await loop.create_server(
            self._protocol, self.host, 0, ssl=implicit
        )
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def close(self) -> None:
        self.release()
        if self._server is not None:
            self._server.close()
            self._server = None

    async def __aenter__(self) -> SmtpStandin:
        return await self.start()

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    def refuse(self, stage: Stage, reply: str, *, times: int = 1) -> None:
        """Answer the next ``times`` commands of ``stage`` with ``reply``
        (``"451 4.3.0 Try later"``) instead of accepting them."""
        self._refusals[stage].extend([reply] * times)

    def hold(self) -> None:
        """Keep the reply to every message back until :meth:`release`."""
        self._held = True
        self._released.clear()

    def release(self) -> None:
        self._held = False
        self._released.set()

    async def wait_for(self, count: int, timeout: float = 10.0) -> list[Mail]:
        """Wait until ``count`` messages were accepted; return them all.

        ``timeout`` only guards against a hung test; it is not a timing check.
        """
        async with asyncio.timeout(timeout):
            while len(self.mails) < count:
                self._arrived.clear()
                await self._arrived.wait()
        return list(self.mails)

    def _protocol(self) -> SMTP:
        self.connections += 1
        starttls = self.security == "starttls"
        with warnings.catch_warnings():
            # aiosmtpd warns of AUTH without STARTTLS, not knowing that with
            # implicit TLS the whole connection is encrypted.
            warnings.simplefilter("ignore", UserWarning)
            return self._smtp(starttls)

    def _smtp(self, starttls: bool) -> SMTP:
        return SMTP(
            self,
            hostname="smtp.standin.test",
            tls_context=self._certificates.server_context() if starttls else None,
            require_starttls=starttls,
            # aiosmtpd only knows encryption begun by STARTTLS; with implicit
            # TLS every connection is encrypted already.
            auth_require_tls=self.security != "tls",
            auth_required=self.password is not None,
            authenticator=self._authenticate,
            auth_exclude_mechanism=self._excluded,
            loop=asyncio.get_running_loop(),
        )

    def _authenticate(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        mechanism: str,
        auth_data: object,
    ) -> AuthResult:
        if not isinstance(auth_data, LoginPassword):
            return AuthResult(success=False, handled=False)
        login = auth_data.login.decode(errors="replace")
        success = (
            self.password is not None
            and login == self.username
            and auth_data.password.decode(errors="replace") == self.password
        )
        self.logins.append((login, mechanism, success))
        if success:
            self._sessions[id(session)] = (login, mechanism)
        return AuthResult(success=success, handled=False)

    # aiosmtpd calls these hooks by name, with the command's argument.

    async def handle_MAIL(self, server, session, envelope, address, options):
        refused = self._refused("MAIL")
        if refused:
            return refused
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 OK"

    async def handle_RCPT(self, server, session, envelope, address, options):
        refused = self._refused("RCPT")
        if refused:
            return refused
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(options)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        if self._held:
            await self._released.wait()
        refused = self._refused("DATA")
        if refused:
            return refused
        raw = envelope.original_content or envelope.content
        login, mechanism = self._sessions.get(id(session), (None, None))
        transport = server.transport
        self.mails.append(
            Mail(
                mail_from=envelope.mail_from,
                rcpt_tos=list(envelope.rcpt_tos),
                raw=raw,
                message=BytesParser(policy=email.policy.default).parsebytes(raw),
                login=login,
                mechanism=mechanism,
                tls=transport is not None
                and transport.get_extra_info("ssl_object") is not None,
            )
        )
        self._arrived.set()
        return "250 2.0.0 Queued"

    def _refused(self, stage: str) -> str | None:
        queue = self._refusals[stage]
        return queue.popleft() if queue else None
