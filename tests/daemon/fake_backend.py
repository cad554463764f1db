"""An in-memory backend of the API, and the API served over it on a temp socket."""

from __future__ import annotations

import re
from collections.abc import Mapping

import msgspec

from tocsin.channels.health import IntegrationHealth
from tocsin.clock import ManualClock
from tocsin.daemon import api
from tocsin.daemon.backend import (
    AlertDetail,
    DigestSettings,
    EscalationStep,
    GroupingSettings,
    IntegrationEntry,
    IntegrationTest,
    RuleEntry,
    Status,
)
from tocsin.daemon.reload import ReloadOutcome
from tocsin.errors import (
    ConflictError,
    InvalidValueError,
    LifecycleError,
    NotFoundError,
    UnknownAlertError,
    UnknownSilenceError,
)
from tocsin.schema import DedupConfig, LogChannelConfig, RuleConfig
from tocsin.state.audit import AuditEntry, AuditPage, AuditQuery
from tocsin.state.models import Alert, AlertSpec, Silence, Transition
from tocsin.state.outbox import DeadLetter

NOW = 1_750_000_000.0
TOKEN = "s3cret-token-for-tests"
#: The manual moves the lifecycle allows.
MOVES = {
    "triggered": ("acknowledged", "escalated"),
    "acknowledged": ("investigating", "escalated"),
    "escalated": ("acknowledged", "investigating", "resolved"),
    "investigating": ("resolved",),
    "resolved": ("closed",),
    "closed": (),
}
_MATCHER = re.compile(r'^[A-Za-z_][A-Za-z0-9_]*(=|!=|=~|!~)"[^"]*"$')


def spec(rule: str = "drift", **labels: str) -> AlertSpec:
    return AlertSpec(
        rule=rule,
        series=",".join(f"{k}={v}" for k, v in sorted(labels.items())),
        labels=labels,
        severity="high",
        metric="model.drift",
        aggregation="avg",
        window=300.0,
        op=">",
        threshold=0.2,
        value=0.31,
        samples=12,
        started_at=NOW - 30,
        fired_at=NOW,
        reason="avg 0.31 > 0.2 for 30s",
        summary=f"{rule} on {labels}",
    )


def dead_letter(id_: int, channel: str, reason: str, *, dead_at: float) -> DeadLetter:
    return DeadLetter(
        id=id_,
        key=f"tocsin-uid-{id_}-{id_}-{channel}",
        channel=channel,
        event="trigger",
        alert_uid=f"uid-{id_}",
        rule="drift",
        series="model=fraud-a",
        attempts=0 if reason == "expired" else 15,
        last_status=None if reason == "expired" else 503,
        last_error=None if reason == "expired" else f"channel {channel}: HTTP 503",
        created_at=NOW - 3600,
        dead_at=dead_at,
        reason=reason,
    )


#: The health of an integration that has delivered without a failure.
HEALTHY = IntegrationHealth(
    status="healthy",
    detail="",
    last_success_at=NOW - 30,
    last_error_at=None,
    last_error_reason=None,
    last_error_status=None,
    failures_24h=0,
    dead_letters_24h=0,
    latency_p50_ms=12.0,
    latency_p95_ms=40.0,
    backlog=0,
    oldest_pending_s=None,
)


