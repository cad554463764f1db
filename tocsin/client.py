"""A synchronous Python client of Tocsin's HTTP API.

It speaks to the daemon over its Unix socket, or over TCP with a bearer token::

    from tocsin.client import Client

    with Client(socket="/var/lib/tocsin/api.sock") as tocsin:
        tocsin.create_alert_rule("fraud-drift", "model.drift", threshold=0.2)
        for alert in tocsin.list_alerts(state="triggered"):
            tocsin.acknowledge(alert["id"], comment="looking into it")

Outside a ``with`` block, :meth:`Client.disconnect` releases the connection.

Results are the API's JSON as plain dicts and lists (see
``/api/v1/openapi.json``). Every refusal raises :class:`TocsinAPIError` with
the HTTP status and the daemon's message; a daemon that cannot be reached
raises :class:`TocsinUnreachableError`, whose status is ``0``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import quote

import httpx

from tocsin.errors import TocsinError

#: Seconds a call waits for the daemon by default.
DEFAULT_TIMEOUT = 10.0
_API = "/api/v1"


class TocsinAPIError(TocsinError):
    """Raised when the daemon answers a call with an error.

    :param status: the HTTP status (404 unknown, 409 refused, 422 invalid...).
    :param message: the daemon's message, as it says it.
    """

    def __init__(self, status: int, message: str) -> None:
        self.status = status
        self.message = message
        super().__init__(f"{message} (HTTP {status})" if status else message)


class TocsinUnreachableError(TocsinAPIError):
    """Raised when the daemon cannot be reached: no socket, refused, timed out."""

    def __init__(self, message: str) -> None:
        super().__init__(0, message)


class Client:
    """A connection to one Tocsin daemon's API.

    :param socket: path of the daemon's API socket.
    :param url: base URL of its TCP listener (``http://10.0.0.5:9094``),
        instead of ``socket``.
    :param token: the bearer token the TCP listener asks for.
    :param timeout: seconds each call waits for an answer.
    :raises ValueError: if neither or both of ``socket`` and ``url`` are given.
    """

    def __init__(
        self,
        socket: str | None = None,
        url: str | None = None,
        token: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        if (socket is None) == (url is None):
            raise ValueError("give exactly one of socket and url")
        self.address = socket or url or ""
        self._timeout = timeout
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        if socket is not None:
            # The host name is a placeholder: the socket decides where it goes.
            transport = httpx.HTTPTransport(uds=socket)
            self._http = httpx.Client(
                transport=transport,
                base_url="http://tocsin",
                headers=headers,
                timeout=timeout,
            )
        else:
            self._http = httpx.Client(
                base_url=url.rstrip("/"), headers=headers, timeout=timeout
            )

    def disconnect(self) -> None:
        """Release the connection; safe to call twice.

        (``close`` closes an alert, as in the lifecycle's words.)
        """
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.disconnect()

    def request(
        self,
        method: str,
        path: str,
        *,
        json: object = None,
        params: Mapping[str, Any] | list[tuple[str, str]] | None = None,
        timeout: httpx.Timeout | None = None,
    ) -> dict[str, Any]:
        """Make one call and return the daemon's JSON answer.

        :param path: the path, like ``/api/v1/alerts``; a value in it is
            written with :func:`segment`.
        :param timeout: instead of the client's timeout, for this call.
        :raises TocsinAPIError: if the daemon answers with an error.
        :raises TocsinUnreachableError: if it cannot be reached.
        """
        wait = httpx.USE_CLIENT_DEFAULT if timeout is None else timeout
        try:
            response = self._http.request(
                method, path, json=json, params=params, timeout=wait
            )
        except httpx.TransportError as error:
            raise TocsinUnreachableError(
                f"cannot reach the daemon at {self.address}: {_reason(error)}"
            ) from None
        try:
            answer = response.json()
        except ValueError:
            answer = None
        if not isinstance(answer, dict):
            raise TocsinAPIError(response.status_code, "the answer is not JSON")
        if response.status_code >= 400 or answer.get("status") == "error":
            message = answer.get("error") or f"HTTP {response.status_code}"
            raise TocsinAPIError(response.status_code, str(message))

        return answer

    # Alerts.

    def list_alerts(
        self,
        state: str | None = None,
        rule: str | None = None,
        labels: Mapping[str, str] | None = None,
        limit: int | None = None,
    ) -> list[dict[str, Any]]:
        """Return alerts, newest first, that match every filter given."""
        params: list[tuple[str, str]] = []
        if state:
            params.append(("state", state))
        if rule:
            params.append(("rule", rule))
        params += [
            ("label", f"{name}={value}") for name, value in (labels or {}).items()
        ]
        if limit is not None:
            params.append(("limit", str(limit)))

        return self.request("GET", f"{_API}/alerts", params=params)["alerts"]

    def get_alert(self, ref: int | str) -> dict[str, Any]:
        """Return one alert, by id or uid, with its ``history`` and ``escalation``."""
        return self.request("GET", f"{_API}/alerts/{segment(ref)}")["alert"]

    def acknowledge(self, ref: int | str, comment: str | None = None) -> dict[str, Any]:
        """Acknowledge an alert: someone is on it; its escalation stops."""
        return self._move(ref, "acknowledge", comment)

    def investigate(self, ref: int | str, comment: str | None = None) -> dict[str, Any]:
        """Mark an acknowledged or escalated alert as under investigation."""
        return self._move(ref, "investigate", comment)

    def escalate(self, ref: int | str, comment: str | None = None) -> dict[str, Any]:
        """Escalate an alert by hand."""
        return self._move(ref, "escalate", comment)

    def resolve(self, ref: int | str, comment: str | None = None) -> dict[str, Any]:
        """Resolve an alert by hand."""
        return self._move(ref, "resolve", comment)

    def close(self, ref: int | str, comment: str | None = None) -> dict[str, Any]:
        """Close a resolved alert: nothing more is to be done about it."""
        return self._move(ref, "close", comment)

    def _move(self, ref: int | str, action: str, comment: str | None) -> dict[str, Any]:
        body = {"comment": comment} if comment else {}
        path = f"{_API}/alerts/{segment(ref)}/{action}"

        return self.request("POST", path, json=body)["alert"]

    # Rules.

    def create_alert_rule(
        self,
        name: str,
        metric: str,
        *,
        threshold: float,
        op: str = ">",
        window: str | float = "5m",
        aggregation: str = "avg",
        severity: str = "medium",
        channels: Iterable[str] = (),
        **more: Any,
    ) -> dict[str, Any]:
        """Add a rule that alerts when ``aggregation`` of ``metric`` over
        ``window`` compares with ``threshold`` by ``op``; it survives restarts.

        :param more: any other key of a ``[[rules]]`` entry of the config
            (``group_by``, ``labels``, ``for_`` or ``for``, ``summary``...).
        :return: the rule as the daemon runs it, with its ``source``.
        :raises TocsinAPIError: 422 naming the key at fault if the rule is
            invalid, 409 if its name is taken.
        """
        if "for_" in more:
            more["for"] = more.pop("for_")
        rule = {
            "name": name,
            "metric": metric,
            "threshold": threshold,
            "op": op,
            "window": window,
            "aggregation": aggregation,
            "severity": severity,
            "channels": list(channels),
            **more,
        }

        return self.request("POST", f"{_API}/rules", json=rule)["rule"]

    def list_alert_rules(self) -> list[dict[str, Any]]:
        """Return every rule, the config file's and those added by the API."""
        return self.request("GET", f"{_API}/rules")["rules"]

    def delete_alert_rule(self, name: str) -> None:
        """Remove a rule added through the API (the file's stay: 409)."""
        self.request("DELETE", f"{_API}/rules/{segment(name)}")

    # Integrations.

    def add_integration(self, type: str, name: str, **settings: Any) -> dict[str, Any]:
        """Add a channel of ``type``, with the keys of a ``[[channels]]`` entry.

        :return: the channel, its secrets masked.
        :raises TocsinAPIError: 422 if the daemon cannot deliver to ``type``
            or a setting is invalid, 409 if the name is taken.
        """
        body = {"type": type, "name": name, **settings}

        return self.request("POST", f"{_API}/integrations", json=body)["integration"]

    def add_webhook_integration(
        self, name: str, url: str, **settings: Any
    ) -> dict[str, Any]:
        """Add a webhook channel posting each notification to ``url``."""
        return self.add_integration("webhook", name, url=url, **settings)

    def add_pagerduty_integration(
        self, name: str, routing_key: str, **settings: Any
    ) -> dict[str, Any]:
        """Add a PagerDuty (Events API v2) channel."""
        return self.add_integration(
            "pagerduty", name, routing_key=routing_key, **settings
        )

    def add_slack_integration(
        self, name: str, webhook_url: str, **settings: Any
    ) -> dict[str, Any]:
        """Add a Slack channel posting to an incoming webhook."""
        return self.add_integration("slack", name, webhook_url=webhook_url, **settings)

    def add_teams_integration(
        self, name: str, webhook_url: str, **settings: Any
    ) -> dict[str, Any]:
        """Add a Microsoft Teams channel posting to an incoming webhook."""
        return self.add_integration("teams", name, webhook_url=webhook_url, **settings)

    def add_datadog_integration(
        self, name: str, api_key: str, site: str = "datadoghq.com", **settings: Any
    ) -> dict[str, Any]:
        """Add a channel sending each notification as a Datadog event."""
        return self.add_integration(
            "datadog", name, api_key=api_key, site=site, **settings
        )

    def add_email_integration(
        self, name: str, to: Iterable[str], sender: str, **settings: Any
    ) -> dict[str, Any]:
        """Add a channel mailing each notification to the addresses ``to``,
        from the address ``sender`` (the config's ``from``), through the SMTP
        server the settings name (``host``, ``port``, ``security``...)."""
        return self.add_integration(
            "email", name, to=list(to), **{"from": sender}, **settings
        )

    def list_integrations(self) -> list[dict[str, Any]]:
        """Return every channel, secrets masked."""
        return self.request("GET", f"{_API}/integrations")["integrations"]

    def integration_health(self, name: str) -> dict[str, Any]:
        """Return how the channel ``name`` delivers.

        :return: its ``status`` (``healthy``, ``degraded``, ``failing``) and
            ``detail``, ``last_success_at``, ``last_error_at``,
            ``last_error_reason``, ``last_error_status``, ``failures_24h``,
            ``dead_letters_24h``, ``latency_p50_ms``, ``latency_p95_ms``,
            ``backlog``, ``oldest_pending_s`` and ``in_flight``.
        :raises TocsinAPIError: if there is no such channel (404).
        """
        path = f"{_API}/integrations/{segment(name)}/health"
        return self.request("GET", path)["health"]

    def delete_integration(self, name: str) -> None:
        """Remove a channel added through the API."""
        self.request("DELETE", f"{_API}/integrations/{segment(name)}")

    def test_integration(self, name: str) -> dict[str, Any]:
        """Send one test notification to the channel ``name`` now.

        :return: ``ok``, the destination's HTTP ``status``, ``duration_ms``,
            and for a failed send its ``reason`` and ``error``; a failed send
            is a result, not an exception.
        :raises TocsinAPIError: if there is no such channel (404).
        """
        # The daemon bounds a test by the channel's timeout, which may be
        # longer than this client's: wait for its answer, which says what the
        # destination did, rather than give up first and say nothing.
        wait = httpx.Timeout(self._timeout, read=None)
        path = f"{_API}/integrations/{segment(name)}/test"

        return self.request("POST", path, timeout=wait)["result"]

    # Delivery.

    def list_dead_letters(
        self, channel: str | None = None, limit: int | None = None
    ) -> list[dict[str, Any]]:
        """Return the notifications given up on, the last given up on first.

        :param channel: only those of this channel.
        :param limit: most returned (the daemon's default is 100).
        """
        params: dict[str, Any] = {}
        if channel:
            params["channel"] = channel
        if limit is not None:
            params["limit"] = limit
        answer = self.request("GET", f"{_API}/deadletters", params=params or None)

        return answer["dead_letters"]

    def audit(
        self,
        *,
        since: float | str | None = None,
        until: float | str | None = None,
        alert: int | str | None = None,
        channel: str | None = None,
        outcome: str | None = None,
        kind: str | None = None,
        limit: int | None = None,
        cursor: str | None = None,
    ) -> dict[str, Any]:
        """Return one page of the audit log, newest first.

        :param since: only entries at or after this time: POSIX seconds or
            an RFC 3339 time; ``until`` likewise.
        :param alert: only this alert's deliveries and transitions (id or uid).
        :param kind: ``delivery``, ``transition``, ``silence`` or ``config``.
        :param cursor: a page's ``next_cursor``, to read the next page.
        :return: ``{"entries": [...], "next_cursor": ...}``; ``next_cursor``
            is ``None`` after the last page.
        """
        asked = {
            "since": since,
            "until": until,
            "alert": alert,
            "channel": channel,
            "outcome": outcome,
            "kind": kind,
            "limit": limit,
            "cursor": cursor,
        }
        params = {name: value for name, value in asked.items() if value is not None}
        answer = self.request("GET", f"{_API}/audit", params=params or None)

        return {"entries": answer["entries"], "next_cursor": answer["next_cursor"]}

    # Noise control.

    def configure_deduplication(self, **settings: Any) -> dict[str, Any]:
        """Set the caps on notifications that say the same thing, per channel.

        :param settings: ``keys``, ``window``, ``max_per_window``,
            ``suppress_for``; durations as ``"10m"`` or seconds.
        :return: the settings as they now apply.
        """
        return self._put_settings("dedup", settings)

    def configure_grouping(self, **settings: Any) -> dict[str, Any]:
        """Override the routing root's grouping.

        :param settings: ``group_by``, ``group_wait``, ``group_interval``,
            ``repeat_interval``; a key left out keeps the config's value.
        """
        return self._put_settings("grouping", settings)

    def configure_digest(self, **settings: Any) -> dict[str, Any]:
        """Batch the notifications of some alerts into periodic digests.

        :param settings: ``interval``, ``matchers``, ``channels``.
        """
        return self._put_settings("digest", settings)

    def _put_settings(self, kind: str, settings: dict[str, Any]) -> dict[str, Any]:
        path = f"{_API}/settings/{segment(kind)}"

        return self.request("PUT", path, json=settings)["settings"]

    # Silences.

    def create_silence(
        self,
        matchers: Iterable[str],
        duration: str | None = None,
        *,
        ends_at: str | float | None = None,
        starts_at: str | float | None = None,
        comment: str = "",
        created_by: str | None = None,
    ) -> dict[str, Any]:
        """Silence the alerts ``matchers`` select (``team="ml"``) for a while.

        :param duration: how long (``"2h"``); or give ``ends_at``.
        :param created_by: who asks; by default the caller the daemon sees.
        """
        body: dict[str, Any] = {"matchers": list(matchers), "comment": comment}
        for key, value in (
            ("duration", duration),
            ("ends_at", ends_at),
            ("starts_at", starts_at),
            ("created_by", created_by),
        ):
            if value is not None:
                body[key] = value

        return self.request("POST", f"{_API}/silences", json=body)["silence"]

    def list_silences(self, state: str | None = None) -> list[dict[str, Any]]:
        """Return the silences, those in ``state`` only when it is given."""
        params = {"state": state} if state else None

        return self.request("GET", f"{_API}/silences", params=params)["silences"]

    def expire_silence(self, silence_id: str) -> dict[str, Any]:
        """End a silence now."""
        path = f"{_API}/silences/{segment(silence_id)}"

        return self.request("DELETE", path)["silence"]

    # Routing and status.

    def routes_test(self, labels: Mapping[str, str]) -> dict[str, Any]:
        """Return the ``routes`` and ``channels`` an alert of ``labels`` takes."""
        answer = self.request(
            "POST", f"{_API}/routes/test", json={"labels": dict(labels)}
        )

        return {"routes": answer["routes"], "channels": answer["channels"]}

    def status(self) -> dict[str, Any]:
        """Return the daemon's version, uptime and counts."""
        return self.request("GET", f"{_API}/status")


def _reason(error: httpx.TransportError) -> str:
    cause = error.__cause__ or error.__context__
    reason = getattr(cause, "strerror", None) or str(error) or type(error).__name__

    return reason


def segment(value: object) -> str:
    """Write ``value`` as one segment of a URL path, whatever it holds.

    Slashes, ``?`` and ``#`` are escaped, and so is a segment of dots alone,
    which HTTP clients would otherwise fold into the path around it.
    """
    text = quote(str(value), safe="")
    if text.strip(".") == "":
        text = text.replace(".", "%2E")

    return text
