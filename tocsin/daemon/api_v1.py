"""The handlers of ``/api/v1``: alerts, silences, rules, integrations (and a
test of each), dead letters, the audit log, settings, routes, groups and
status.

Each handler reads and checks its request (:mod:`tocsin.daemon.api_values`),
asks the :class:`~tocsin.daemon.backend.Backend`, and answers one JSON object
with a ``status``. What the backend refuses arrives as one of Tocsin's errors,
which :mod:`tocsin.daemon.api` turns into the status that goes with it; the
paths, parameters and answers are described in ``openapi.json`` next to this
module.
"""

from __future__ import annotations

from importlib import resources
from typing import Annotated, Any, get_args

import msgspec
import orjson
from aiohttp import web

from tocsin import __version__
from tocsin.clock import Clock
from tocsin.daemon import api_audit
from tocsin.daemon import api_values as values
from tocsin.daemon.backend import SETTINGS_TYPES, Backend
from tocsin.errors import InvalidValueError, NotFoundError
from tocsin.state.models import AlertState

PREFIX = "/api/v1"
#: The manual moves of an alert, by the verb of their path.
ACTIONS: dict[str, AlertState] = {
    "acknowledge": "acknowledged",
    "investigate": "investigating",
    "escalate": "escalated",
    "resolve": "resolved",
    "close": "closed",
}
ALERT_STATES = get_args(AlertState)
SILENCE_STATES = ("pending", "active", "expired")
#: Alerts listed when the request says no ``limit``, and the most it may ask.
DEFAULT_LIMIT = 100
MAX_LIMIT = 10_000