class FakeBackend:
    """Keeps alerts, silences, rules, channels and settings in dicts."""

    def __init__(self, clock: ManualClock) -> None:
        self.clock = clock
        self.alerts: dict[int, Alert] = {}
        self.history: dict[int, list[Transition]] = {}
        self.silences: dict[str, Silence] = {}
        self.rules = [
            RuleEntry(
                rule=RuleConfig(name="latency", metric="model.latency", threshold=1),
                source="config",
            )
        ]
        self.channels = [
            IntegrationEntry(channel=LogChannelConfig(name="log"), source="config")
        ]
        self.settings: dict[str, object] = {
            "grouping": GroupingSettings(),
            "dedup": DedupConfig(),
            "digest": DigestSettings(),
        }
        self.moves: list[tuple[str, str, str, str]] = []
        #: What a test of each integration gives; a success when not listed.
        self.test_results: dict[str, IntegrationTest] = {}
        self.tested: list[str] = []
        #: Each integration's health; healthy when not listed.
        self.healths: dict[str, IntegrationHealth] = {}
        self.letters = [
            dead_letter(2, "hook", "server_error", dead_at=NOW - 10),
            dead_letter(1, "log", "expired", dead_at=NOW - 60),
        ]
        #: (method, actor) of each change whose actor the API passes.
        self.actors: list[tuple[str, str]] = []
        #: Every audit query asked, with the alert reference it named.
        self.audit_queries: list[tuple[AuditQuery, str | None]] = []
        self.fire(spec("drift", model="fraud-a", team="ml"))
        self.fire(spec("latency", model="ranker", team="search"))

    def fire(self, alert_spec: AlertSpec) -> Alert:
        alert_id = len(self.alerts) + 1
        alert = Alert(
            id=alert_id,
            uid=f"uid-{alert_id}",
            state="triggered",
            spec=alert_spec,
            value=0.31,
        )
        self.alerts[alert_id] = alert
        self.history[alert_id] = [self._transition(alert, None, "triggered", "engine")]
        return alert

    def _transition(self, alert, from_state, to_state, actor, comment="") -> Transition:
        return Transition(
            id=sum(map(len, self.history.values())) + 1,
            alert_id=alert.id,
            from_state=from_state,
            to_state=to_state,
            at=self.clock.time(),
            actor=actor,
            reason="fired" if from_state is None else "by hand",
            comment=comment,
        )

    def _find(self, ref: str) -> Alert:
        for alert in self.alerts.values():
            if ref in (str(alert.id), alert.uid):
                return alert
        raise UnknownAlertError(ref)

    def _detail(self, alert: Alert) -> AlertDetail:
        steps = [
            EscalationStep(step=0, due_at=NOW, channels=["log"], state="reached"),
            EscalationStep(step=1, due_at=NOW + 600, channels=["log"], state="pending"),
        ]
        return AlertDetail(
            alert=alert, history=self.history[alert.id], escalation=steps
        )

    async def list_alerts(self, *, state=None, rule=None, labels=None, limit=100):
        found = [
            alert
            for alert in reversed(self.alerts.values())
            if (state is None or alert.state == state)
            and (rule is None or alert.spec.rule == rule)
            and all(alert.spec.labels.get(k) == v for k, v in (labels or {}).items())
        ]
        return found[:limit]

    async def get_alert(self, ref):
        return self._detail(self._find(ref))

    async def move_alert(self, ref, to_state, *, actor, comment):
        alert = self._find(ref)
        if to_state not in MOVES[alert.state]:
            allowed = tuple(MOVES[alert.state])
            raise LifecycleError(alert.id, alert.state, to_state, allowed)
        self.moves.append((ref, to_state, actor, comment))
        moved = msgspec.structs.replace(alert, state=to_state)
        self.alerts[alert.id] = moved
        self.history[alert.id].append(
            self._transition(alert, alert.state, to_state, actor, comment)
        )
        return self._detail(moved)

    async def list_silences(self, *, state=None):
        now = self.clock.time()
        return [s for s in self.silences.values() if state in (None, s.state(now))]

    async def get_silence(self, silence_id):
        try:
            return self.silences[silence_id]
        except KeyError:
            raise UnknownSilenceError(silence_id) from None

    async def add_silence(self, *, matchers, starts_at, ends_at, created_by, comment):
        for index, matcher in enumerate(matchers):
            if not _MATCHER.match(matcher):
                raise InvalidValueError(
                    f"not a matcher: {matcher!r}", f"matchers[{index}]"
                )
        now = self.clock.time()
        silence = Silence(
            id=f"s{len(self.silences) + 1}",
            matchers=matchers,
            starts_at=starts_at,
            ends_at=ends_at,
            created_by=created_by,
            comment=comment,
            created_at=now,
            updated_at=now,
        )
        self.silences[silence.id] = silence
        return silence

    async def expire_silence(self, silence_id, *, actor="api"):
        self.actors.append(("expire_silence", actor))
        silence = await self.get_silence(silence_id)
        now = self.clock.time()
        ended = msgspec.structs.replace(silence, ends_at=now, updated_at=now)
        self.silences[silence_id] = ended
        return ended

    async def list_rules(self):
        return list(self.rules)

    async def add_rule(self, rule, *, created_by):
        if any(entry.rule.name == rule.name for entry in self.rules):
            raise ConflictError(f"a rule named {rule.name!r} already exists")
        known = {entry.channel.name for entry in self.channels}
        for index, channel in enumerate(rule.channels):
            if channel not in known:
                raise InvalidValueError(
                    f"no channel named {channel!r}", f"rule.channels[{index}]"
                )
        entry = RuleEntry(
            rule=rule, source="api", created_at=self.clock.time(), created_by=created_by
        )
        self.rules.append(entry)
        return entry

    async def delete_rule(self, name, *, actor="api"):
        self.actors.append(("delete_rule", actor))
        self.rules = self._delete(self.rules, name, lambda e: e.rule.name, "rule")

    async def list_integrations(self):
        return [
            msgspec.structs.replace(e, health=self._health(e.channel.name))
            for e in self.channels
        ]

    async def integration_health(self, name):
        if not any(entry.channel.name == name for entry in self.channels):
            raise NotFoundError(f"no integration {name}")
        return self._health(name)

    def _health(self, name):
        return self.healths.get(name, HEALTHY)

    async def add_integration(self, channel, *, created_by):
        if any(entry.channel.name == channel.name for entry in self.channels):
            raise ConflictError(f"a channel named {channel.name!r} already exists")
        entry = IntegrationEntry(
            channel=channel,
            source="api",
            created_at=self.clock.time(),
            created_by=created_by,
        )
        self.channels.append(entry)
        return entry

    async def delete_integration(self, name, *, actor="api"):
        self.actors.append(("delete_integration", actor))
        self.channels = self._delete(
            self.channels, name, lambda e: e.channel.name, "channel"
        )

    def _delete(self, entries, name, name_of, what):
        [entry] = [e for e in entries if name_of(e) == name] or [None]
        if entry is None:
            raise NotFoundError(f"no {what} named {name!r}")
        if entry.source == "config":
            raise ConflictError(
                f"{what} {name!r} comes from the config file: change the file"
            )
        return [e for e in entries if e is not entry]

    async def test_integration(self, name):
        if not any(entry.channel.name == name for entry in self.channels):
            raise NotFoundError(f"no integration {name}")
        self.tested.append(name)
        return self.test_results.get(
            name, IntegrationTest(ok=True, status=202, duration_ms=12.5)
        )

    async def dead_letters(self, *, channel=None, limit=100):
        return [d for d in self.letters if channel in (None, d.channel)][:limit]

    async def get_settings(self, kind):
        return self.settings[kind]

    async def put_settings(self, kind, value, *, actor="api"):
        self.actors.append(("put_settings", actor))
        if kind == "digest":
            known = {entry.channel.name for entry in self.channels}
            for index, channel in enumerate(value.channels):
                if channel not in known:
                    raise InvalidValueError(
                        f"no channel named {channel!r}", f"digest.channels[{index}]"
                    )
        self.settings[kind] = value
        return value

    async def audit(self, query, *, alert=None):
        self.audit_queries.append((query, alert))
        if alert is not None:
            self._find(alert)
        entries = [
            AuditEntry(
                kind="delivery",
                at=NOW - 5,
                cursor=f"{NOW - 5!r}:0:7",
                action="retry",
                alert="uid-1",
                alert_id=1,
                rule="drift",
                channel="hook",
                event="trigger",
                attempt=1,
                status=503,
                reason="server_error",
                error="channel hook: HTTP 503",
                duration_ms=12.5,
            ),
            AuditEntry(
                kind="silence",
                at=NOW - 60,
                cursor=f"{NOW - 60!r}:2:3",
                actor="api:alice",
                action="created",
                subject="s1",
                detail={"matchers": ['team="ml"']},
            ),
        ]
        entries = [e for e in entries if query.kind in (None, e.kind)]
        return AuditPage(entries=entries[: query.limit], next_cursor=None)

    async def routes(self):
        child = {
            "id": "ml",
            "matchers": ['team="ml"'],
            "channels": ["log"],
            "routes": [],
        }
        return {"id": "root", "matchers": [], "channels": [], "routes": [child]}

    async def test_route(self, labels: Mapping[str, str]):
        if labels.get("team") != "ml":
            return [{"id": "root", "channels": [], "group_labels": dict(labels)}]
        return [{"id": "ml", "channels": ["log"], "group_labels": dict(labels)}]

    async def groups(self):
        return [{"key": "ml/{}", "route": "ml", "labels": {}, "alerts": [1]}]

    async def status(self):
        by_state: dict[str, int] = {}
        for alert in self.alerts.values():
            by_state[alert.state] = by_state.get(alert.state, 0) + 1
        return Status(
            config="/etc/tocsin/tocsin.toml",
            started_at=NOW - 90,
            alerts=by_state,
            silences={"active": len(self.silences)},
            rules={"config": 1, "api": len(self.rules) - 1},
            channels={"config": 1, "api": len(self.channels) - 1},
            pending_notifications=3,
        )


async def _reload(source: str) -> ReloadOutcome:
    return ReloadOutcome(kept=("latency",), config="/etc/tocsin/tocsin.toml")


class Served:
    """The API over a :class:`FakeBackend`, on a Unix socket and on TCP."""

    def __init__(self, tmp_path) -> None:
        self.clock = ManualClock(NOW)
        self.backend = FakeBackend(self.clock)
        self.socket = str(tmp_path / "api.sock")
        self.control = api.ControlApi(
            _reload,
            lambda: True,
            backend=self.backend,
            token=TOKEN,
            clock=self.clock,
        )

    async def start(self) -> None:
        await self.control.start(api.bind(self.socket), api.bind_tcp("127.0.0.1:0"))
        self.url = f"http://{self.control.tcp_address}"

    async def stop(self) -> None:
        await self.control.stop()
