"""The schema of a ``[[channels]]`` entry: one Struct per kind of destination,
told apart by its ``type``."""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal

import msgspec

from tocsin.schema_types import Duration, Name, Severity, Strict


class _ChannelBase(Strict, tag_field="type"):
    name: Name
    #: Delivery attempts before a notification is dead-lettered. With the
    #: default backoff, 15 attempts span about 40 minutes of outage.
    max_attempts: Annotated[int, msgspec.Meta(ge=1, le=1000)] = 15
    #: A notification still undelivered this long after it was queued is
    #: dead-lettered, whatever its attempts; ``0`` keeps it until
    #: ``max_attempts`` run out.
    max_age: Duration = Duration(86400.0)
    #: Delay before the first retry; doubled on each attempt, with jitter.
    backoff: Duration = Duration(1.0)
    max_backoff: Duration = Duration(300.0)
    #: Whether resolve notifications go to this channel.
    send_resolved: bool = True
    #: Most requests in flight to this destination at once.
    concurrency: Annotated[int, msgspec.Meta(ge=1, le=64)] = 4
    #: Most requests per ``rate_period``; ``0`` has no limit. Each
    #: destination's default is its service's published limit.
    rate_limit: Annotated[int, msgspec.Meta(ge=0)] = 0
    rate_period: Duration = Duration(1.0)
    #: How long one request may take.
    timeout: Duration = Duration(10.0)

    #: The secrets of this kind of channel: each is given by one of the keys
    #: ``NAME``, ``NAME_env`` (an environment variable) or ``NAME_file`` (a
    #: file, looked up in ``$CREDENTIALS_DIRECTORY`` first), and maps to
    #: what the secret is, for errors. Required ones are listed in
    #: ``required_secrets``.
    secrets: ClassVar[dict[str, str]] = {}
    required_secrets: ClassVar[tuple[str, ...]] = ()
    #: Secrets the destination accepts at one length only, by name.
    secret_lengths: ClassVar[dict[str, int]] = {}


class WebhookChannelConfig(_ChannelBase, tag="webhook"):
    """Any HTTP endpoint: the alert JSON, or the body ``template`` renders."""

    #: Destination URL. Prefer ``url_env`` or ``url_file``: a webhook URL is a
    #: secret.
    url: str = ""
    url_env: str = ""
    url_file: str = ""
    method: Literal["POST", "PUT", "PATCH"] = "POST"
    headers: dict[str, str] = {}
    timeout: Duration = Duration(5.0)
    #: The request body as a Jinja2 template (``{"text": {{ alert.name }}}``);
    #: every ``{{ ... }}`` is written as a JSON value. Empty sends Tocsin's
    #: own JSON payload.
    template: str = ""
    content_type: str = "application/json"
    #: Standard Webhooks signing secret (``whsec_...``); when set, every
    #: request carries a ``webhook-signature``.
    secret: str = ""
    secret_env: str = ""
    secret_file: str = ""

    secrets: ClassVar[dict[str, str]] = {
        "url": "webhook URL",
        "secret": "webhook signing secret",
    }
    required_secrets: ClassVar[tuple[str, ...]] = ("url",)


#: PagerDuty's severities, which Tocsin's are mapped onto.
PagerDutySeverity = Literal["critical", "error", "warning", "info"]
#: The PagerDuty severity of each of Tocsin's, unless a channel says otherwise.
PAGERDUTY_SEVERITIES: dict[str, str] = {
    "critical": "critical",
    "high": "error",
    "warning": "warning",
    "medium": "warning",
    "low": "info",
    "info": "info",
}


class PagerDutyChannelConfig(_ChannelBase, tag="pagerduty"):
    """One PagerDuty service, through the Events API v2."""

    #: The service's 32-character integration key.
    routing_key: str = ""
    routing_key_env: str = ""
    routing_key_file: str = ""
    #: Secret(s) of the service's Webhooks V3 subscription, comma-separated
    #: during a rotation; set to take acknowledgements back from PagerDuty at
    #: ``/hooks/pagerduty/NAME``.
    webhook_secret: str = ""
    webhook_secret_env: str = ""
    webhook_secret_file: str = ""
    url: str = "https://events.pagerduty.com/v2/enqueue"
    #: PagerDuty severity per Tocsin severity, over :data:`PAGERDUTY_SEVERITIES`.
    severities: dict[Severity, PagerDutySeverity] = {}
    #: The event's ``source``; empty means this host's name.
    source: str = ""
    component: str = ""
    group: str = ""
    #: The event's ``class``; empty means the rule's metric.
    event_class: str = msgspec.field(default="", name="class")
    #: Send ``acknowledge`` when an alert is acknowledged in Tocsin.
    send_acknowledged: bool = True
    rate_limit: Annotated[int, msgspec.Meta(ge=0)] = 120
    rate_period: Duration = Duration(60.0)

    secrets: ClassVar[dict[str, str]] = {
        "routing_key": "PagerDuty routing key",
        "webhook_secret": "PagerDuty webhook secret",
    }
    required_secrets: ClassVar[tuple[str, ...]] = ("routing_key",)
    secret_lengths: ClassVar[dict[str, int]] = {"routing_key": 32}