class MoveRequest(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    comment: str = ""
    #: Recorded on the transition instead of the caller's own name.
    actor: Annotated[str, msgspec.Meta(max_length=200)] = ""


class SilenceRequest(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    matchers: Annotated[list[str], msgspec.Meta(min_length=1)]
    #: ISO 8601 or POSIX seconds; now when left out.
    starts_at: str | float | None = None
    ends_at: str | float | None = None
    #: Instead of ``ends_at``: how long from ``starts_at`` (``2h``).
    duration: str | None = None
    created_by: str = ""
    comment: str = ""


class RouteTestRequest(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    labels: dict[str, str]


def openapi_document() -> bytes:
    """Return the OpenAPI document of the API, as shipped with Tocsin."""
    return resources.files(__package__).joinpath("openapi.json").read_bytes()


def ok(body: dict[str, Any] | None = None, status: int = 200) -> web.Response:
    """Answer ``{"status": "ok", ...body}``."""
    answer = {"status": "ok", **(body or {})}
    return web.Response(
        body=orjson.dumps(answer), status=status, content_type="application/json"
    )


async def _body(request: web.Request, *, required: bool = True) -> dict[str, Any]:
    raw = await request.read()
    if not raw.strip() and not required:
        return {}
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as error:
        raise values.RequestError(f"the body is not valid JSON: {error}") from None
    if not isinstance(body, dict):
        raise values.RequestError("the body must be a JSON object")

    return body


class V1:
    """The ``/api/v1`` handlers over one backend.

    :param backend: what the handlers read and change.
    :param reload: the handler of ``POST /-/reload``, served again under
        ``/api/v1/reload``.
    :param clock: the time of silences and of the uptime.
    """

    def __init__(self, backend: Backend, reload, clock: Clock) -> None:
        self._backend = backend
        self._reload = reload
        self._clock = clock
        self._document = openapi_document()

    def add_routes(self, router: web.UrlDispatcher) -> None:
        """Add every ``/api/v1`` path to ``router``."""
        get = {"allow_head": False}
        router.add_get(PREFIX + "/openapi.json", self._openapi, **get)
        router.add_get(PREFIX + "/alerts", self._alerts, **get)
        router.add_get(PREFIX + "/alerts/{ref}", self._alert, **get)
        router.add_post(PREFIX + "/alerts/{ref}/{action}", self._move)
        router.add_get(PREFIX + "/silences", self._silences, **get)
        router.add_post(PREFIX + "/silences", self._add_silence)
        router.add_get(PREFIX + "/silences/{id}", self._silence, **get)
        router.add_delete(PREFIX + "/silences/{id}", self._expire_silence)
        router.add_get(PREFIX + "/rules", self._rules, **get)
        router.add_post(PREFIX + "/rules", self._add_rule)
        router.add_delete(PREFIX + "/rules/{name}", self._delete_rule)
        router.add_get(PREFIX + "/integrations", self._integrations, **get)
        router.add_post(PREFIX + "/integrations", self._add_integration)
        router.add_delete(PREFIX + "/integrations/{name}", self._delete_integration)
        router.add_post(PREFIX + "/integrations/{name}/test", self._test_integration)
        router.add_get(
            PREFIX + "/integrations/{name}/health", self._integration_health, **get
        )
        router.add_get(PREFIX + "/deadletters", self._dead_letters, **get)
        router.add_get(PREFIX + "/audit", self._audit, **get)
        router.add_get(PREFIX + "/settings/{kind}", self._settings, **get)
        router.add_put(PREFIX + "/settings/{kind}", self._put_settings)
        router.add_get(PREFIX + "/routes", self._routes, **get)
        router.add_post(PREFIX + "/routes/test", self._test_route)
        router.add_get(PREFIX + "/groups", self._groups, **get)
        router.add_get(PREFIX + "/status", self._status, **get)
        router.add_post(PREFIX + "/reload", self._reload)

    async def _openapi(self, request: web.Request) -> web.Response:
        return web.Response(body=self._document, content_type="application/json")

    async def _alerts(self, request: web.Request) -> web.Response:
        query = request.query
        state = query.get("state") or None
        if state is not None and state not in ALERT_STATES:
            known = ", ".join(ALERT_STATES)
            raise InvalidValueError(f"unknown state {state!r}; known: {known}", "state")
        labels = {}
        for pair in query.getall("label", []):
            name, equals, value = pair.partition("=")
            if not equals or not name:
                raise values.RequestError(f"label: expected name=value, got {pair!r}")
            labels[name] = value
        alerts = await self._backend.list_alerts(
            state=state,
            rule=query.get("rule") or None,
            labels=labels,
            limit=_limit(query.get("limit")),
        )

        return ok({"alerts": [values.alert_json(alert) for alert in alerts]})

    async def _alert(self, request: web.Request) -> web.Response:
        detail = await self._backend.get_alert(request.match_info["ref"])

        return ok({"alert": values.alert_detail_json(detail)})

    async def _move(self, request: web.Request) -> web.Response:
        action = request.match_info["action"]
        if action not in ACTIONS:
            raise NotFoundError(
                f"unknown action {action!r}; known: {', '.join(ACTIONS)}"
            )
        move = values.decode(await _body(request, required=False), MoveRequest, "")
        detail = await self._backend.move_alert(
            request.match_info["ref"],
            ACTIONS[action],
            actor=move.actor or values.actor(request),
            comment=move.comment,
        )

        return ok({"alert": values.alert_detail_json(detail)})

    async def _silences(self, request: web.Request) -> web.Response:
        state = request.query.get("state") or None
        if state is not None and state not in SILENCE_STATES:
            known = ", ".join(SILENCE_STATES)
            raise InvalidValueError(f"unknown state {state!r}; known: {known}", "state")
        silences = await self._backend.list_silences(state=state)
        now = self._clock.time()

        return ok({"silences": [values.silence_json(s, now) for s in silences]})

    async def _add_silence(self, request: web.Request) -> web.Response:
        asked = values.decode(await _body(request), SilenceRequest, "")
        now = self._clock.time()
        starts_at = now
        if asked.starts_at is not None:
            starts_at = values.parse_time(asked.starts_at, "starts_at")
        if (asked.ends_at is None) == (asked.duration is None):
            raise InvalidValueError("give exactly one of ends_at and duration")
        if asked.duration is not None:
            ends_at = starts_at + values.parse_duration(asked.duration, "duration")
        else:
            ends_at = values.parse_time(asked.ends_at, "ends_at")
        if ends_at <= max(starts_at, now):
            raise InvalidValueError(
                "must be later than the start and than now", "ends_at"
            )
        silence = await self._backend.add_silence(
            matchers=asked.matchers,
            starts_at=starts_at,
            ends_at=ends_at,
            created_by=asked.created_by or values.actor(request),
            comment=asked.comment,
        )

        return ok({"silence": values.silence_json(silence, now)}, 201)

    async def _silence(self, request: web.Request) -> web.Response:
        silence = await self._backend.get_silence(request.match_info["id"])

        return ok({"silence": values.silence_json(silence, self._clock.time())})

    async def _expire_silence(self, request: web.Request) -> web.Response:
        silence = await self._backend.expire_silence(
            request.match_info["id"], actor=values.actor(request)
        )

        return ok({"silence": values.silence_json(silence, self._clock.time())})

    async def _rules(self, request: web.Request) -> web.Response:
        entries = await self._backend.list_rules()

        return ok({"rules": [values.rule_json(entry) for entry in entries]})

    async def _add_rule(self, request: web.Request) -> web.Response:
        rule = values.check_new_rule(await _body(request))
        entry = await self._backend.add_rule(rule, created_by=values.actor(request))

        return ok({"rule": values.rule_json(entry)}, 201)

    async def _delete_rule(self, request: web.Request) -> web.Response:
        await self._backend.delete_rule(
            request.match_info["name"], actor=values.actor(request)
        )

        return ok()

    async def _integrations(self, request: web.Request) -> web.Response:
        entries = await self._backend.list_integrations()

        return ok({"integrations": [values.integration_json(e) for e in entries]})

    async def _add_integration(self, request: web.Request) -> web.Response:
        channel = values.check_new_channel(await _body(request))
        entry = await self._backend.add_integration(
            channel, created_by=values.actor(request)
        )

        return ok({"integration": values.integration_json(entry)}, 201)

    async def _delete_integration(self, request: web.Request) -> web.Response:
        await self._backend.delete_integration(
            request.match_info["name"], actor=values.actor(request)
        )

        return ok()

    async def _test_integration(self, request: web.Request) -> web.Response:
        # A failed send is still a 200: the test ran, and its result says how
        # the destination answered.
        result = await self._backend.test_integration(request.match_info["name"])

        return ok({"result": values.builtins(result)})

    async def _integration_health(self, request: web.Request) -> web.Response:
        health = await self._backend.integration_health(request.match_info["name"])

        return ok({"health": values.builtins(health)})

    async def _dead_letters(self, request: web.Request) -> web.Response:
        query = request.query
        letters = await self._backend.dead_letters(
            channel=query.get("channel") or None, limit=_limit(query.get("limit"))
        )

        return ok({"dead_letters": [values.dead_letter_json(d) for d in letters]})

    async def _audit(self, request: web.Request) -> web.Response:
        query, alert = api_audit.audit_query(request.query)
        page = await self._backend.audit(query, alert=alert)

        return ok(api_audit.audit_json(page))

    async def _settings(self, request: web.Request) -> web.Response:
        kind = _settings_kind(request)
        settings = await self._backend.get_settings(kind)

        return ok({"kind": kind, "settings": values.builtins(settings)})

    async def _put_settings(self, request: web.Request) -> web.Response:
        kind = _settings_kind(request)
        asked = values.decode(await _body(request), SETTINGS_TYPES[kind], kind)
        settings = await self._backend.put_settings(
            kind, asked, actor=values.actor(request)
        )

        return ok({"kind": kind, "settings": values.builtins(settings)})

    async def _routes(self, request: web.Request) -> web.Response:
        return ok({"route": await self._backend.routes()})

    async def _test_route(self, request: web.Request) -> web.Response:
        asked = values.decode(await _body(request), RouteTestRequest, "")
        routes = await self._backend.test_route(asked.labels)
        # Each channel once, in the order the routes would notify them.
        channels = list(dict.fromkeys(c for r in routes for c in r["channels"]))

        return ok({"routes": routes, "channels": channels})

    async def _groups(self, request: web.Request) -> web.Response:
        return ok({"groups": await self._backend.groups()})

    async def _status(self, request: web.Request) -> web.Response:
        status = await self._backend.status()
        uptime = max(0.0, self._clock.time() - status.started_at)

        return ok(
            {"version": __version__, "uptime_s": uptime, **values.builtins(status)}
        )


def _limit(text: str | None) -> int:
    if text is None:
        return DEFAULT_LIMIT
    if not (text.isascii() and text.isdigit()) or not 1 <= int(text) <= MAX_LIMIT:
        raise values.RequestError(f"limit: expected a number from 1 to {MAX_LIMIT}")

    return int(text)


def _settings_kind(request: web.Request):
    kind = request.match_info["kind"]
    if kind not in SETTINGS_TYPES:
        known = ", ".join(SETTINGS_TYPES)
        raise NotFoundError(f"unknown settings {kind!r}; known: {known}")

    return kind