class SlackChannelConfig(_ChannelBase, tag="slack"):
    """One Slack channel, through an incoming webhook, with buttons."""

    webhook_url: str = ""
    webhook_url_env: str = ""
    webhook_url_file: str = ""
    #: The Slack app's signing secret; set to take the buttons' actions at
    #: ``/hooks/slack/NAME``.
    signing_secret: str = ""
    signing_secret_env: str = ""
    signing_secret_file: str = ""
    #: How long the Snooze button silences the alert.
    snooze: Duration = Duration(3600.0)
    #: Show Acknowledge / Snooze / Resolve buttons.
    buttons: bool = True
    rate_limit: Annotated[int, msgspec.Meta(ge=0)] = 1
    rate_period: Duration = Duration(1.0)

    secrets: ClassVar[dict[str, str]] = {
        "webhook_url": "Slack webhook URL",
        "signing_secret": "Slack signing secret",
    }
    required_secrets: ClassVar[tuple[str, ...]] = ("webhook_url",)


class TeamsChannelConfig(_ChannelBase, tag="teams"):
    """One Microsoft Teams channel, through a Workflows webhook."""

    webhook_url: str = ""
    webhook_url_env: str = ""
    webhook_url_file: str = ""
    card_version: Literal["1.2", "1.3", "1.4", "1.5"] = "1.4"
    rate_limit: Annotated[int, msgspec.Meta(ge=0)] = 4
    rate_period: Duration = Duration(1.0)

    secrets: ClassVar[dict[str, str]] = {"webhook_url": "Teams webhook URL"}
    required_secrets: ClassVar[tuple[str, ...]] = ("webhook_url",)


class EmailChannelConfig(_ChannelBase, tag="email"):
    """Mail through an SMTP server."""

    host: str = "localhost"
    #: 0 means the security's usual port: 25, 587 for STARTTLS, 465 for TLS.
    port: Annotated[int, msgspec.Meta(ge=0, le=65535)] = 0
    security: Literal["starttls", "tls", "none"] = "starttls"
    username: str = ""
    password: str = ""
    password_env: str = ""
    password_file: str = ""
    #: The From address, ``Name <addr>`` or ``addr``.
    sender: str = msgspec.field(default="", name="from")
    to: list[str] = []
    #: A CA bundle to verify the server with, instead of the system's.
    ca_file: str = ""

    secrets: ClassVar[dict[str, str]] = {"password": "SMTP password"}


class DatadogChannelConfig(_ChannelBase, tag="datadog"):
    """Datadog events, one per alert transition, grouped by alert."""

    api_key: str = ""
    api_key_env: str = ""
    api_key_file: str = ""
    site: str = "datadoghq.com"
    #: The API's base URL, to which ``/api/v1/events`` is appended (as the
    #: export's ``base_url``); empty means ``https://api.SITE``.
    base_url: str = ""
    priority: Literal["normal", "low"] = "normal"
    #: Added to every event; each must be a valid Datadog tag.
    tags: list[str] = []
    source_type_name: str = "tocsin"
    #: Send an ``info`` event when an alert is acknowledged in Tocsin.
    send_acknowledged: bool = False

    secrets: ClassVar[dict[str, str]] = {"api_key": "Datadog API key"}
    required_secrets: ClassVar[tuple[str, ...]] = ("api_key",)


class LogChannelConfig(_ChannelBase, tag="log"):
    level: Literal["info", "warning", "error"] = "warning"


ChannelConfig = (
    WebhookChannelConfig
    | PagerDutyChannelConfig
    | SlackChannelConfig
    | TeamsChannelConfig
    | EmailChannelConfig
    | DatadogChannelConfig
    | LogChannelConfig
)
CHANNEL_TYPES = ("webhook", "pagerduty", "slack", "teams", "email", "datadog", "log")
